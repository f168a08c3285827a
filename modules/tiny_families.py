"""Tiny random-weight pipelines of the transformer families (FLUX.1, Stable Diffusion 3.5), built offline.

Sizes follow diffusers' own tests (tests/pipelines/flux, tests/pipelines/stable_diffusion_3): one or two
transformer blocks of width 32, 2-layer CLIP encoders of width 32, a 2-layer T5 encoder of width 32, a
one-block VAE. The CLIP tokenizer is the real one kept in configs/; T5 needs a sentencepiece-style model, which
``train_t5_tokenizer`` trains here with the ``tokenizers`` library (a Unigram model of a few dozen pieces).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    IFPipeline,
    IFSuperResolutionPipeline,
    KandinskyV22CombinedPipeline,
    KandinskyV22InpaintPipeline,
    PriorTransformer,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionUpscalePipeline,
    UnCLIPScheduler,
    UNet2DConditionModel,
    VQModel,
)
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from modules.models.families import ModelFamily

TINY_WIDTH = 32
T5_VOCAB = 64
METASPACE = "\u2581"  # sentencepiece's word marker
SD3_CLIP_G_WIDTH = 48
SD3_T5_WIDTH = 96
TRAINING_TEXT = (
    "a photo of a cat sitting on a red chair",
    "portrait of a woman, detailed, sharp focus, studio light",
    "a mountain landscape at sunset with a lake and trees",
    "a blue car on the road in the rain",
)


def train_t5_tokenizer(vocab_size: int = T5_VOCAB) -> T5Tokenizer:
    """A T5 tokenizer (Unigram with Metaspace pre-tokenizer, as T5's sentencepiece model) over a fixed vocabulary
    made from a few sentences: pad 0, eos 1, unk 2, as T5's own. The vocabulary is built, not trained: the
    ``tokenizers`` Unigram trainer orders equal pieces differently from run to run, which made two tiny pipelines
    built alike tokenize differently."""
    tokenizer = Tokenizer(models.Unigram(t5_vocabulary(vocab_size), unk_id=2, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    return T5Tokenizer(tokenizer_object=tokenizer, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0)


def t5_vocabulary(vocab_size: int) -> list[tuple[str, float]]:
    """The special pieces, every character of the text (and the word marker), then whole words by frequency
    (ties by spelling); a word scores higher than its letters, so known words stay one piece."""
    special = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    text = " ".join(TRAINING_TEXT)
    characters = sorted({*text.replace(" ", ""), METASPACE})
    words = Counter(f"{METASPACE}{word}" for word in text.split())
    ranked = sorted(words, key=lambda word: (-words[word], word))
    pieces = special + [(character, -10.0) for character in characters]
    pieces += [(word, -1.0 - index / 100) for index, word in enumerate(ranked)]
    return pieces[:vocab_size]


def tiny_clip_config(width: int = TINY_WIDTH) -> CLIPTextConfig:
    return CLIPTextConfig(
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_size=width,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=49408,
        hidden_act="gelu",
        projection_dim=width,
    )


def tiny_t5(width: int = TINY_WIDTH) -> T5EncoderModel:
    config = T5Config(
        vocab_size=T5_VOCAB,
        d_model=width,
        d_ff=37,
        d_kv=8,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config)


def tiny_flow_vae(latent_channels: int, scale: float, shift: float, blocks: int) -> AutoencoderKL:
    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,) * blocks,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=shift,
        scaling_factor=scale,
    )


def clip_tokenizer(configs_dir: Path) -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(configs_dir / "sd15" / "tokenizer", local_files_only=True)


def build_tiny_flux(configs_dir: Path, model_family: ModelFamily, seed: int = 0) -> DiffusionPipeline:
    """FLUX.1: a 1 + 1 block transformer over 4 packed channels (a 1-channel latent in 2x2 patches), with
    the distilled-guidance embedding of FLUX.1 dev."""
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TINY_WIDTH,
        pooled_projection_dim=TINY_WIDTH,
        guidance_embeds=True,
        axes_dims_rope=[4, 4, 8],
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False),
        vae=tiny_flow_vae(1, model_family.vae_scale, model_family.vae_shift, blocks=2),
        text_encoder=CLIPTextModel(tiny_clip_config()),
        tokenizer=clip_tokenizer(configs_dir),
        text_encoder_2=tiny_t5(),
        tokenizer_2=train_t5_tokenizer(),
        transformer=transformer,
    )


def build_tiny_sd3(configs_dir: Path, model_family: ModelFamily, seed: int = 0) -> DiffusionPipeline:
    """Stable Diffusion 3.5: a one-block MMDiT, CLIP-L (width 32) and OpenCLIP-G (width 48) with projections, and
    T5 (width 96). The widths differ as the real ones do (768 / 1280 / 4096): diffusers' single-file loader tells
    the encoders apart by width, and SD 3.5 pads the joined CLIP states (32 + 48) to T5's width. CLIP-L's
    projection is the identity, as SD 3.5 files imply (diffusers sets it so when loading one)."""
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=16,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=TINY_WIDTH,
        joint_attention_dim=SD3_T5_WIDTH,
        pooled_projection_dim=TINY_WIDTH + SD3_CLIP_G_WIDTH,
        out_channels=16,
    )
    clip_l = CLIPTextModelWithProjection(tiny_clip_config())
    with torch.no_grad():
        clip_l.text_projection.weight.copy_(torch.eye(TINY_WIDTH))
    return StableDiffusion3Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_flow_vae(16, model_family.vae_scale, model_family.vae_shift, blocks=2),
        text_encoder=clip_l,
        tokenizer=clip_tokenizer(configs_dir),
        text_encoder_2=CLIPTextModelWithProjection(tiny_clip_config(SD3_CLIP_G_WIDTH)),
        tokenizer_2=clip_tokenizer(configs_dir),
        text_encoder_3=tiny_t5(SD3_T5_WIDTH),
        tokenizer_3=train_t5_tokenizer(),
        transformer=transformer,
    )


def build_tiny_kandinsky(configs_dir: Path, model_family: ModelFamily, seed: int = 0) -> DiffusionPipeline:
    """Kandinsky 2.2 prior + decoder in one combined pipeline (diffusers' test sizes: a one-layer prior of width
    32, 5-layer CLIP text and vision encoders, a (32, 64) decoder UNet conditioned on the image embedding, and
    a two-block MoVQ)."""
    torch.manual_seed(seed)
    text_config = CLIPTextConfig(
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_size=TINY_WIDTH,
        projection_dim=TINY_WIDTH,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=49408,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=TINY_WIDTH,
        image_size=224,
        projection_dim=TINY_WIDTH,
        intermediate_size=37,
        num_attention_heads=4,
        num_channels=3,
        num_hidden_layers=2,
        patch_size=14,
    )
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=TINY_WIDTH, num_layers=1)
    with torch.no_grad():
        prior.clip_std.fill_(1.0)  # diffusers' test: a unit std, so the un-normalised embedding stays finite
    unet = tiny_kandinsky_unet(in_channels=4)
    movq = tiny_movq()
    return KandinskyV22CombinedPipeline(
        unet=unet,
        scheduler=kandinsky_scheduler(),
        movq=movq,
        prior_prior=prior,
        prior_image_encoder=CLIPVisionModelWithProjection(vision_config),
        prior_text_encoder=CLIPTextModelWithProjection(text_config),
        prior_tokenizer=clip_tokenizer(configs_dir),
        prior_scheduler=UnCLIPScheduler(
            variance_type="fixed_small_log",
            prediction_type="sample",
            num_train_timesteps=1000,
            clip_sample=True,
            clip_sample_range=10.0,
        ),
        prior_image_processor=CLIPImageProcessor(crop_size=224, size=224, resample=3),
    )


def build_tiny_kandinsky_inpaint(configs_dir: Path, model_family: ModelFamily, seed: int = 0) -> DiffusionPipeline:
    """Kandinsky 2.2's inpainting decoder folder (the hub's kandinsky-2-2-decoder-inpaint layout): a 9-channel
    decoder UNet (latents, masked image latents, mask), its scheduler and MoVQ; the prior comes from the checkpoint."""
    torch.manual_seed(seed + 2)
    return KandinskyV22InpaintPipeline(
        unet=tiny_kandinsky_unet(in_channels=9), scheduler=kandinsky_scheduler(), movq=tiny_movq()
    )


def kandinsky_scheduler() -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        prediction_type="epsilon",
        variance_type="learned_range",
    )


def tiny_kandinsky_unet(in_channels: int) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        in_channels=in_channels,
        out_channels=8,
        addition_embed_type="image",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(32, 64),
        layers_per_block=1,
        encoder_hid_dim=TINY_WIDTH,
        encoder_hid_dim_type="image_proj",
        cross_attention_dim=100,
        attention_head_dim=4,
        resnet_time_scale_shift="scale_shift",
        class_embed_type=None,
    )


def tiny_movq() -> VQModel:
    return VQModel(
        block_out_channels=[32, 64],
        down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
        in_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        norm_type="spatial",
        num_vq_embeddings=12,
        out_channels=3,
        up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
        vq_embed_dim=4,
    )


def tiny_if_unet(stage: int) -> UNet2DConditionModel:
    """DeepFloyd IF UNets at diffusers' test sizes: stage I reads 3 pixel channels, stage II 6 (the noisy image
    and the upscaled stage I image) and is conditioned on the noise level (class embedding)."""
    options: dict = {"in_channels": 3, "layers_per_block": 1}
    if stage == 2:
        options = {
            "in_channels": 6,
            "layers_per_block": [1, 2],
            "class_embed_type": "timestep",
            "mid_block_scale_factor": 1.414,
            "time_embedding_act_fn": "gelu",
            "time_embedding_dim": 32,
        }
    return UNet2DConditionModel(
        sample_size=32,
        block_out_channels=[32, 64],
        down_block_types=["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"],
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"],
        out_channels=6,
        cross_attention_dim=TINY_WIDTH,
        encoder_hid_dim=TINY_WIDTH,
        attention_head_dim=8,
        addition_embed_type="text",
        addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift",
        act_fn="gelu",
        **options,
    )


def if_scheduler(thresholding: bool = True) -> DDPMScheduler:
    options = (
        {"thresholding": True, "dynamic_thresholding_ratio": 0.95, "sample_max_value": 1.0} if thresholding else {}
    )
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        beta_start=0.0001,
        beta_end=0.02,
        prediction_type="epsilon",
        variance_type="learned_range",
        **options,
    )


def build_tiny_if(configs_dir: Path, model_family: ModelFamily, seed: int = 0) -> DiffusionPipeline:
    """DeepFloyd IF stage I (T5 + a pixel-space UNet); ``build_tiny_if_stage2`` makes its stage II."""
    torch.manual_seed(seed)
    return IFPipeline(
        tokenizer=train_t5_tokenizer(),
        text_encoder=tiny_t5(),
        unet=tiny_if_unet(1),
        scheduler=if_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )


def build_tiny_if_stage2(configs_dir: Path, model_family: ModelFamily, seed: int = 0) -> DiffusionPipeline:
    torch.manual_seed(seed + 1)
    return IFSuperResolutionPipeline(
        tokenizer=train_t5_tokenizer(),
        text_encoder=tiny_t5(),
        unet=tiny_if_unet(2),
        scheduler=if_scheduler(),
        image_noising_scheduler=if_scheduler(thresholding=False),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )


def build_tiny_if_stage3(configs_dir: Path, model_family: ModelFamily, seed: int = 0) -> DiffusionPipeline:
    """IF stage III, the SD x4 upscaler, at diffusers' test sizes: a 7-channel UNet (4 latent + 3 low-resolution
    image channels, the noise level as class label) and a three-block VAE (x4)."""
    torch.manual_seed(seed + 3)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=7,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TINY_WIDTH,
        attention_head_dim=8,
        use_linear_projection=True,
        only_cross_attention=(True, True, False),
        num_class_embeds=1000,  # the real upscaler's: noise levels up to max_noise_level
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        latent_channels=4,
    )
    return StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=CLIPTextModel(tiny_clip_config()),
        tokenizer=clip_tokenizer(configs_dir),
        unet=unet,
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction"),
        max_noise_level=350,
    )


BUILDERS = {
    "flux": build_tiny_flux,
    "sd3": build_tiny_sd3,
    "kandinsky22": build_tiny_kandinsky,
    "kandinsky22-inpaint": build_tiny_kandinsky_inpaint,
    "deepfloyd-if": build_tiny_if,
    "deepfloyd-if-ii": build_tiny_if_stage2,
    "deepfloyd-if-iii": build_tiny_if_stage3,
}


def build_tiny_family(configs_dir: Path, model_family: ModelFamily, seed: int = 0) -> DiffusionPipeline:
    pipeline = BUILDERS[model_family.key](configs_dir, model_family, seed)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline
