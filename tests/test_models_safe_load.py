"""Checkpoints are read without running code; damaged files give clear errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from modules.models.checkpoint_writer import pipeline_to_ldm, write_config_folder
from modules.models.errors import CorruptCheckpointError, ModelError, UnsafeCheckpointError
from modules.models.hashing import HashCache
from modules.models.loader import load_pipeline
from modules.models.registry import CheckpointRegistry, sidecar_config_dir
from modules.models.safe_load import load_state_dict
from modules.paths import INSTALL_DIR

CONFIGS = INSTALL_DIR / "configs"


class CreatesMarker:
    """Unpickling this calls ``open(marker, "w")``: the file appears only if the pickle's code runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def write_malicious_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"state_dict": {"weight": torch.ones(2)}, "payload": CreatesMarker(marker)}, path)


def test_the_payload_really_runs_when_fully_unpickled(tmp_path: Path) -> None:
    """Guards the next test: a full unpickle of the same kind of file does create its marker."""
    marker = tmp_path / "ran-on-full-unpickle"
    write_malicious_checkpoint(tmp_path / "proof.ckpt", marker)
    torch.load(tmp_path / "proof.ckpt", weights_only=False, pickle_module=pickle)
    assert marker.exists()


def test_malicious_pickle_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "evil.ckpt"
    write_malicious_checkpoint(checkpoint, marker)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.ckpt.*refused") as caught:
        load_state_dict(checkpoint)
    assert "GLOBAL" in str(caught.value)  # names what the pickle asked for
    assert not marker.exists()


def test_loader_refuses_malicious_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    write_malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    info = CheckpointRegistry([tmp_path], HashCache(tmp_path / "cache.json")).find("evil")
    with pytest.raises(UnsafeCheckpointError):
        load_pipeline(info, CONFIGS)
    assert not marker.exists()


def test_weights_only_ckpt_with_state_dict_wrapper_loads(tmp_path: Path) -> None:
    tensors = {
        "model.diffusion_model.out.2.bias": torch.arange(4.0),
        "first_stage_model.quant_conv.bias": torch.ones(8),
    }
    torch.save({"state_dict": tensors, "global_step": 470000, "epoch": 3}, tmp_path / "model.ckpt")
    loaded = load_state_dict(tmp_path / "model.ckpt")
    assert loaded.keys() == tensors.keys()
    torch.testing.assert_close(loaded["model.diffusion_model.out.2.bias"], torch.arange(4.0))


def test_tiny_ckpt_loads_as_a_pipeline(tiny_pipeline, tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": pipeline_to_ldm(tiny_pipeline), "global_step": 1}, checkpoint)
    write_config_folder(tiny_pipeline, sidecar_config_dir(checkpoint))
    pipeline, _ = load_pipeline(CheckpointRegistry([tmp_path], HashCache(tmp_path / "c.json")).find("tiny"), CONFIGS)
    original = tiny_pipeline.unet.state_dict()
    for key, value in pipeline.unet.state_dict().items():
        torch.testing.assert_close(value, original[key], rtol=0, atol=0)


@pytest.mark.parametrize("keep", [0.5, 0.001])
def test_truncated_safetensors_is_reported_with_its_path(tmp_path: Path, keep: float) -> None:
    whole = tmp_path / "whole.safetensors"
    save_file({"weight": torch.zeros(64, 64)}, whole)
    data = whole.read_bytes()
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(data[: max(1, int(len(data) * keep))])
    with pytest.raises(CorruptCheckpointError, match=r"broken\.safetensors"):
        load_state_dict(broken)
    info = CheckpointRegistry([tmp_path], HashCache(tmp_path / "cache.json")).find("broken")
    with pytest.raises(CorruptCheckpointError, match=r"broken\.safetensors"):
        load_pipeline(info, CONFIGS)


def test_garbage_ckpt_is_corrupt_not_a_traceback(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"this is not a checkpoint at all" * 50)
    with pytest.raises(CorruptCheckpointError, match=r"garbage\.ckpt"):
        load_state_dict(garbage)


def test_every_model_error_is_a_model_error() -> None:
    assert issubclass(UnsafeCheckpointError, ModelError) and issubclass(CorruptCheckpointError, ModelError)
