"""SD 3.5 single files in the layout Stability AI and ComfyUI ship, loaded offline with a config folder (FLUX.1
single files: tests/test_flux_single_file.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.backends.diffusers_backend import DiffusersBackend
from modules.devices import MemoryPolicy
from modules.models.detection import ModelArchitecture, detect_architecture, read_key_shapes
from modules.models.hashing import HashCache
from modules.models.manager import ModelManager
from modules.models.registry import CheckpointRegistry
from modules.models.service import ModelService
from modules.options import Options
from modules.paths import DataPaths
from modules.processing.processing import ProcessingContext, process
from tests.helpers import pixels, tiny_request
from tests.sd3_single_file import write_sd3_single_file


@pytest.fixture(scope="module")
def sd3_pipeline():
    from modules.tiny_model import build_tiny_pipeline

    return build_tiny_pipeline(architecture=ModelArchitecture.SD3, seed=5)


def context_over(tmp_path, tiny_configs) -> ProcessingContext:
    paths = DataPaths.create(tmp_path)
    paths.ensure()
    registry = CheckpointRegistry(paths.checkpoint_dirs, HashCache(paths.cache_file))
    manager = ModelManager(registry, MemoryPolicy.cpu(), tiny_configs)
    return ProcessingContext(ModelService(manager), DiffusersBackend(), Options(), paths)


def test_sd3_single_file_loads_every_weight(tmp_path, tiny_configs, sd3_pipeline) -> None:
    context = context_over(tmp_path, tiny_configs)
    write_sd3_single_file(sd3_pipeline, context.paths.checkpoints_dir / "sd35-tiny.safetensors")
    context.models.registry.refresh()
    path = context.paths.checkpoints_dir / "sd35-tiny.safetensors"
    assert detect_architecture(read_key_shapes(path)) is ModelArchitecture.SD3
    loaded = context.models.manager.load("sd35-tiny.safetensors")
    assert loaded.family.key == "sd3" and loaded.architecture is ModelArchitecture.SD3
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        original, restored = getattr(sd3_pipeline, name).state_dict(), getattr(loaded.pipeline, name).state_dict()
        assert original.keys() == restored.keys(), name
        assert all(torch.equal(original[key], restored[key]) for key in original), name
        assert not getattr(loaded.pipeline, name).training, name  # diffusers' single-file T5 comes in train mode


@pytest.mark.slow
def test_sd3_single_file_generates_as_its_diffusers_folder(tmp_path, tiny_configs, sd3_pipeline) -> None:
    context = context_over(tmp_path, tiny_configs)
    checkpoints = context.paths.checkpoints_dir
    write_sd3_single_file(sd3_pipeline, checkpoints / "sd35-tiny.safetensors")
    sd3_pipeline.save_pretrained(checkpoints / "sd35-folder")
    context.models.registry.refresh()
    request = {"sampler_name": "Euler", "steps": 2, "negative_prompt": "blurry", "seed": 3}
    from_file = process(tiny_request(checkpoint="sd35-tiny.safetensors", **request), context).images[0]
    from_folder = process(tiny_request(checkpoint="sd35-folder", **request), context).images[0]
    # the same weights, every model in eval mode (diffusers' single-file T5 comes in train mode: dropout): bit for bit
    assert np.array_equal(pixels(from_file), pixels(from_folder))


def test_sd3_file_without_t5_loads_without_it(tmp_path, tiny_configs, sd3_pipeline) -> None:
    context = context_over(tmp_path, tiny_configs)
    write_sd3_single_file(sd3_pipeline, context.paths.checkpoints_dir / "no-t5.safetensors", with_t5=False)
    context.models.registry.refresh()
    result = process(tiny_request(checkpoint="no-t5.safetensors", sampler_name="Euler", steps=2), context)
    assert result.images[0].size == (64, 64)
    assert context.models.current.pipeline.text_encoder_3 is None


@pytest.mark.slow
@pytest.mark.parametrize("config_name", ["sd35-medium", "sd35-large"])
def test_full_size_sd35_configs_build_and_their_layout_picks_them(config_name: str) -> None:
    """configs/ holds the real sizes: each builds (on the meta device, no memory) and a file of that layout is
    given that folder."""
    import json

    from accelerate import init_empty_weights
    from diffusers import SD3Transformer2DModel

    from modules.models.loader import config_name_for
    from modules.paths import INSTALL_DIR
    from tests.sd3_single_file import transformer_to_original

    folder = INSTALL_DIR / "configs" / config_name
    config = json.loads((folder / "transformer" / "config.json").read_text())
    with init_empty_weights():
        transformer = SD3Transformer2DModel.from_config(config)
    shapes = {
        key: tuple(value.shape)
        for key, value in transformer_to_original(transformer.state_dict(), config["num_layers"]).items()
    }
    assert detect_architecture(shapes) is ModelArchitecture.SD3
    assert config_name_for(ModelArchitecture.SD3, shapes) == config_name
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "StableDiffusion3Pipeline"
