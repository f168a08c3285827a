"""The model manager: switching frees the previous model, a bad file keeps the current one usable."""

from __future__ import annotations

import logging

import pytest
import torch

from modules.devices import MemoryPolicy, MemoryPreset
from modules.models.errors import CheckpointNotFoundError, CorruptCheckpointError, ModelError
from modules.models.manager import Task
from modules.paths import DataPaths
from modules.tiny_model import build_tiny_pipeline, write_diffusers
from tests.helpers import make_manager


@pytest.fixture
def paths(tmp_path):
    data = DataPaths.create(tmp_path)
    data.ensure()
    return data


def test_no_checkpoint_says_where_to_put_one(paths):
    manager = make_manager(paths)
    with pytest.raises(CheckpointNotFoundError, match="Stable-diffusion"):
        manager.get()


def test_switching_replaces_the_model_and_task_pipelines_share_weights(paths):
    write_diffusers(build_tiny_pipeline(seed=1), paths.checkpoints_dir / "one")
    write_diffusers(build_tiny_pipeline(seed=2), paths.checkpoints_dir / "two")
    manager = make_manager(paths)
    first = manager.get("one")
    img2img = first.pipeline_for(Task.IMG2IMG)
    assert img2img.unet is first.pipeline.unet, "from_pipe shares the loaded components"
    assert first.pipeline_for(Task.INPAINT).vae is first.pipeline.vae
    second = manager.get("two")
    assert manager.current is second and second.info.name == "two"
    assert not torch.equal(next(first.pipeline.unet.parameters()), next(second.pipeline.unet.parameters()))
    assert manager.get() is second


def test_a_corrupt_file_gives_a_message_and_keeps_the_current_model(paths, caplog):
    write_diffusers(build_tiny_pipeline(), paths.checkpoints_dir / "good")
    (paths.checkpoints_dir / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    manager = make_manager(paths)
    good = manager.get("good")
    with caplog.at_level(logging.WARNING), pytest.raises(ModelError) as raised:
        manager.load("broken")
    assert "broken.safetensors" in str(raised.value)
    assert isinstance(raised.value, CorruptCheckpointError)
    assert manager.current is good, "the cheap header check fails before the current model is freed"
    assert manager.current.pipeline_for(Task.TXT2IMG) is good.pipeline


def test_memory_presets_change_nothing_on_the_cpu(caplog):
    policy = MemoryPolicy.from_flags(
        use_cpu=["all"],
        device_id=None,
        precision="autocast",
        no_half=False,
        no_half_vae=False,
        medvram=True,
        lowvram=False,
    )
    assert policy.device.type == "cpu" and policy.dtype == torch.float32
    assert policy.preset is MemoryPreset.MEDVRAM
    pipeline = build_tiny_pipeline()
    with caplog.at_level(logging.INFO):
        policy.apply(pipeline)
    assert "changes nothing on the CPU" in caplog.text
    assert pipeline.unet.device.type == "cpu"
    lowvram = MemoryPolicy.from_flags(
        use_cpu=[], device_id=None, precision="full", no_half=False, no_half_vae=True, medvram=False, lowvram=True
    )
    assert lowvram.preset is MemoryPreset.LOWVRAM
    assert lowvram.dtype == torch.float32 and lowvram.vae_dtype == torch.float32


@pytest.mark.slow
def test_switching_sd15_and_sdxl_three_times_gives_the_memory_back(tmp_path) -> None:
    """RSS after three SD 1.5 -> SDXL -> SD 1.5 round trips stays within 10 % of the first SD 1.5 figure."""
    from benchmarks.model_switch_memory import largest_change, measure
    from modules.models.detection import ModelArchitecture

    figures = measure(tmp_path, rounds=3, other=ModelArchitecture.SDXL)
    assert len(figures) == 7
    assert largest_change(figures) < 0.10
