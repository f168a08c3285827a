"""Every model kind of the Stable Diffusion family, as tiny random-weight single files without a sidecar:
detection alone picks the kind, the config folder and the pipeline; SD 2.x epsilon vs v by the UNet probe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import (
    StableDiffusionInpaintPipeline,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)

from modules.devices import MemoryPolicy
from modules.models.checkpoint_writer import write_single_file
from modules.models.detection import ModelArchitecture, detect_layout, read_key_shapes
from modules.models.errors import CheckpointLoadError, UnsupportedModelError
from modules.models.hashing import HashCache
from modules.models.loader import load_pipeline
from modules.models.manager import ModelManager
from modules.models.prediction import CACHE_SECTION, probe_is_v_prediction
from modules.models.registry import CheckpointInfo, CheckpointRegistry
from modules.tiny_model import build_tiny_pipeline

EXPECTED_CLASSES = {
    ModelArchitecture.SD1: StableDiffusionPipeline,
    ModelArchitecture.SD1_INPAINT: StableDiffusionInpaintPipeline,
    ModelArchitecture.SD1_PIX2PIX: StableDiffusionInstructPix2PixPipeline,
    ModelArchitecture.SD2_V: StableDiffusionPipeline,
    ModelArchitecture.SD2_INPAINT: StableDiffusionInpaintPipeline,
    ModelArchitecture.SDXL: StableDiffusionXLPipeline,
    ModelArchitecture.SDXL_INPAINT: StableDiffusionXLInpaintPipeline,
    ModelArchitecture.SDXL_REFINER: StableDiffusionXLImg2ImgPipeline,
}


def single_file(tmp_path: Path, architecture: ModelArchitecture, seed: int = 0) -> Path:
    pipeline = build_tiny_pipeline(architecture=architecture, seed=seed)
    return write_single_file(pipeline, tmp_path / f"{architecture.value}.safetensors", with_config=False)


def info_of(path: Path) -> CheckpointInfo:
    return CheckpointInfo(
        path=path, name=path.stem, filename=path.name, kind="single-file", size_bytes=path.stat().st_size
    )


@pytest.mark.parametrize("architecture", list(EXPECTED_CLASSES))
def test_tiny_single_file_loads_through_detection_alone(tmp_path, tiny_configs, architecture) -> None:
    path = single_file(tmp_path, architecture)
    assert not path.with_suffix(".config").exists()
    assert detect_layout(read_key_shapes(path)) is architecture
    pipeline, detected = load_pipeline(info_of(path), tiny_configs)
    assert detected is architecture
    assert type(pipeline) is EXPECTED_CLASSES[architecture]
    original = build_tiny_pipeline(architecture=architecture).unet.state_dict()
    loaded = pipeline.unet.state_dict()
    assert all(torch.equal(original[key], loaded[key]) for key in original)


def test_refiner_has_only_the_open_clip_encoder(tmp_path, tiny_configs) -> None:
    path = single_file(tmp_path, ModelArchitecture.SDXL_REFINER)
    shapes = read_key_shapes(path)
    assert "conditioner.embedders.0.model.text_projection" in shapes
    assert not any(key.startswith("conditioner.embedders.1.") for key in shapes)
    pipeline, _ = load_pipeline(info_of(path), tiny_configs)
    assert pipeline.text_encoder is None and pipeline.text_encoder_2 is not None
    assert pipeline.config.requires_aesthetics_score is True


def test_size_mismatch_with_the_config_folder_is_refused(tmp_path) -> None:
    """A tiny file against the standard configs/: the width check names both widths."""
    from modules.paths import INSTALL_DIR

    path = single_file(tmp_path, ModelArchitecture.SDXL_REFINER)
    with pytest.raises(UnsupportedModelError, match="SDXL refiner layout with cross-attention width 48"):
        load_pipeline(info_of(path), INSTALL_DIR / "configs")


def test_a_file_missing_weights_is_refused(tmp_path, tiny_configs) -> None:
    from safetensors.torch import load_file, save_file

    path = single_file(tmp_path, ModelArchitecture.SD1)
    tensors = load_file(path)
    del tensors["cond_stage_model.transformer.text_model.final_layer_norm.weight"]
    save_file(tensors, path)
    with pytest.raises(CheckpointLoadError, match="lacks 1 weights of its text_encoder"):
        load_pipeline(info_of(path), tiny_configs)


def sd2_with_answer(v_prediction: bool) -> StableDiffusionPipeline:
    """A tiny SD 2.x whose UNet output is a constant: -3 (a v model's answer to the probe) or 0 (epsilon)."""
    pipeline = build_tiny_pipeline(architecture=ModelArchitecture.SD2_V)
    with torch.no_grad():
        pipeline.unet.conv_out.weight.zero_()
        pipeline.unet.conv_out.bias.fill_(-3.0 if v_prediction else 0.0)
    return pipeline


@pytest.mark.parametrize("v_prediction", [True, False])
def test_probe_tells_v_from_epsilon(v_prediction) -> None:
    assert probe_is_v_prediction(sd2_with_answer(v_prediction).unet) is v_prediction


def test_sd2_prediction_is_probed_once_and_cached_per_hash(tmp_path, tiny_configs) -> None:
    models = tmp_path / "models"
    path = write_single_file(sd2_with_answer(False), models / "sd2-base.safetensors", with_config=False)
    cache_file = tmp_path / "cache.json"
    registry = CheckpointRegistry([models], HashCache(cache_file))
    registry.refresh()
    manager = ModelManager(registry, MemoryPolicy.cpu(), tiny_configs)
    loaded = manager.load(registry.find(path.stem))
    assert loaded.architecture is ModelArchitecture.SD2
    assert loaded.pipeline.scheduler.config.prediction_type == "epsilon"
    assert loaded.scheduler_config["prediction_type"] == "epsilon"
    cache = json.loads(cache_file.read_text())
    assert cache[CACHE_SECTION] == {loaded.sha256: "epsilon"}
    assert loaded.sha256 in json.dumps(cache["hashes"])
    # The cached answer is used as is: flipped by hand, the next load follows it without probing.
    cache[CACHE_SECTION][loaded.sha256] = "v_prediction"
    cache_file.write_text(json.dumps(cache))
    manager.unload()
    again = manager.load(registry.find(path.stem))
    assert again.architecture is ModelArchitecture.SD2_V
    assert again.pipeline.scheduler.config.prediction_type == "v_prediction"


def test_sd2_v_model_keeps_v_prediction(tmp_path, tiny_configs) -> None:
    models = tmp_path / "models"
    write_single_file(sd2_with_answer(True), models / "sd2-768.safetensors", with_config=False)
    registry = CheckpointRegistry([models], HashCache(tmp_path / "cache.json"))
    registry.refresh()
    loaded = ModelManager(registry, MemoryPolicy.cpu(), tiny_configs).load("sd2-768")
    assert loaded.architecture is ModelArchitecture.SD2_V
    assert loaded.scheduler_config["prediction_type"] == "v_prediction"


def test_models_tab_names_sd2_prediction_once_known(tmp_path) -> None:
    from safetensors.torch import save_file

    from modules.models.inventory import describe_architecture

    path = tmp_path / "sd2.safetensors"
    save_file(
        {
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(320, 1024),
            "cond_stage_model.model.token_embedding.weight": torch.zeros(1, 1),
        },
        path,
    )
    info = info_of(path)
    assert describe_architecture(info) == "SD 2.x (epsilon or v: on load)"
    assert describe_architecture(info, "epsilon") == "SD 2.x (epsilon)"
    assert describe_architecture(info, "v_prediction") == "SD 2.x (v-prediction)"
