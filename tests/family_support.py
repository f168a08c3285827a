"""A processing context over tiny single files of chosen SD-family kinds (detection alone, no sidecar)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from modules.backends.base import Backend
from modules.devices import MemoryPolicy
from modules.models.checkpoint_writer import write_single_file
from modules.models.detection import ModelArchitecture
from modules.models.hashing import HashCache, compute_sha256
from modules.models.manager import ModelManager
from modules.models.prediction import CACHE_SECTION
from modules.models.registry import CheckpointRegistry
from modules.models.service import ModelService
from modules.options import Options
from modules.paths import DataPaths
from modules.processing.processing import ProcessingContext
from modules.tiny_model import build_tiny_pipeline


def family_context(
    root: Path, configs: Path, backend: Backend, kinds: Iterable[ModelArchitecture]
) -> ProcessingContext:
    """One ``<kind>.safetensors`` per kind under ``root``. An SD 2.x kind is written with its prediction answer
    already in cache.json (the probe's answer for a random tiny UNet is arbitrary): "sd2" epsilon, "sd2-v" v."""
    paths = DataPaths.create(root)
    paths.ensure()
    cache = HashCache(paths.cache_file)
    for architecture in kinds:
        # SD 2.x epsilon and v share a config: different weights give them different hashes
        pipeline = build_tiny_pipeline(
            architecture=architecture, seed=1 if architecture is ModelArchitecture.SD2_V else 0
        )
        path = write_single_file(
            pipeline, paths.checkpoints_dir / f"{architecture.value}.safetensors", with_config=False
        )
        if architecture in (ModelArchitecture.SD2, ModelArchitecture.SD2_V):
            answer = "v_prediction" if architecture is ModelArchitecture.SD2_V else "epsilon"
            cache.store_section(CACHE_SECTION, compute_sha256(path), answer)
    registry = CheckpointRegistry(paths.checkpoint_dirs, HashCache(paths.cache_file))
    registry.refresh()
    manager = ModelManager(registry, MemoryPolicy.cpu(), configs)
    return ProcessingContext(models=ModelService(manager), backend=backend, options=Options(), paths=paths)
