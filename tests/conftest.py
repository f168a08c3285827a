"""Shared fixtures: tiny random-weight models built from configs, no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from tests.helpers import SHARED_TESTDATA


@pytest.fixture
def server(tmp_path: Path):
    """webui.py offline with an empty data folder, for the browser tests; yields (url, data folder)."""
    from tests.browser_support import running_webui, webui_environment

    with running_webui(tmp_path, [], webui_environment()) as served:
        yield served


@pytest.fixture(scope="session")
def testdata() -> Path:
    """../shared/testdata, or a skip when this clone has none beside it."""
    if not SHARED_TESTDATA.is_dir():
        pytest.skip(f"../shared/testdata is absent ({SHARED_TESTDATA}); real third-party files unavailable")
    return SHARED_TESTDATA


@pytest.fixture(scope="session")
def tiny_pipeline():
    """The tiny SD 1.x pipeline, built once per session (do not mutate its components)."""
    from modules.tiny_model import build_tiny_pipeline

    return build_tiny_pipeline()


@pytest.fixture(scope="session")
def tiny_inpaint_pipeline():
    from modules.tiny_model import build_tiny_pipeline

    return build_tiny_pipeline(inpainting=True)


def _make_context(data_dir: Path, inpainting: bool):
    from modules.backends.diffusers_backend import DiffusersBackend
    from modules.devices import MemoryPolicy
    from modules.models.hashing import HashCache
    from modules.models.manager import ModelManager
    from modules.models.registry import CheckpointRegistry
    from modules.models.service import ModelService
    from modules.options import Options
    from modules.paths import DataPaths
    from modules.processing.processing import ProcessingContext
    from modules.tiny_model import build_tiny_pipeline, write_diffusers

    paths = DataPaths.create(data_dir)
    paths.ensure()
    write_diffusers(build_tiny_pipeline(inpainting=inpainting), paths.checkpoints_dir / "tiny")
    registry = CheckpointRegistry(paths.checkpoint_dirs, HashCache(paths.cache_file))
    registry.refresh()
    manager = ModelManager(registry, MemoryPolicy.cpu(), paths.configs_dir)
    return ProcessingContext(models=ModelService(manager), backend=DiffusersBackend(), options=Options(), paths=paths)


@pytest.fixture(scope="session")
def context(tmp_path_factory):
    """A processing context over a tiny diffusers-folder checkpoint in a temporary data dir."""
    return _make_context(tmp_path_factory.mktemp("data"), inpainting=False)


@pytest.fixture(scope="session")
def manager(context):
    return context.models.manager


@pytest.fixture(scope="session")
def inpaint_context(tmp_path_factory):
    return _make_context(tmp_path_factory.mktemp("data-inpaint"), inpainting=True)


@pytest.fixture(scope="module")
def hires_context(context, tmp_path_factory):
    """The tiny-model context with a postprocessor over an empty models folder (image upscalers, no face weights)."""
    from modules.postprocess.service import Postprocessor
    from modules.processing.processing import ProcessingContext

    detector = context.paths.configs_dir / "face-detection" / "yunet.onnx"
    postprocessor = Postprocessor(tmp_path_factory.mktemp("models"), context.options, detector)
    return ProcessingContext(
        models=context.models,
        backend=context.backend,
        options=context.options,
        paths=context.paths,
        postprocessor=postprocessor,
    )


@pytest.fixture(scope="session")
def tiny_configs(tmp_path_factory) -> Path:
    """configs/-style folders of every architecture at the tiny sizes (the loader's ``configs_dir`` in tests)."""
    from modules.tiny_model import write_config_folders

    return write_config_folders(tmp_path_factory.mktemp("tiny-configs"))
