"""LoRA / LyCORIS on the tiny model: every format changes the output, removal is exact, math holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modules.networks.lora import NetworkKind, load_network, parse_network
from modules.networks.patcher import NetworkUse, build_module_index, map_network, patched_weights
from modules.tiny_model import build_tiny_pipeline
from tests.helpers import RANK, TE_LINEAR, UNET_CONV, UNET_LINEAR, kohya, kohya_lora, random


def peft_lora() -> dict[str, torch.Tensor]:
    return {
        f"unet.{UNET_LINEAR}.lora_A.weight": random(RANK, 32, seed=10),
        f"unet.{UNET_LINEAR}.lora_B.weight": random(64, RANK, seed=11),
        f"text_encoder.text_model.{TE_LINEAR}.lora_A.weight": random(RANK, 32, seed=12),
        f"text_encoder.text_model.{TE_LINEAR}.lora_B.weight": random(32, RANK, seed=13),
    }


def locon() -> dict[str, torch.Tensor]:
    return {
        f"{kohya(UNET_CONV)}.lora_down.weight": random(RANK, 32, 3, 3, seed=20),
        f"{kohya(UNET_CONV)}.lora_up.weight": random(32, RANK, 1, 1, seed=21),
        f"{kohya(UNET_CONV)}.alpha": torch.tensor(4.0),
    }


def loha() -> dict[str, torch.Tensor]:
    stem = kohya(UNET_LINEAR)
    return {
        f"{stem}.hada_w1_a": random(64, RANK, seed=30),
        f"{stem}.hada_w1_b": random(RANK, 32, seed=31),
        f"{stem}.hada_w2_a": random(64, RANK, seed=32),
        f"{stem}.hada_w2_b": random(RANK, 32, seed=33),
        f"{stem}.alpha": torch.tensor(4.0),
    }


def lokr() -> dict[str, torch.Tensor]:
    stem = kohya(UNET_LINEAR)
    return {
        f"{stem}.lokr_w1": random(8, 4, seed=40),
        f"{stem}.lokr_w2_a": random(8, 2, seed=41),
        f"{stem}.lokr_w2_b": random(2, 8, seed=42),
        f"{stem}.alpha": torch.tensor(2.0),
    }


def full_diff() -> dict[str, torch.Tensor]:
    stem = kohya(UNET_LINEAR)
    return {f"{stem}.diff": random(64, 32, seed=50)}


FORMATS = {"kohya": kohya_lora, "peft": peft_lora, "locon": locon, "loha": loha, "lokr": lokr, "full": full_diff}


@pytest.fixture(scope="module")
def pipeline():
    return build_tiny_pipeline(seed=3)


@pytest.fixture(scope="module")
def index(pipeline):
    return build_module_index(pipeline.unet, [pipeline.text_encoder])


@pytest.fixture(scope="module")
def baseline(pipeline) -> np.ndarray:
    return generate(pipeline)


def generate(pipeline, callback=None) -> np.ndarray:
    return pipeline(
        "a red cat",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(1),
        output_type="np",
        callback_on_step_end=callback,
    ).images[0]


def weights_of(pipeline) -> dict[str, torch.Tensor]:
    tensors = {f"unet.{k}": v.clone() for k, v in pipeline.unet.state_dict().items()}
    tensors.update({f"te.{k}": v.clone() for k, v in pipeline.text_encoder.state_dict().items()})
    return tensors


def write(tmp_path: Path, name: str, tensors: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / f"{name}.safetensors"
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_each_format_maps_fully_and_changes_output(format_name, tmp_path, pipeline, index, baseline):
    network = load_network(write(tmp_path, format_name, FORMATS[format_name]()))
    mapped, unmapped = map_network(network, index)
    assert unmapped == []
    assert mapped
    before = weights_of(pipeline)
    with patched_weights([NetworkUse(format_name, network)], index) as report:
        changed = generate(pipeline)
    assert report.patched_modules == len(mapped)
    assert np.abs(changed - baseline).max() > 1e-3
    after = weights_of(pipeline)
    assert all(torch.equal(before[key], after[key]) for key in before)  # bit-identical restore
    assert np.array_equal(generate(pipeline), baseline)


def test_kinds_detected(tmp_path):
    expected = {"kohya": NetworkKind.LORA, "loha": NetworkKind.LOHA, "lokr": NetworkKind.LOKR, "full": NetworkKind.FULL}
    for name, kind in expected.items():
        assert load_network(write(tmp_path, name, FORMATS[name]())).kinds == {kind}


def test_weight_zero_equals_no_lora(tmp_path, pipeline, index, baseline):
    network = load_network(write(tmp_path, "k", kohya_lora()))
    with patched_weights([NetworkUse("k", network, te_multiplier=0.0, unet_multiplier=0.0)], index) as report:
        assert report.patched_modules == 0
        assert np.array_equal(generate(pipeline), baseline)


def test_te_and_unet_weights_act_separately(tmp_path, pipeline, index):
    network = load_network(write(tmp_path, "k", kohya_lora()))
    te_weight = pipeline.text_encoder.get_submodule(TE_LINEAR).weight
    unet_weight = pipeline.unet.get_submodule(UNET_LINEAR).weight
    te_before, unet_before = te_weight.clone(), unet_weight.clone()
    with patched_weights([NetworkUse("k", network, te_multiplier=0.0, unet_multiplier=1.0)], index) as report:
        assert torch.equal(te_weight, te_before)
        assert not torch.equal(unet_weight, unet_before)
        assert not report.text_encoder_changed


def test_two_loras_add_linearly(tmp_path, pipeline, index):
    first = load_network(write(tmp_path, "a", kohya_lora(seed=0)))
    second = load_network(write(tmp_path, "b", peft_lora()))
    weight = pipeline.unet.get_submodule(UNET_LINEAR).weight
    original = weight.clone()

    def delta(*uses: NetworkUse) -> torch.Tensor:
        with patched_weights(list(uses), index):
            return weight.detach().clone() - original

    delta_a = delta(NetworkUse("a", first))
    delta_b = delta(NetworkUse("b", second))
    combined = delta(NetworkUse("a", first, 0.7, 0.7), NetworkUse("b", second, -1.5, -1.5))
    torch.testing.assert_close(combined, 0.7 * delta_a - 1.5 * delta_b, atol=1e-5, rtol=1e-4)
    # plain LoRA: delta = alpha / rank * up @ down
    tensors = kohya_lora(seed=0)
    stem = kohya(UNET_LINEAR)
    expected = 2.0 / RANK * tensors[f"{stem}.lora_up.weight"] @ tensors[f"{stem}.lora_down.weight"]
    torch.testing.assert_close(delta_a, expected, atol=1e-5, rtol=1e-4)


def test_exception_mid_generation_restores_weights(tmp_path, pipeline, index, baseline):
    network = load_network(write(tmp_path, "k", kohya_lora()))
    before = weights_of(pipeline)

    def explode(*_args):
        raise RuntimeError("boom in step")

    with pytest.raises(RuntimeError, match="boom"), patched_weights([NetworkUse("k", network)], index):
        generate(pipeline, callback=explode)
    after = weights_of(pipeline)
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert np.array_equal(generate(pipeline), baseline)


def test_unknown_and_unmapped_keys_are_reported(tmp_path, index):
    tensors = kohya_lora()
    tensors["lora_unet_no_such_block_to_q.lora_down.weight"] = torch.zeros(RANK, 32)
    tensors["lora_unet_no_such_block_to_q.lora_up.weight"] = torch.zeros(64, RANK)
    tensors["something_else"] = torch.zeros(3)
    tensors[f"{kohya(UNET_CONV)}.lora_down.weight"] = torch.zeros(RANK, 32)  # no up: incomplete
    network = parse_network(tmp_path / "x.safetensors", tensors)
    mapped, unmapped = map_network(network, index)
    reasons = {item.key: item.reason for item in unmapped}
    assert len(mapped) == 2
    assert "no module" in reasons["lora_unet_no_such_block_to_q"]
    assert "unknown key" in reasons["something_else"]
    assert "incomplete" in reasons[f"{kohya(UNET_CONV)}.lora_down.weight"]


def test_wrong_shape_is_reported_not_applied(tmp_path, index):
    stem = kohya(UNET_LINEAR)
    tensors = {f"{stem}.lora_down.weight": torch.zeros(RANK, 48), f"{stem}.lora_up.weight": torch.zeros(64, RANK)}
    mapped, unmapped = map_network(parse_network(tmp_path / "x.safetensors", tensors), index)
    assert mapped == []
    assert "shape" in unmapped[0].reason


def test_ldm_named_kohya_keys_map(index):
    # kohya files trained on A1111 checkpoints name UNet modules in the LDM layout.
    assert index["lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"].name == UNET_LINEAR


def test_real_lora_files_map_every_key_on_sd15(testdata):
    import json

    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    configs = Path(__file__).resolve().parent.parent / "configs" / "sd15"
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(json.loads((configs / "unet" / "config.json").read_text()))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_json_file(configs / "text_encoder" / "config.json"))
    sd15_index = build_module_index(unet, [text_encoder])
    for name in ("sd15-unet-rank4.diffusers.safetensors", "sd15-unet-rank4.kohya.safetensors"):
        network = load_network(testdata / "lora" / name)
        mapped, unmapped = map_network(network, sd15_index)
        assert unmapped == [], name
        assert len(mapped) == 128, name
