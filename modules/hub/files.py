"""Which files of a repository to download, and where a single file goes by its type.

Choosing the files of a diffusers pipeline is Easel's own rule (no library does it for a listing):
safetensors only, the fp16 variant of a component when the repository has one, never the duplicate
.bin/.ckpt/.onnx/.msgpack copies, no safety checker (Easel loads none), no root-level single files.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path, PurePosixPath

from modules.hub.client import RepoFile
from modules.hub.errors import HubError
from modules.paths import DataPaths

WEIGHT_SUFFIXES = frozenset(
    {".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".onnx", ".onnx_data", ".pb", ".h5", ".gguf"}
)
SKIPPED_COMPONENTS = frozenset({"safety_checker"})
SHARD = r"(-\d{5}-of-\d{5})?"
PLAIN_WEIGHTS = re.compile(rf"^(diffusion_pytorch_model|model){SHARD}\.safetensors$")
FP16_WEIGHTS = re.compile(rf"^(diffusion_pytorch_model|model)\.fp16{SHARD}\.safetensors$")
PLAIN_INDEX = re.compile(r"^(diffusion_pytorch_model|model)\.safetensors\.index\.json$")
FP16_INDEX = re.compile(r"^(diffusion_pytorch_model|model)\.safetensors\.index\.fp16\.json$")
INDEX_MARK = ".index."
MODEL_INDEX = "model_index.json"


class FileKind(StrEnum):
    """Where a chosen single file goes (A1111 folders)."""

    CHECKPOINT = "Checkpoint"
    LORA = "LoRA"
    EMBEDDING = "Textual inversion"
    VAE = "VAE"
    UPSCALER = "Upscaler (ESRGAN)"


def destination_dir(paths: DataPaths, kind: FileKind) -> Path:
    folders = {
        FileKind.CHECKPOINT: paths.checkpoints_dir,
        FileKind.LORA: paths.lora_dir,
        FileKind.EMBEDDING: paths.embeddings_dir,
        FileKind.VAE: paths.vae_dir,
        FileKind.UPSCALER: paths.models_dir / "ESRGAN",
    }
    return folders[kind]


def diffusers_cache_dir(paths: DataPaths) -> Path:
    """models/Diffusers: a normal huggingface_hub cache (models--org--name/snapshots/<commit>/...)."""
    return paths.diffusers_dir


def staging_dir(paths: DataPaths) -> Path:
    """Hidden folder where single files are downloaded before an atomic rename into place (never scanned)."""
    return paths.models_dir / ".downloads"


def is_weight(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in WEIGHT_SUFFIXES


def select_pipeline_files(files: Iterable[RepoFile], fp16: bool = True) -> list[RepoFile]:
    """The files of a diffusers pipeline to download; model_index.json comes last (see downloads)."""
    by_component: dict[str, list[RepoFile]] = defaultdict(list)
    chosen: list[RepoFile] = []
    model_index: RepoFile | None = None
    for item in files:
        parts = PurePosixPath(item.path).parts
        if parts == (MODEL_INDEX,):
            model_index = item
        elif len(parts) == 2 and parts[0] not in SKIPPED_COMPONENTS:
            by_component[parts[0]].append(item)
    if model_index is None:
        raise HubError("this repository is not a diffusers pipeline (no model_index.json); download single files")
    for component, items in sorted(by_component.items()):
        chosen.extend(item for item in items if not is_weight(item.path) and INDEX_MARK not in item.path)
        if any(is_weight(item.path) for item in items):
            chosen.extend(select_component_weights(component, items, fp16))
    return [*chosen, model_index]


def select_component_weights(component: str, items: list[RepoFile], fp16: bool) -> list[RepoFile]:
    names = {PurePosixPath(item.path).name: item for item in items}
    fp16_files = [item for name, item in names.items() if FP16_WEIGHTS.match(name) or FP16_INDEX.match(name)]
    plain_files = [item for name, item in names.items() if PLAIN_WEIGHTS.match(name) or PLAIN_INDEX.match(name)]
    has_fp16 = any(FP16_WEIGHTS.match(PurePosixPath(item.path).name) for item in fp16_files)
    has_plain = any(PLAIN_WEIGHTS.match(PurePosixPath(item.path).name) for item in plain_files)
    if fp16 and has_fp16:
        return fp16_files
    if has_plain:
        return plain_files
    if has_fp16:
        return fp16_files
    raise HubError(f"component {component!r} has no .safetensors weights; Easel downloads safetensors only")


def variant_aliases(chosen: Iterable[RepoFile]) -> dict[str, str]:
    """fp16 file -> the plain name diffusers looks for when no ``variant`` is given (shards keep their names)."""
    aliases: dict[str, str] = {}
    for item in chosen:
        path = PurePosixPath(item.path)
        if FP16_WEIGHTS.match(path.name) and "-of-" not in path.name:
            aliases[item.path] = str(path.with_name(path.name.replace(".fp16.", ".")))
        elif FP16_INDEX.match(path.name):
            aliases[item.path] = str(path.with_name(path.name.replace(".index.fp16.json", ".index.json")))
    return aliases


def guess_file_kind(path: str, repo_tags: Iterable[str] = ()) -> FileKind:
    """A default for the type dropdown: from the file name first, then the repository's tags."""
    name = path.lower()
    tags = {tag.lower() for tag in repo_tags}
    if "vae" in name:
        return FileKind.VAE
    if "esrgan" in name or name.endswith(".pth"):
        return FileKind.UPSCALER
    if "lora" in name or "lora" in tags:
        return FileKind.LORA
    if name.endswith((".pt", ".bin")) or "textual_inversion" in tags:
        return FileKind.EMBEDDING
    return FileKind.CHECKPOINT
