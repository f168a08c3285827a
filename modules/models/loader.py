"""Checkpoint on disk -> diffusers pipeline, fully offline.

Single files: the architecture is detected from the key shapes (or a ``<stem>.config/`` sidecar overrides
it) and diffusers' ``from_single_file`` builds the pipeline with the matching config folder from configs/.
A ``.ckpt``/``.pt`` is first opened by safe_load (``torch.load(weights_only=True)``, memory-mapped), which
refuses pickles that would run code; diffusers then reads it again the same weights-only way.
Diffusers folders load with ``from_pretrained(local_files_only=True)``.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

import diffusers
import torch
from diffusers import (
    DiffusionPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)

from modules.models.detection import (
    ModelArchitecture,
    check_context_width,
    detect_architecture,
    detect_layout,
    read_key_shapes,
)
from modules.models.errors import (
    CheckpointLoadError,
    CheckpointNotFoundError,
    UnsupportedModelError,
)
from modules.models.families import PIPELINE_FAMILIES, ModelFamily, family_of_pipeline
from modules.models.flux_single_file import FluxSources, flux_config_name, load_flux_single_file, plan_sources
from modules.models.registry import CheckpointInfo, is_diffusers_folder, sidecar_config_dir

logger = logging.getLogger(__name__)

PIPELINE_CLASSES: MappingProxyType[str, type[DiffusionPipeline]] = MappingProxyType(
    {name: getattr(diffusers, name) for name in PIPELINE_FAMILIES}
)
ARCHITECTURE_PIPELINES: MappingProxyType[ModelArchitecture, type[DiffusionPipeline]] = MappingProxyType(
    {
        ModelArchitecture.SD1: StableDiffusionPipeline,
        ModelArchitecture.SD1_INPAINT: StableDiffusionInpaintPipeline,
        ModelArchitecture.SD1_PIX2PIX: StableDiffusionInstructPix2PixPipeline,
        ModelArchitecture.SD2: StableDiffusionPipeline,
        ModelArchitecture.SD2_V: StableDiffusionPipeline,
        ModelArchitecture.SD2_INPAINT: StableDiffusionInpaintPipeline,
        ModelArchitecture.SDXL: StableDiffusionXLPipeline,
        ModelArchitecture.SDXL_INPAINT: StableDiffusionXLInpaintPipeline,
        ModelArchitecture.SDXL_REFINER: StableDiffusionXLImg2ImgPipeline,
        ModelArchitecture.SD3: diffusers.StableDiffusion3Pipeline,
        ModelArchitecture.FLUX: diffusers.FluxPipeline,
        ModelArchitecture.KANDINSKY22: diffusers.KandinskyV22CombinedPipeline,
        ModelArchitecture.KANDINSKY22_INPAINT: diffusers.KandinskyV22InpaintPipeline,
        ModelArchitecture.DEEPFLOYD_IF: diffusers.IFPipeline,
        ModelArchitecture.DEEPFLOYD_IF_II: diffusers.IFSuperResolutionPipeline,
        ModelArchitecture.DEEPFLOYD_IF_III: diffusers.StableDiffusionUpscalePipeline,
    }
)
# The inpainting class of each text-to-image class, for a diffusers folder whose UNet takes 9 channels.
INPAINT_CLASSES: MappingProxyType[type[DiffusionPipeline], type[DiffusionPipeline]] = MappingProxyType(
    {
        StableDiffusionPipeline: StableDiffusionInpaintPipeline,
        StableDiffusionXLPipeline: StableDiffusionXLInpaintPipeline,
    }
)
INPAINT_CHANNELS = 9
PIX2PIX_CHANNELS = 8
# pickle.UnpicklingError: a pickle-only component (pytorch_model.bin) that torch.load(weights_only=True) refuses
LOAD_FAILURES = (
    OSError,
    ValueError,
    RuntimeError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    pickle.UnpicklingError,
)


def load_pipeline(
    info: CheckpointInfo,
    configs_dir: Path,
    torch_dtype: torch.dtype = torch.float32,
    without_t5: bool = False,
    folders: Sequence[Path] = (),
) -> tuple[DiffusionPipeline, ModelArchitecture | None]:
    """Load a listed checkpoint; the architecture is None for a non-standard model described by a sidecar.
    ``without_t5`` (--no-t5) leaves out the T5 encoder of a family that runs without it (SD 3.5). ``folders``: the
    listed diffusers folders, which supply what a FLUX.1 single file lacks (its VAE, text encoders, T5 tokenizer)."""
    if not info.path.exists():
        raise CheckpointNotFoundError(f"checkpoint {info.path} no longer exists; refresh the checkpoint list")
    if info.kind == "diffusers":
        pipeline, architecture = load_diffusers_folder(info.path, torch_dtype, without_t5)
    else:
        pipeline, architecture = load_single_file(info.path, configs_dir, torch_dtype, folders)
    prepare_pipeline(pipeline)
    logger.info(
        "checkpoint loaded path=%s kind=%s architecture=%s pipeline=%s dtype=%s",
        info.path,
        info.kind,
        architecture.value if architecture else "sidecar",
        type(pipeline).__name__,
        torch_dtype,
    )
    return pipeline, architecture


def load_single_file(
    path: Path, configs_dir: Path, torch_dtype: torch.dtype, folders: Sequence[Path] = ()
) -> tuple[DiffusionPipeline, ModelArchitecture | None]:
    shapes = read_key_shapes(path)  # raises Corrupt/UnsafeCheckpointError before diffusers sees the file
    sidecar = sidecar_config_dir(path)
    if is_flux_file(shapes):
        return load_flux_file(path, shapes, configs_dir, torch_dtype, folders), ModelArchitecture.FLUX
    if is_diffusers_folder(sidecar):
        architecture = detect_or_none(shapes)
        config_dir = sidecar
        pipeline_class = pipeline_class_from_index(sidecar, unet_in_channels(shapes))
        if architecture is ModelArchitecture.SD2_V and sidecar_prediction(sidecar) == "epsilon":
            architecture = ModelArchitecture.SD2
    else:
        architecture, config_dir = detect_single_file(shapes, configs_dir)
        pipeline_class = ARCHITECTURE_PIPELINES[architecture]
    logger.info("loading single file path=%s config=%s pipeline=%s", path, config_dir, pipeline_class.__name__)
    extra = safety_kwargs(pipeline_class)
    extra.update(single_file_t5_kwargs(shapes, config_dir, family_of_pipeline(pipeline_class.__name__)))
    try:
        pipeline = pipeline_class.from_single_file(
            str(path), config=str(config_dir), local_files_only=True, dtype=torch_dtype, **extra
        )
    except LOAD_FAILURES as error:
        raise CheckpointLoadError(f"could not load {path} with config {config_dir.name}: {reason(error)}") from error
    check_all_weights_loaded(pipeline, path)
    return pipeline, architecture


def is_flux_file(shapes: dict[str, tuple[int, ...]]) -> bool:
    try:
        return detect_layout(shapes) is ModelArchitecture.FLUX
    except UnsupportedModelError:
        return False


def flux_sources(
    path: Path, shapes: dict[str, tuple[int, ...]], configs_dir: Path, folders: Sequence[Path]
) -> FluxSources:
    """A FLUX.1 file's config folder (its ``<stem>.config`` sidecar, else configs/flux1-dev or flux1-schnell) and the
    listed folders that supply what it lacks; refuses before anything is loaded."""
    sidecar = sidecar_config_dir(path)
    config_dir = sidecar if is_diffusers_folder(sidecar) else configs_dir / flux_config_name(shapes)
    if not is_diffusers_folder(config_dir):
        raise CheckpointLoadError(f"model config folder {config_dir} is missing; reinstall configs/")
    return plan_sources(path, shapes, config_dir, folders)


def load_flux_file(
    path: Path, shapes: dict[str, tuple[int, ...]], configs_dir: Path, torch_dtype: torch.dtype, folders: Sequence[Path]
) -> DiffusionPipeline:
    sources = flux_sources(path, shapes, configs_dir, folders)
    try:
        pipeline = load_flux_single_file(sources, torch_dtype)
    except LOAD_FAILURES as error:
        config = sources.config_dir.name
        raise CheckpointLoadError(f"could not load {path} with config {config}: {reason(error)}") from error
    check_all_weights_loaded(pipeline, path)
    return pipeline


T5_IN_FILE_KEY = "text_encoders.t5xxl.transformer.shared.weight"


def single_file_t5_kwargs(
    shapes: dict[str, tuple[int, ...]], config_dir: Path, model_family: ModelFamily | None
) -> dict[str, object]:
    """An SD 3.5 file without T5 weights, or a config folder without a T5 tokenizer (configs/ ships none: no
    offline copy of its sentencepiece model), loads without T5, which SD 3.5 can (the log says so)."""
    if model_family is None or not model_family.t5_optional:
        return {}
    has_tokenizer = (config_dir / str(model_family.t5_tokenizer)).is_dir()
    if T5_IN_FILE_KEY in shapes and has_tokenizer:
        return {}
    logger.warning(
        "loading without T5 family=%s t5_weights_in_file=%s t5_tokenizer=%s",
        model_family.key,
        T5_IN_FILE_KEY in shapes,
        has_tokenizer,
    )
    return {str(model_family.t5_encoder): None, str(model_family.t5_tokenizer): None}


def precheck_single_file(
    path: Path, shapes: dict[str, tuple[int, ...]], configs_dir: Path, folders: Sequence[Path]
) -> None:
    """The checks a load would fail on first (architecture, config folder, a FLUX.1 file's missing parts), made
    from the header alone, so that the current model stays loaded when they fail."""
    if is_flux_file(shapes):
        flux_sources(path, shapes, configs_dir, folders)
    elif not sidecar_config_dir(path).is_dir():
        detect_single_file(shapes, configs_dir)


def detect_single_file(shapes: dict[str, tuple[int, ...]], configs_dir: Path) -> tuple[ModelArchitecture, Path]:
    """The architecture from the key layout and its config folder, which must match the model's size: configs/
    holds the standard sizes (tests pass folders of tiny ones)."""
    architecture = detect_layout(shapes)
    config_dir = configs_dir / config_name_for(architecture, shapes)
    if not is_diffusers_folder(config_dir):
        raise CheckpointLoadError(f"model config folder {config_dir} is missing; reinstall configs/")
    if not architecture.family.uses_a1111_prompts:
        return architecture, config_dir
    expected_width = read_json(config_dir / "unet" / "config.json").get("cross_attention_dim")
    check_context_width(shapes, architecture, expected_width)
    return architecture, config_dir


SD3_CONTEXT_KEY = "model.diffusion_model.context_embedder.weight"
SD35_LARGE_CAPTION_WIDTH = 2432  # SD 3.5 Large's caption projection (Medium: 1536)


def config_name_for(architecture: ModelArchitecture, shapes: dict[str, tuple[int, ...]]) -> str:
    """The configs/ folder of a detected architecture; SD 3.5 Large and Medium differ in the transformer's width,
    FLUX.1 dev and schnell in the guidance embedder."""
    if architecture is ModelArchitecture.FLUX:
        return flux_config_name(shapes)
    context = shapes.get(SD3_CONTEXT_KEY)
    if architecture is ModelArchitecture.SD3 and context is not None and context[0] == SD35_LARGE_CAPTION_WIDTH:
        return "sd35-large"
    return architecture.config_name


def sidecar_prediction(folder: Path) -> str | None:
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    return read_json(scheduler_file).get("prediction_type") if scheduler_file.is_file() else None


def check_all_weights_loaded(pipeline: DiffusionPipeline, path: Path) -> None:
    """diffusers leaves a weight on the meta device when the file lacks it or its converter skipped it; such a
    model would fail (or compute garbage) at the first step, so the load fails here instead."""
    for name, component in pipeline.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        missing = [key for key, value in component.state_dict().items() if value.is_meta]
        if missing:
            raise CheckpointLoadError(f"{path} lacks {len(missing)} weights of its {name} (first: {missing[0]})")


def load_diffusers_folder(
    folder: Path, torch_dtype: torch.dtype, without_t5: bool = False
) -> tuple[DiffusionPipeline, ModelArchitecture | None]:
    model_family = folder_family(folder)
    extra = safety_kwargs_for(model_family)
    if without_t5 and model_family.t5_optional:
        extra.update({model_family.t5_encoder: None, model_family.t5_tokenizer: None})
    if model_family.shares_first_stage_text:
        extra.update(text_encoder=None, tokenizer=None)  # IF stage II: stage I's T5 encodes for it
    if model_family.uses_a1111_prompts:
        unet_config = read_json(folder / "unet" / "config.json")
        pipeline_class = pipeline_class_from_index(folder, unet_config.get("in_channels"))
        architecture = architecture_from_unet_config(unet_config, sidecar_prediction(folder))
    else:
        class_name = str(read_json(folder / "model_index.json").get("_class_name"))
        pipeline_class = PIPELINE_CLASSES[class_name]
        architecture = ModelArchitecture(model_family.key)
    logger.info(
        "loading diffusers folder path=%s family=%s pipeline=%s", folder, model_family.key, pipeline_class.__name__
    )
    try:
        pipeline = pipeline_class.from_pretrained(folder, local_files_only=True, dtype=torch_dtype, **extra)
    except LOAD_FAILURES as error:
        raise CheckpointLoadError(f"could not load diffusers folder {folder}: {reason(error)}") from error
    return pipeline, architecture


def folder_class_name(folder: Path) -> str:
    return str(read_json(folder / "model_index.json").get("_class_name"))


def folder_family(folder: Path) -> ModelFamily:
    """The family of a diffusers folder, from the pipeline class its model_index.json names."""
    class_name = str(read_json(folder / "model_index.json").get("_class_name"))
    model_family = family_of_pipeline(class_name)
    if model_family is None:
        raise UnsupportedModelError(f"{folder} is a {class_name}; Easel loads {', '.join(PIPELINE_CLASSES)}")
    return model_family


def safety_kwargs(pipeline_class: type[DiffusionPipeline]) -> dict[str, object]:
    """SD 1.x/2.x pipelines take a safety checker; Easel loads none (A1111 has none either)."""
    return safety_kwargs_for(family_of_pipeline(pipeline_class.__name__))


def safety_kwargs_for(model_family: ModelFamily | None) -> dict[str, object]:
    if model_family is None or not model_family.takes_safety_checker:
        return {}
    return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}


def prepare_pipeline(pipeline: DiffusionPipeline) -> None:
    pipeline.set_progress_bar_config(disable=True)
    # Inference mode for every model: diffusers 0.42.1's single-file T5 loader (create_diffusers_t5_model_from_
    # checkpoint, used for SD 3.5 and FLUX.1 files) leaves T5 in training mode, where its dropout (0.1 in T5-XXL's
    # config) makes every prompt encoding random.
    for component in pipeline.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    if getattr(pipeline, "safety_checker", None) is not None:
        pipeline.safety_checker = None


def detect_or_none(shapes: dict[str, tuple[int, ...]]) -> ModelArchitecture | None:
    """With a sidecar the key layout only informs: a non-standard size is fine."""
    try:
        return detect_architecture(shapes)
    except UnsupportedModelError as error:
        logger.info("sidecar config overrides detection reason=%s", error)
        return None


def unet_in_channels(shapes: dict[str, tuple[int, ...]]) -> int | None:
    shape = shapes.get("model.diffusion_model.input_blocks.0.0.weight")
    return int(shape[1]) if shape else None


def pipeline_class_from_index(folder: Path, in_channels: int | None) -> type[DiffusionPipeline]:
    """The pipeline class named in model_index.json, the inpainting one for a 9-channel UNet."""
    class_name = read_json(folder / "model_index.json").get("_class_name")
    pipeline_class = PIPELINE_CLASSES.get(str(class_name))
    if pipeline_class is None:
        raise UnsupportedModelError(f"{folder} is a {class_name}; Easel loads {', '.join(PIPELINE_CLASSES)}")
    if in_channels == INPAINT_CHANNELS:
        return INPAINT_CLASSES.get(pipeline_class, pipeline_class)
    if in_channels == PIX2PIX_CHANNELS and pipeline_class is StableDiffusionPipeline:
        return StableDiffusionInstructPix2PixPipeline
    return pipeline_class


def architecture_from_unet_config(config: dict, prediction_type: str | None = None) -> ModelArchitecture | None:
    """The standard architecture a diffusers UNet config describes, None for other sizes (an SD 2.x UNet is
    the 768-v model unless the scheduler's ``prediction_type`` says epsilon)."""
    width = config.get("cross_attention_dim")
    channels = config.get("in_channels")
    text_time = config.get("addition_embed_type") == "text_time"
    sd2 = ModelArchitecture.SD2 if prediction_type == "epsilon" else ModelArchitecture.SD2_V
    known = {
        (2048, True, 4): ModelArchitecture.SDXL,
        (2048, True, INPAINT_CHANNELS): ModelArchitecture.SDXL_INPAINT,
        (1280, True, 4): ModelArchitecture.SDXL_REFINER,
        (1024, False, 4): sd2,
        (1024, False, INPAINT_CHANNELS): ModelArchitecture.SD2_INPAINT,
        (768, False, 4): ModelArchitecture.SD1,
        (768, False, INPAINT_CHANNELS): ModelArchitecture.SD1_INPAINT,
        (768, False, PIX2PIX_CHANNELS): ModelArchitecture.SD1_PIX2PIX,
    }
    return known.get((width, text_time, channels))


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise CheckpointLoadError(f"{path} is missing") from error
    except (json.JSONDecodeError, OSError) as error:
        raise CheckpointLoadError(f"{path} is unreadable: {error}") from error
    if not isinstance(data, dict):
        raise CheckpointLoadError(f"{path} is not a JSON object")
    return data


def reason(error: BaseException) -> str:
    """One readable line: the exception type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else 'no details'}"
