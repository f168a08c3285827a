"""FLUX.1 single files -> a ``FluxPipeline``, offline.

Two layouts are shared: ComfyUI's all-in-one checkpoints (``model.diffusion_model.*`` with the VAE under ``vae.`` or
``first_stage_model.`` and CLIP-L / T5-XXL under ``text_encoders.{clip_l,t5xxl}.transformer.``) and transformer-only
files (BFL's ``flux1-dev.safetensors`` and most finetunes). The transformer always goes through Easel's converter
(``flux_keys``: diffusers' one fixes the width); the VAE and the text encoders of a file that has them go through
diffusers' ``FluxPipeline.from_single_file`` with the converted transformer passed in; what the file lacks (and the
T5 tokenizer, of which configs/ has no offline copy) comes from a FLUX.1 diffusers folder in the checkpoints list,
as SD.Next takes them from its base model. The config folder (configs/flux1-dev or flux1-schnell, told apart by the
guidance embedder, or a ``<stem>.config`` sidecar) gives the sizes and the scheduler.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from safetensors import safe_open

from modules.models.errors import CheckpointLoadError, UnsupportedModelError
from modules.models.families import family_of_pipeline
from modules.models.flux_keys import WIDTH_KEY, convert_flux_transformer, has_guidance, transformer_keys
from modules.models.safe_load import read_shapes

logger = logging.getLogger(__name__)

DEV_CONFIG = "flux1-dev"
SCHNELL_CONFIG = "flux1-schnell"
VAE_PREFIXES = ("vae.", "first_stage_model.")
# The keys diffusers' FLUX / SD 3 single-file converters look for (``CHECKPOINT_KEY_NAMES["clip_sd3"]`` and
# ``is_t5_in_single_file``).
CLIP_KEY = "text_encoders.clip_l.transformer.text_model.embeddings.position_embedding.weight"
T5_KEY = "text_encoders.t5xxl.transformer.shared.weight"
COMPONENT_NAMES = {"vae": "VAE", "text_encoder": "CLIP-L text encoder", "text_encoder_2": "T5-XXL text encoder"}
T5_TOKENIZER = "tokenizer_2"
# Pipeline classes whose folders hold the T5-XXL tokenizer FLUX.1 uses, and where: FLUX.1 and SD 3.5 share it.
T5_TOKENIZER_FOLDERS = {"flux": "tokenizer_2", "sd3": "tokenizer_3"}
DOWNLOAD_HINT = (
    "download a FLUX.1 diffusers pipeline (black-forest-labs/FLUX.1-dev or FLUX.1-schnell) in the Models tab"
)


@dataclass(frozen=True)
class FluxSources:
    """Where each part of a FLUX.1 single file's pipeline comes from (decided before anything is loaded)."""

    path: Path
    config_dir: Path
    in_file: tuple[str, ...]  # components whose weights the file holds besides the transformer
    missing: tuple[str, ...]  # components (and their tokenizers) taken from ``base_folder``
    base_folder: Path | None
    t5_tokenizer: Path | None  # a tokenizer folder, when neither the config folder nor base_folder has one


