"""A tiny model written as an A1111 single file loads back and draws the same image as its diffusers folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline
from PIL import Image

from modules.models.checkpoint_writer import pipeline_to_ldm, write_single_file
from modules.models.hashing import HashCache
from modules.models.loader import load_pipeline
from modules.models.registry import CheckpointRegistry, sidecar_config_dir
from modules.paths import INSTALL_DIR
from modules.tiny_model import main as tiny_model_main
from modules.tiny_model import write_diffusers

CONFIGS = INSTALL_DIR / "configs"


def generate(pipeline, inpainting: bool) -> np.ndarray:
    arguments = {
        "prompt": "a red apple",
        "num_inference_steps": 2,
        "height": 64,
        "width": 64,
        "generator": torch.Generator().manual_seed(7),
        "output_type": "np",
    }
    if inpainting:
        arguments["image"] = Image.new("RGB", (64, 64), (120, 60, 30))
        arguments["mask_image"] = Image.new("L", (64, 64), 255)
    return pipeline(**arguments).images[0]


def load_both(pipeline, root: Path):
    write_single_file(pipeline, root / "tiny.safetensors")
    write_diffusers(pipeline, root / "tiny-diffusers")
    registry = CheckpointRegistry([root], HashCache(root / "cache.json"))
    single, single_architecture = load_pipeline(registry.find("tiny"), CONFIGS)
    folder, folder_architecture = load_pipeline(registry.find("tiny-diffusers"), CONFIGS)
    return single, folder, single_architecture, folder_architecture


def test_single_file_draws_the_same_image_as_the_diffusers_folder(tiny_pipeline, tmp_path: Path) -> None:
    single, folder, single_architecture, folder_architecture = load_both(tiny_pipeline, tmp_path)
    assert type(single) is StableDiffusionPipeline and type(folder) is StableDiffusionPipeline
    assert single_architecture is None and folder_architecture is None  # tiny sizes are no standard architecture
    assert single.safety_checker is None
    first, second = generate(single, False), generate(folder, False)
    assert first.std() > 0.01  # a real picture, not a blank
    np.testing.assert_array_equal(first, second)  # measured: exactly equal (max abs diff 0.0)


@pytest.mark.slow  # about 10-40 s on the shared 2-core machine
def test_inpainting_single_file_round_trips(tiny_inpaint_pipeline, tmp_path: Path) -> None:
    single, folder, _, _ = load_both(tiny_inpaint_pipeline, tmp_path)
    assert type(single) is StableDiffusionInpaintPipeline and type(folder) is StableDiffusionInpaintPipeline
    assert single.unet.config.in_channels == 9
    np.testing.assert_array_equal(generate(single, True), generate(folder, True))


def test_single_file_weights_equal_the_original(tiny_pipeline, tmp_path: Path) -> None:
    write_single_file(tiny_pipeline, tmp_path / "tiny.safetensors")
    registry = CheckpointRegistry([tmp_path], HashCache(tmp_path / "cache.json"))
    loaded, _ = load_pipeline(registry.find("tiny.safetensors"), CONFIGS)
    for name in ("unet", "vae", "text_encoder"):
        original = getattr(tiny_pipeline, name).state_dict()
        for key, value in getattr(loaded, name).state_dict().items():
            torch.testing.assert_close(value, original[key], rtol=0, atol=0, msg=f"{name}.{key}")


def test_written_file_uses_the_ldm_layout(tiny_pipeline) -> None:
    keys = pipeline_to_ldm(tiny_pipeline).keys()
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys
    assert "first_stage_model.decoder.mid.attn_1.q.weight" in keys
    assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in keys
    assert not any(key.startswith(("unet.", "vae.", "text_encoder.")) for key in keys)


@pytest.mark.parametrize("form", ["single-file", "diffusers"])
def test_tiny_model_command_writes_a_loadable_checkpoint(form: str, tmp_path: Path) -> None:
    out = tmp_path / ("tiny.safetensors" if form == "single-file" else "tiny")
    assert tiny_model_main(["--out", str(out), "--format", form]) == 0
    assert out.exists()
    if form == "single-file":
        assert (sidecar_config_dir(out) / "model_index.json").is_file()
        assert not any(sidecar_config_dir(out).rglob("*.safetensors"))  # configs only, no weights
    info = CheckpointRegistry([tmp_path], HashCache(tmp_path / "cache.json")).find("tiny")
    pipeline, _ = load_pipeline(info, CONFIGS)
    assert tuple(pipeline.unet.config.block_out_channels) == (32, 64)
