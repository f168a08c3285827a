"""Model families: one description per family that the loader, processing, the backends, the UI and the API read.

A family says which diffusers pipeline serves each task, which text encoders it has, its latent space (channels,
VAE scale and shift), how it is guided (classifier-free guidance with a negative prompt, or FLUX.1's distilled
guidance), what of A1111's prompt features apply (weights, CLIP skip, embeddings, LoRA tags), which samplers
and backends run it, and its default size and steps. Code asks the description (``family.takes_negative_prompt``)
instead of branching on the family's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class Guidance(StrEnum):
    CFG = "cfg"  # classifier-free guidance with a negative prompt (CFG scale)
    DISTILLED = "distilled"  # FLUX.1: the guidance scale is an input of the transformer, no negative pass


class PromptStyle(StrEnum):
    A1111 = "a1111"  # Easel's CLIP prompt encoder: weights, BREAK, unlimited length, CLIP skip, embeddings
    PLAIN = "plain"  # the pipeline's own encode_prompt; A1111 weights are removed from the text (see README)


class LoraLoader(StrEnum):
    NONE = "none"  # LoRA tags are noted as not applied
    PATCHER = "patcher"  # Easel's weight patcher (modules/networks/patcher.py): A1111 / kohya / LyCORIS files
    DIFFUSERS = "diffusers"  # the pipeline's load_lora_weights through peft, unloaded after each pass


TASKS = ("txt2img", "img2img", "inpaint")
T5_XXL_ENCODER_BILLIONS = 4.76


@dataclass(frozen=True)
class ModelFamily:
    """What Easel knows about one model family."""

    key: str
    display_name: str
    pipelines: Mapping[str, str]  # task -> diffusers pipeline class name; a missing task is not offered
    denoiser: str  # the pipeline component that denoises: "unet" or "transformer"
    text_encoders: tuple[str, ...]
    latent_channels: int
    vae_scale: float
    vae_shift: float
    guidance: Guidance
    prompt_style: PromptStyle
    default_size: int
    default_steps: int
    default_cfg: float
    samplers: tuple[str, ...] | None = None  # None: every sampler of the backend
    backends: tuple[str, ...] = ("diffusers", "original")
    lora_formats: str = ""  # "" when Easel applies no LoRA to the family
    lora_loader: LoraLoader = LoraLoader.NONE
    is_xl: bool = False  # SDXL's latent space and size conditioning (previews, "FP8 for SDXL", --medvram-sdxl)
    takes_safety_checker: bool = False  # SD 1.x / 2.x pipelines take (and are given no) safety checker
    packed_latents: bool = False  # FLUX.1 packs 2x2 latent patches into a sequence
    t5_encoder: str | None = None  # the component name of the T5 encoder, and of its tokenizer
    t5_tokenizer: str | None = None
    t5_optional: bool = False  # the pipeline runs without T5 (--no-t5 saves its memory)
    # The names under which the pipeline's ``encode_prompt`` results go back into its call (None: a result the
    # call does not take); Easel encodes the prompts itself for these families, so that the text encoders can
    # run on the CPU (--medvram / --lowvram) and a cascade encodes once for every stage. Empty: the pipeline
    # encodes its prompts itself.
    prompt_embedding_names: tuple[str | None, ...] = ()
    # A later stage that takes the first stage's prompt embeddings: its own text encoder is not loaded.
    shares_first_stage_text: bool = False
    own_scheduler: bool = False  # the pipeline keeps its own scheduler (flow matching); else the catalogue's
    latent_output: bool = True  # Easel decodes the latents with the VAE; False: the pipeline returns images
    single_file: bool = False  # single-file checkpoints with a config folder in configs/
    prior_guidance: bool = False  # a prior pipeline turns the prompt into an image embedding (Kandinsky)
    # A cascade (DeepFloyd IF): the pipeline class of the next stage, found among the listed checkpoints and
    # loaded with the first, and how much it enlarges; None for single-stage families.
    next_stage: str | None = None
    next_stage_pipelines: Mapping[str, str] = field(default_factory=dict)  # task -> the next stage's class
    # An optional last stage (IF stage III: the SD x4 upscaler), loaded after the next stage when listed; it
    # enlarges the next stage's images for every task.
    optional_stage: str | None = None
    stage_scale: int = 1
    stage_of: str | None = None  # a later stage of this family key (cannot run alone)
    stage_role: str = "an upscaling stage"  # what a ``stage_of`` model is, for the refusal message
    stage_parent: str = "stage I"  # which model of ``stage_of`` uses it
    # task -> the pipeline class of a decoder folder listed beside the checkpoint that this task needs (Kandinsky
    # 2.2 inpainting: the 9-channel inpainting decoder), loaded on the first job of the task; the task pipeline is
    # the family's class of that task over the checkpoint's components with the decoder's in place.
    task_decoders: Mapping[str, str] = field(default_factory=dict)
    parameters: Mapping[str, float] = field(default_factory=dict)  # component -> billions of parameters (full size)

    @property
    def t5_billions(self) -> float:
        """Billions of parameters of the family's T5 encoder (T5-XXL's encoder: 4.76 B), 0 without one."""
        return T5_XXL_ENCODER_BILLIONS if self.t5_encoder else 0.0

    @property
    def takes_negative_prompt(self) -> bool:
        return self.guidance is Guidance.CFG

    @property
    def takes_clip_skip(self) -> bool:
        return self.prompt_style is PromptStyle.A1111

    @property
    def uses_a1111_prompts(self) -> bool:
        return self.prompt_style is PromptStyle.A1111

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(task for task in TASKS if task in self.pipelines)

    def pipeline_class_name(self, task: str) -> str:
        name = self.pipelines.get(task)
        if name is None and self.stage_of is not None:
            first = family(self.stage_of).display_name
            raise FamilyError(
                f"{self.display_name} is {self.stage_role}: load the {first} {self.stage_parent} model (it uses this)"
            )
        if name is None:
            offered = ", ".join(self.tasks)
            raise FamilyError(f"{self.display_name} cannot run {task} in Easel; it offers {offered}")
        return name

    def check_sampler(self, sampler_name: str) -> None:
        if self.samplers is not None and sampler_name not in self.samplers:
            raise FamilyError(
                f"{self.display_name} runs with the {' / '.join(self.samplers)} sampler only; "
                f"{sampler_name} does not apply: choose {self.samplers[0]}"
            )

    def check_backend(self, backend_name: str) -> None:
        if backend_name not in self.backends:
            raise FamilyError(
                f"{self.display_name} runs on the {' / '.join(self.backends)} backend only, not {backend_name!r}: "
                "set the sampler backend to diffusers"
            )


class FamilyError(ValueError):
    """A request asks a family for something it does not have (the message says what applies instead)."""


SD_PIPELINES = MappingProxyType(
    {
        "txt2img": "StableDiffusionPipeline",
        "img2img": "StableDiffusionImg2ImgPipeline",
        "inpaint": "StableDiffusionInpaintPipeline",
    }
)
SDXL_PIPELINES = MappingProxyType(
    {
        "txt2img": "StableDiffusionXLPipeline",
        "img2img": "StableDiffusionXLImg2ImgPipeline",
        "inpaint": "StableDiffusionXLInpaintPipeline",
    }
)
KOHYA_LORA = "A1111 / kohya LoRA and LyCORIS (LoHa, LoKr, ...) through Easel's patcher"
FLUX_LORA = "diffusers / PEFT, kohya, BFL / ComfyUI and XLabs LoRA files through diffusers' load_lora_weights"
SD3_LORA = "diffusers / PEFT LoRA files (keys transformer.*, text_encoder*.*) through diffusers' load_lora_weights"
IF_LORA = "diffusers / PEFT LoRA files for stage I (UNet and T5) through diffusers' load_lora_weights"

FAMILIES: Mapping[str, ModelFamily] = MappingProxyType(
    {
        family.key: family
        for family in (
            ModelFamily(
                key="sd1",
                single_file=True,
                display_name="SD 1.x",
                pipelines=SD_PIPELINES,
                denoiser="unet",
                text_encoders=("CLIP ViT-L/14",),
                latent_channels=4,
                vae_scale=0.18215,
                vae_shift=0.0,
                guidance=Guidance.CFG,
                prompt_style=PromptStyle.A1111,
                default_size=512,
                default_steps=20,
                default_cfg=7.0,
                lora_formats=KOHYA_LORA,
                lora_loader=LoraLoader.PATCHER,
                takes_safety_checker=True,
                parameters=MappingProxyType({"unet": 0.86, "text encoders": 0.123, "vae": 0.084}),
            ),
            ModelFamily(
                key="sd2",
                single_file=True,
                display_name="SD 2.x",
                pipelines=SD_PIPELINES,
                denoiser="unet",
                text_encoders=("OpenCLIP ViT-H/14",),
                latent_channels=4,
                vae_scale=0.18215,
                vae_shift=0.0,
                guidance=Guidance.CFG,
                prompt_style=PromptStyle.A1111,
                default_size=768,
                default_steps=20,
                default_cfg=7.0,
                lora_formats=KOHYA_LORA,
                lora_loader=LoraLoader.PATCHER,
                takes_safety_checker=True,
                parameters=MappingProxyType({"unet": 0.866, "text encoders": 0.354, "vae": 0.084}),
            ),
            ModelFamily(
                key="sdxl",
                single_file=True,
                is_xl=True,
                display_name="SDXL",
                pipelines=SDXL_PIPELINES,
                denoiser="unet",
                text_encoders=("CLIP ViT-L/14", "OpenCLIP ViT-bigG/14"),
                latent_channels=4,
                vae_scale=0.13025,
                vae_shift=0.0,
                guidance=Guidance.CFG,
                prompt_style=PromptStyle.A1111,
                default_size=1024,
                default_steps=20,
                default_cfg=7.0,
                lora_formats=KOHYA_LORA,
                lora_loader=LoraLoader.PATCHER,
                parameters=MappingProxyType({"unet": 2.567, "text encoders": 0.817, "vae": 0.084}),
            ),
            ModelFamily(
                key="sdxl-refiner",
                single_file=True,
                is_xl=True,
                display_name="SDXL refiner",
                # The refiner's img2img pipeline serves txt2img too (from zero latents at strength 1).
                pipelines=MappingProxyType({**SDXL_PIPELINES, "txt2img": "StableDiffusionXLImg2ImgPipeline"}),
                denoiser="unet",
                text_encoders=("OpenCLIP ViT-bigG/14",),
                latent_channels=4,
                vae_scale=0.13025,
                vae_shift=0.0,
                guidance=Guidance.CFG,
                prompt_style=PromptStyle.A1111,
                default_size=1024,
                default_steps=20,
                default_cfg=7.0,
                lora_formats=KOHYA_LORA,
                lora_loader=LoraLoader.PATCHER,
                parameters=MappingProxyType({"unet": 2.3, "text encoders": 0.695, "vae": 0.084}),
            ),
            ModelFamily(
                key="sd3",
                single_file=True,
                own_scheduler=True,
                display_name="Stable Diffusion 3.5",
                pipelines=MappingProxyType(
                    {
                        "txt2img": "StableDiffusion3Pipeline",
                        "img2img": "StableDiffusion3Img2ImgPipeline",
                        "inpaint": "StableDiffusion3InpaintPipeline",
                    }
                ),
                denoiser="transformer",
                text_encoders=("CLIP ViT-L/14", "OpenCLIP ViT-bigG/14", "T5-XXL (optional)"),
                latent_channels=16,
                vae_scale=1.5305,
                vae_shift=0.0609,
                guidance=Guidance.CFG,
                prompt_style=PromptStyle.PLAIN,
                default_size=1024,
                default_steps=28,
                default_cfg=4.5,
                samplers=("Euler",),
                backends=("diffusers",),
                lora_formats=SD3_LORA,
                lora_loader=LoraLoader.DIFFUSERS,
                t5_encoder="text_encoder_3",
                t5_tokenizer="tokenizer_3",
                t5_optional=True,
                prompt_embedding_names=(
                    "prompt_embeds",
                    "negative_prompt_embeds",
                    "pooled_prompt_embeds",
                    "negative_pooled_prompt_embeds",
                ),
                # SD 3.5 Large; Medium has a 2.5 B transformer.
                parameters=MappingProxyType({"transformer": 8.1, "text encoders": 5.58, "vae": 0.084}),
            ),
            ModelFamily(
                key="flux",
                single_file=True,
                own_scheduler=True,
                display_name="FLUX.1",
                pipelines=MappingProxyType(
                    {
                        "txt2img": "FluxPipeline",
                        "img2img": "FluxImg2ImgPipeline",
                        "inpaint": "FluxInpaintPipeline",
                    }
                ),
                denoiser="transformer",
                text_encoders=("CLIP ViT-L/14", "T5-XXL"),
                latent_channels=16,
                vae_scale=0.3611,
                vae_shift=0.1159,
                guidance=Guidance.DISTILLED,
                prompt_style=PromptStyle.PLAIN,
                default_size=1024,
                default_steps=28,  # dev; schnell is distilled to 4 steps
                default_cfg=3.5,
                samplers=("Euler",),
                backends=("diffusers",),
                lora_formats=FLUX_LORA,
                lora_loader=LoraLoader.DIFFUSERS,
                packed_latents=True,
                t5_encoder="text_encoder_2",
                t5_tokenizer="tokenizer_2",
                prompt_embedding_names=("prompt_embeds", "pooled_prompt_embeds", None),  # None: text_ids
                parameters=MappingProxyType({"transformer": 11.9, "text encoders": 4.88, "vae": 0.084}),
            ),
            ModelFamily(
                key="kandinsky22",
                display_name="Kandinsky 2.2",
                pipelines=MappingProxyType(
                    {
                        "txt2img": "KandinskyV22CombinedPipeline",
                        "img2img": "KandinskyV22Img2ImgCombinedPipeline",
                        "inpaint": "KandinskyV22InpaintCombinedPipeline",
                    }
                ),
                task_decoders=MappingProxyType({"inpaint": "KandinskyV22InpaintPipeline"}),
                denoiser="unet",
                text_encoders=("CLIP ViT-bigG/14 (prior)",),
                latent_channels=4,
                vae_scale=1.0,  # MoVQ latents are not scaled
                vae_shift=0.0,
                guidance=Guidance.CFG,
                prompt_style=PromptStyle.PLAIN,
                default_size=768,
                default_steps=50,
                default_cfg=4.0,
                # diffusers' Kandinsky pipelines never call scale_model_input: only samplers that need no input
                # scaling run correctly, of A1111's names DDIM.
                samplers=("DDIM",),
                backends=("diffusers",),
                latent_output=False,
                prior_guidance=True,
                parameters=MappingProxyType({"unet": 1.22, "prior": 1.0, "text encoders": 1.3, "movq": 0.08}),
            ),
            ModelFamily(
                key="kandinsky22-inpaint",
                display_name="Kandinsky 2.2 inpainting decoder",
                pipelines=MappingProxyType({}),
                denoiser="unet",
                text_encoders=(),
                latent_channels=4,
                vae_scale=1.0,
                vae_shift=0.0,
                guidance=Guidance.CFG,
                prompt_style=PromptStyle.PLAIN,
                default_size=768,
                default_steps=50,
                default_cfg=4.0,
                samplers=("DDIM",),
                backends=("diffusers",),
                latent_output=False,
                stage_of="kandinsky22",
                stage_role="an inpainting decoder",
                stage_parent="(prior and decoder)",
                parameters=MappingProxyType({"unet": 1.22, "movq": 0.08}),
            ),
            ModelFamily(
                key="deepfloyd-if",
                takes_safety_checker=True,
                display_name="DeepFloyd IF",
                pipelines=MappingProxyType(
                    {"txt2img": "IFPipeline", "img2img": "IFImg2ImgPipeline", "inpaint": "IFInpaintingPipeline"}
                ),
                denoiser="unet",
                text_encoders=("T5-XXL",),
                latent_channels=3,  # pixel space: stage I makes 64x64 images, stage II 256x256
                vae_scale=1.0,
                vae_shift=0.0,
                guidance=Guidance.CFG,
                prompt_style=PromptStyle.PLAIN,
                default_size=256,
                default_steps=50,
                default_cfg=7.0,
                # diffusers' IF pipelines never call scale_model_input: DDIM is the A1111 sampler that fits.
                samplers=("DDIM",),
                backends=("diffusers",),
                lora_formats=IF_LORA,
                lora_loader=LoraLoader.DIFFUSERS,
                latent_output=False,
                t5_encoder="text_encoder",
                t5_tokenizer="tokenizer",
                prompt_embedding_names=("prompt_embeds", "negative_prompt_embeds"),
                next_stage="IFSuperResolutionPipeline",
                next_stage_pipelines=MappingProxyType(
                    {
                        "txt2img": "IFSuperResolutionPipeline",
                        "img2img": "IFImg2ImgSuperResolutionPipeline",
                        "inpaint": "IFInpaintingSuperResolutionPipeline",
                    }
                ),
                optional_stage="StableDiffusionUpscalePipeline",
                stage_scale=4,
                parameters=MappingProxyType({"unet I-XL": 4.3, "unet II-L": 1.2, "text encoders": 4.76}),
            ),
            ModelFamily(
                key="deepfloyd-if-ii",
                takes_safety_checker=True,
                display_name="DeepFloyd IF stage II",
                pipelines=MappingProxyType({}),
                denoiser="unet",
                text_encoders=("T5-XXL",),
                latent_channels=3,
                vae_scale=1.0,
                vae_shift=0.0,
                guidance=Guidance.CFG,
                prompt_style=PromptStyle.PLAIN,
                default_size=256,
                default_steps=50,
                default_cfg=4.0,
                samplers=("DDIM",),
                backends=("diffusers",),
                latent_output=False,
                stage_of="deepfloyd-if",
                shares_first_stage_text=True,  # diffusers' IF guide: stage II takes stage I's T5 embeddings
                parameters=MappingProxyType({"unet": 1.2}),
            ),
            ModelFamily(
                key="deepfloyd-if-iii",
                display_name="DeepFloyd IF stage III (SD x4 upscaler)",
                pipelines=MappingProxyType({}),
                denoiser="unet",
                text_encoders=("OpenCLIP ViT-H/14",),
                latent_channels=4,
                vae_scale=0.08333,
                vae_shift=0.0,
                guidance=Guidance.CFG,
                prompt_style=PromptStyle.PLAIN,
                default_size=1024,
                default_steps=50,
                default_cfg=4.0,
                samplers=("DDIM",),
                backends=("diffusers",),
                latent_output=False,
                stage_of="deepfloyd-if",
                parameters=MappingProxyType({"unet": 0.47, "text encoders": 0.354, "vae": 0.084}),
            ),
        )
    }
)

# The txt2img pipeline class named in a diffusers folder's model_index.json -> family (SD 1.x and 2.x share
# their classes: the folder's UNet tells them apart, see the loader).
PIPELINE_FAMILIES: Mapping[str, str] = MappingProxyType(
    {
        "StableDiffusionPipeline": "sd1",
        "StableDiffusionImg2ImgPipeline": "sd1",
        "StableDiffusionInpaintPipeline": "sd1",
        "StableDiffusionInstructPix2PixPipeline": "sd1",
        "StableDiffusionXLPipeline": "sdxl",
        "StableDiffusionXLInpaintPipeline": "sdxl",
        "StableDiffusionXLImg2ImgPipeline": "sdxl",
        "StableDiffusion3Pipeline": "sd3",
        "StableDiffusion3Img2ImgPipeline": "sd3",
        "StableDiffusion3InpaintPipeline": "sd3",
        "FluxPipeline": "flux",
        "FluxImg2ImgPipeline": "flux",
        "FluxInpaintPipeline": "flux",
        "KandinskyV22CombinedPipeline": "kandinsky22",
        "KandinskyV22Img2ImgCombinedPipeline": "kandinsky22",
        "KandinskyV22InpaintCombinedPipeline": "kandinsky22",
        "KandinskyV22InpaintPipeline": "kandinsky22-inpaint",
        "IFPipeline": "deepfloyd-if",
        "IFImg2ImgPipeline": "deepfloyd-if",
        "IFInpaintingPipeline": "deepfloyd-if",
        "IFSuperResolutionPipeline": "deepfloyd-if-ii",
        "StableDiffusionUpscalePipeline": "deepfloyd-if-iii",
    }
)


def family(key: str) -> ModelFamily:
    found = FAMILIES.get(key)
    if found is None:
        raise FamilyError(f"unknown model family {key!r}; known: {', '.join(FAMILIES)}")
    return found


def family_of_pipeline(class_name: str) -> ModelFamily | None:
    """The family of a diffusers pipeline class name, None for a class Easel does not load."""
    key = PIPELINE_FAMILIES.get(class_name)
    return FAMILIES[key] if key else None


def memory_estimate(model_family: ModelFamily, bytes_per_parameter: float = 2.0) -> dict[str, float]:
    """Peak accelerator memory for the weights in GiB, computed from parameter counts (activations excluded):
    everything resident (no flag), --medvram (diffusers' model offload: one component on the GPU at a time, so
    the largest one; a family with T5 keeps its text encoders on the CPU, so the largest other one), and without
    T5 where the family can (--no-t5)."""
    sizes = {name: count * 1e9 * bytes_per_parameter / 2**30 for name, count in model_family.parameters.items()}
    on_device = {name: size for name, size in sizes.items() if not text_on_cpu(model_family, name)}
    estimate = {"resident": sum(sizes.values()), "medvram": max(on_device.values(), default=0.0)}
    if model_family.t5_optional:
        estimate["resident without T5"] = (
            estimate["resident"] - model_family.t5_billions * 1e9 * bytes_per_parameter / 2**30
        )
    return estimate


def text_on_cpu(model_family: ModelFamily, component: str) -> bool:
    """Whether ``component`` (a key of ``parameters``) stays on the CPU under --medvram / --lowvram."""
    return component == "text encoders" and model_family.t5_encoder is not None


def weights_gib(model_family: ModelFamily, bytes_per_parameter: float) -> float:
    """The family's full-size weights in GiB at ``bytes_per_parameter`` (2 for fp16/bf16, 1 for 8-bit)."""
    return sum(model_family.parameters.values()) * 1e9 * bytes_per_parameter / 2**30