def flux_config_name(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """FLUX.1 dev is guidance-distilled (it has ``guidance_in``); schnell has no guidance embedder."""
    return DEV_CONFIG if has_guidance(shapes) else SCHNELL_CONFIG


def describe_flux_file(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """The Models tab's line: the variant, and where a transformer-only file's other parts come from."""
    variant = "dev" if has_guidance(shapes) else "schnell"
    missing = [COMPONENT_NAMES[name] for name in COMPONENT_NAMES if name not in components_in_file(shapes)]
    if not missing:
        return f"FLUX.1 {variant}"
    if len(missing) == len(COMPONENT_NAMES):
        return f"FLUX.1 {variant} (transformer only: VAE and text encoders from a FLUX.1 diffusers folder)"
    return f"FLUX.1 {variant} ({', '.join(missing)} from a FLUX.1 diffusers folder)"


def components_in_file(shapes: Mapping[str, tuple[int, ...]]) -> tuple[str, ...]:
    present = {
        "vae": any(key.startswith(VAE_PREFIXES) for key in shapes),
        "text_encoder": CLIP_KEY in shapes,
        "text_encoder_2": T5_KEY in shapes,
    }
    return tuple(name for name, found in present.items() if found)


def plan_sources(
    path: Path, shapes: Mapping[str, tuple[int, ...]], config_dir: Path, folders: Sequence[Path]
) -> FluxSources:
    """Which listed folders supply what the file lacks; a clear refusal when none can (nothing is loaded)."""
    if path.suffix.lower() != ".safetensors":
        raise UnsupportedModelError(
            f"{path.name} is a FLUX.1 pickle file: Easel loads FLUX.1 single files from .safetensors only "
            "(the ones Black Forest Labs and ComfyUI share)"
        )
    check_width(path, shapes, config_dir)
    in_file = components_in_file(shapes)
    missing = tuple(name for name in COMPONENT_NAMES if name not in in_file)
    base_folder = next((folder for folder in folders if folder_family_key(folder) == "flux"), None)
    if missing and base_folder is None:
        names = ", ".join(COMPONENT_NAMES[name] for name in missing)
        raise CheckpointLoadError(
            f"{path.name} holds the FLUX.1 transformer without the {names}: Easel takes them from a FLUX.1 "
            f"diffusers folder in the checkpoints list, and none is listed; {DOWNLOAD_HINT}"
        )
    t5_tokenizer = None
    if not missing and not (config_dir / T5_TOKENIZER / "tokenizer_config.json").is_file():
        t5_tokenizer = find_t5_tokenizer(folders)
        if t5_tokenizer is None:
            raise CheckpointLoadError(
                f"{path.name} needs the T5-XXL tokenizer, which {config_dir.name} does not hold (no offline copy "
                f"ships with Easel) and no FLUX.1 or SD 3.5 diffusers folder is listed to take it from; {DOWNLOAD_HINT}"
            )
    return FluxSources(path, config_dir, in_file, missing, base_folder if missing else None, t5_tokenizer)


def config_width(config_dir: Path) -> int:
    """The transformer width a config folder describes (24 heads of 128 in FLUX.1)."""
    config = FluxTransformer2DModel.load_config(config_dir, subfolder="transformer", local_files_only=True)
    return int(config["num_attention_heads"]) * int(config["attention_head_dim"])


def check_width(path: Path, shapes: Mapping[str, tuple[int, ...]], config_dir: Path) -> None:
    """A transformer of another width than its config folder's cannot load (from the header: nothing is read)."""
    width_keys = [key for key, bfl in transformer_keys(shapes).items() if bfl == WIDTH_KEY]
    file_width = int(shapes[width_keys[0]][0]) if width_keys else None
    width = config_width(config_dir)
    if file_width != width:
        raise CheckpointLoadError(
            f"{path.name} is a FLUX.1 transformer of width {file_width}, {config_dir.name} describes width {width}; "
            "a model of non-standard size needs a <name>.config folder beside it"
        )


def folder_family_key(folder: Path) -> str | None:
    """The family of a listed diffusers folder from its model_index.json (None when unreadable or unknown)."""
    class_name = model_index(folder).get("_class_name")
    model_family = family_of_pipeline(str(class_name))
    return model_family.key if model_family else None


def model_index(folder: Path) -> dict:
    try:
        data = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        logger.debug("model index unreadable folder=%s error=%s", folder, error)
        return {}
    return data if isinstance(data, dict) else {}


def find_t5_tokenizer(folders: Sequence[Path]) -> Path | None:
    """The T5-XXL tokenizer folder of the first listed FLUX.1 or SD 3.5 diffusers folder."""
    for folder in folders:
        subfolder = T5_TOKENIZER_FOLDERS.get(folder_family_key(folder) or "")
        if subfolder and (folder / subfolder).is_dir():
            return folder / subfolder
    return None


def load_t5_tokenizer(tokenizer_dir: Path) -> object:
    """The tokenizer class its folder's pipeline names (T5TokenizerFast in FLUX.1 and SD 3.5 folders)."""
    entry = model_index(tokenizer_dir.parent).get(tokenizer_dir.name) or ["transformers", "T5TokenizerFast"]
    tokenizer_class = getattr(importlib.import_module(entry[0]), entry[1])
    return tokenizer_class.from_pretrained(tokenizer_dir, local_files_only=True)


def load_flux_single_file(sources: FluxSources, torch_dtype: torch.dtype) -> FluxPipeline:
    transformer = load_flux_transformer(sources.path, sources.config_dir, torch_dtype)
    donor = load_base_components(sources, torch_dtype)
    logger.info(
        "loading flux single file path=%s config=%s in_file=%s from_folder=%s",
        sources.path,
        sources.config_dir.name,
        ",".join(sources.in_file) or "transformer only",
        sources.base_folder or "none",
    )
    if sources.in_file:
        if sources.t5_tokenizer is not None:
            donor[T5_TOKENIZER] = load_t5_tokenizer(sources.t5_tokenizer)
        return FluxPipeline.from_single_file(
            str(sources.path),
            config=str(sources.config_dir),
            local_files_only=True,
            dtype=torch_dtype,
            transformer=transformer,
            **donor,
        )
    # Transformer only: diffusers would read the whole file again for nothing; the scheduler is the file's variant's
    # (a schnell finetune beside a dev folder keeps schnell's schedule).
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(sources.config_dir, subfolder="scheduler")
    return FluxPipeline(scheduler=scheduler, transformer=transformer, **donor)


def load_base_components(sources: FluxSources, torch_dtype: torch.dtype) -> dict[str, object]:
    """The components the file lacks, with both tokenizers, from the listed FLUX.1 diffusers folder."""
    if sources.base_folder is None:
        return {}
    skipped = {name: None for name in ("transformer", *sources.in_file)}
    base = FluxPipeline.from_pretrained(sources.base_folder, local_files_only=True, dtype=torch_dtype, **skipped)
    wanted = (*sources.missing, "tokenizer", T5_TOKENIZER)
    logger.info("flux components from folder folder=%s components=%s", sources.base_folder, ",".join(wanted))
    return {name: getattr(base, name) for name in wanted}


def load_flux_transformer(path: Path, config_dir: Path, torch_dtype: torch.dtype) -> FluxTransformer2DModel:
    """The file's transformer weights, converted and loaded strictly into the config folder's transformer."""
    config = FluxTransformer2DModel.load_config(config_dir, subfolder="transformer", local_files_only=True)
    check_width(path, read_shapes(path), config_dir)
    width = config_width(config_dir)
    # Copied out of the file's memory map: a tensor left there sits at the file's (8-byte) alignment, and kernels then
    # round differently from the same weights in their own aligned memory (as every other loader gives them).
    with safe_open(str(path), framework="pt") as handle:
        tensors = {
            bfl: handle.get_tensor(key).to(torch_dtype, copy=True)
            for key, bfl in transformer_keys(handle.keys()).items()
        }
    state = convert_flux_transformer(tensors, inner_dim=width)
    with init_empty_weights():
        transformer = FluxTransformer2DModel.from_config(config)
    try:
        transformer.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise CheckpointLoadError(
            f"{path.name} does not match the {config_dir.name} transformer: {' '.join(first[:2])}"
        ) from error
    return transformer.eval()
