"""Save as: a loaded single file -> diffusers folder -> single file again gives the same image; fp16 halves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

from modules.models.checkpoint_writer import write_single_file
from modules.models.convert import ConvertError, save_as
from modules.models.loader import load_pipeline
from modules.models.registry import describe
from modules.paths import INSTALL_DIR
from modules.tiny_model import build_tiny_pipeline

CONFIGS = INSTALL_DIR / "configs"


def load(path):
    pipeline, _ = load_pipeline(describe(path, path.stem), CONFIGS)
    return pipeline


def image(pipeline) -> np.ndarray:
    generator = torch.Generator().manual_seed(7)
    return pipeline(
        "a red house", num_inference_steps=2, height=64, width=64, generator=generator, output_type="np"
    ).images[0]


def test_single_file_to_folder_and_back_gives_the_same_image(tmp_path):
    original_path = write_single_file(build_tiny_pipeline(seed=11), tmp_path / "original.safetensors")
    original = load(original_path)
    folder = save_as(original, tmp_path / "as-folder")
    assert (folder / "model_index.json").is_file()
    from_folder = load(folder)
    single = save_as(from_folder, tmp_path / "back.safetensors")
    back = load(single)
    expected = image(original)
    assert np.array_equal(image(from_folder), expected)
    assert np.array_equal(image(back), expected)
    assert not list(tmp_path.glob(".*.tmp")), "no temporary folder is left"


def test_fp16_option_writes_half_precision_and_keeps_the_loaded_model(tmp_path):
    pipeline = build_tiny_pipeline(seed=12)
    single = save_as(pipeline, tmp_path / "half.safetensors", fp16=True)
    with safe_open(single, "pt") as handle:
        dtypes = {handle.get_slice(key).get_dtype() for key in handle.keys()}  # noqa: SIM118 - safe_open is not iterable
    assert dtypes == {"F16"}
    folder = save_as(pipeline, tmp_path / "half-folder", fp16=True)
    with safe_open(folder / "unet" / "diffusion_pytorch_model.safetensors", "pt") as handle:
        assert handle.get_slice("conv_in.weight").get_dtype() == "F16"
    assert pipeline.unet.dtype == torch.float32, "the loaded model is unchanged"
    assert load(folder).unet.conv_in.weight.dtype == torch.float32, "loads back in the requested dtype"


def test_an_existing_target_is_refused(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConvertError, match="already exists"):
        save_as(build_tiny_pipeline(), tmp_path / "taken")
