"""Shared fixtures: tiny random-weight models built from configs, no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_TESTDATA = REPO_ROOT.parent / "shared" / "testdata"


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
