"""--ckpt-cache: the last N checkpoints stay in RAM; switching back reads nothing from disk; LRU eviction frees."""

from __future__ import annotations

import gc
import shutil
import weakref

import pytest
import torch

from modules.models.checkpoint_writer import write_single_file
from modules.paths import DataPaths
from modules.tiny_model import build_tiny_pipeline, write_diffusers
from tests.helpers import make_manager


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    data = DataPaths.create(tmp_path_factory.mktemp("cache"))
    data.ensure()
    write_single_file(build_tiny_pipeline(seed=1), data.checkpoints_dir / "alpha.safetensors")
    write_diffusers(build_tiny_pipeline(seed=2), data.checkpoints_dir / "beta")
    write_diffusers(build_tiny_pipeline(seed=3), data.checkpoints_dir / "gamma")
    return data


def first_weight(model) -> torch.Tensor:
    return next(model.pipeline.unet.parameters())


def test_switching_back_with_cache_2_reads_nothing_from_disk(paths, tmp_path):
    manager = make_manager(paths, cache_size=2)
    alpha = manager.load("alpha")
    alpha_weight = first_weight(alpha).clone()
    # alpha's file and sidecar leave the folder: a second read from disk would fail
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("alpha.safetensors", "alpha.config"):
        shutil.move(paths.checkpoints_dir / name, moved / name)
    try:
        beta = manager.load("beta")
        assert manager.cached_names() == ["alpha"]
        again = manager.load("alpha")
        assert again is alpha and torch.equal(first_weight(again), alpha_weight)
        assert manager.disk_loads == 2, "alpha and beta were each read once"
        assert manager.load("beta") is beta and manager.disk_loads == 2
    finally:
        for name in ("alpha.safetensors", "alpha.config"):
            shutil.move(moved / name, paths.checkpoints_dir / name)


def test_without_cache_switching_back_reads_again(paths):
    manager = make_manager(paths, cache_size=1)
    first = manager.load("beta")
    manager.load("gamma")
    assert manager.cached_names() == []
    assert manager.load("beta") is not first and manager.disk_loads == 3


def test_least_recently_used_is_evicted_and_its_memory_freed(paths):
    manager = make_manager(paths, cache_size=2)
    beta_unet = weakref.ref(manager.load("beta").pipeline.unet)
    manager.load("gamma")
    manager.load("alpha")  # cache holds gamma only now: beta, the least recently used, is evicted
    assert manager.cached_names() == ["gamma"]
    gc.collect()
    assert beta_unet() is None, "nothing keeps the evicted model's weights alive"
    manager.set_cache_size(1)
    assert manager.cached_names() == [] and manager.current.info.name == "alpha"
