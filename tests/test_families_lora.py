"""LoRA on FLUX.1 and SD 3.5 through diffusers' LoRA loaders (peft): tiny LoRA files made here with peft."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from modules.models.detection import ModelArchitecture
from modules.processing.infotext import parse_infotext
from modules.processing.processing import process
from tests.helpers import kohya_lora, pixels, tiny_request

FLOW_REQUEST = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler", "seed": 5}
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def write_lora(architecture: ModelArchitecture, folder: Path, name: str, seed: int) -> Path:
    """A random (non-zero) LoRA on the tiny transformer of ``architecture``, saved in diffusers' format."""
    from modules.tiny_model import build_tiny_pipeline

    pipeline = build_tiny_pipeline(architecture=architecture)
    denoiser = "unet" if architecture is ModelArchitecture.DEEPFLOYD_IF else "transformer"
    torch.manual_seed(seed)
    module = getattr(pipeline, denoiser)
    module.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS, init_lora_weights=False))
    layers = {key: value * 20 for key, value in get_peft_model_state_dict(module).items()}
    type(pipeline).save_lora_weights(folder, **{f"{denoiser}_lora_layers": layers}, weight_name=f"{name}.safetensors")
    return folder / f"{name}.safetensors"


def kohya_flux_lora() -> dict[str, torch.Tensor]:
    """A kohya (sd-scripts) FLUX.1 LoRA on the first double block's image attention output of the tiny transformer."""
    from modules.tiny_model import build_tiny_pipeline

    out, inner = (
        build_tiny_pipeline(architecture=ModelArchitecture.FLUX)
        .transformer.transformer_blocks[0]
        .attn.to_out[0]
        .weight.shape
    )
    generator = torch.Generator().manual_seed(4)
    stem = "lora_unet_double_blocks_0_img_attn_proj"
    return {
        f"{stem}.lora_down.weight": torch.randn(4, inner, generator=generator),
        f"{stem}.lora_up.weight": torch.randn(out, 4, generator=generator),
        f"{stem}.alpha": torch.tensor(4.0),
    }


@pytest.fixture(scope="module")
def lora_context(tmp_path_factory):
    from modules.backends.diffusers_backend import DiffusersBackend
    from modules.models.service import ModelService
    from modules.networks.service import build_networks
    from modules.options import Options
    from modules.paths import DataPaths
    from modules.processing.processing import ProcessingContext
    from modules.tiny_model import build_tiny_pipeline, write_diffusers
    from tests.helpers import make_manager

    paths = DataPaths.create(tmp_path_factory.mktemp("lora-data"))
    paths.ensure()
    for architecture in (ModelArchitecture.FLUX, ModelArchitecture.SD3, ModelArchitecture.DEEPFLOYD_IF):
        write_diffusers(build_tiny_pipeline(architecture=architecture), paths.checkpoints_dir / architecture.value)
        write_lora(architecture, paths.lora_dir, f"{architecture.value}-style", seed=1)
    save_file(kohya_flux_lora(), paths.lora_dir / "flux-kohya.safetensors")
    save_file(kohya_lora(), paths.lora_dir / "sd1-kohya.safetensors")  # an SD 1.x LoRA: nothing of it fits FLUX.1
    options = Options()
    manager = make_manager(paths)
    networks = build_networks(paths, argparse.Namespace(), manager.registry.hash_cache, lambda: options.sd_vae)
    return ProcessingContext(
        models=ModelService(manager, networks), backend=DiffusersBackend(), options=options, paths=paths
    )


def family_request(checkpoint: str, **fields):
    if checkpoint == "deepfloyd-if":  # stage I alone (no stage II folder is listed here)
        return tiny_request(**{**FLOW_REQUEST, "checkpoint": checkpoint, "sampler_name": "DDIM", **fields})
    negative = {} if checkpoint == "flux" else {"negative_prompt": "blurry"}
    cfg = {"cfg_scale": 3.5} if checkpoint == "flux" else {}
    return tiny_request(
        **{**FLOW_REQUEST, "checkpoint": checkpoint, "negative_prompt": "", **cfg, **negative, **fields}
    )


@pytest.mark.parametrize(
    "checkpoint",
    ["flux", pytest.param("sd3", marks=pytest.mark.slow), pytest.param("deepfloyd-if", marks=pytest.mark.slow)],
)
def test_lora_changes_the_image_and_is_unloaded_after_the_pass(lora_context, checkpoint) -> None:
    plain = process(family_request(checkpoint, prompt="a fox"), lora_context)
    tagged = process(family_request(checkpoint, prompt=f"a fox <lora:{checkpoint}-style:1>"), lora_context)
    zero = process(family_request(checkpoint, prompt=f"a fox <lora:{checkpoint}-style:0>"), lora_context)
    after = process(family_request(checkpoint, prompt="a fox"), lora_context)
    assert np.abs(pixels(tagged.images[0]) - pixels(plain.images[0])).max() > 8
    assert np.array_equal(pixels(zero.images[0]), pixels(plain.images[0]))
    assert np.array_equal(pixels(after.images[0]), pixels(plain.images[0]))
    parsed = parse_infotext(tagged.infotexts[0])
    assert parsed["Lora hashes"].startswith(f"{checkpoint}-style: ")
    assert "Lora hashes" not in parse_infotext(plain.infotexts[0])
    assert not any("not applied" in note for note in tagged.notes)
    assert not any(lora_context.models.current.pipeline.get_list_adapters().values())


def test_flux_lora_weight_scales_the_change_and_missing_files_are_noted(lora_context) -> None:
    plain = pixels(process(family_request("flux", prompt="a fox"), lora_context).images[0])
    half = pixels(process(family_request("flux", prompt="a fox <lora:flux-style:0.5>"), lora_context).images[0])
    full = pixels(process(family_request("flux", prompt="a fox <lora:flux-style:1>"), lora_context).images[0])
    assert 0 < np.abs(half - plain).mean() < np.abs(full - plain).mean()
    missing = process(family_request("flux", prompt="a fox <lora:nothing:1> <hypernet:x:1>"), lora_context)
    notes = " ".join(missing.notes)
    assert "LoRA not found: nothing" in notes and "<hypernet:x>" in notes


def test_a_lora_of_another_family_is_refused_with_a_note_and_changes_nothing(lora_context) -> None:
    plain = process(family_request("flux", prompt="a fox"), lora_context)
    wrong = process(family_request("flux", prompt="a fox <lora:sd1-kohya:1>"), lora_context)
    assert any("LoRA sd1-kohya not applied" in note for note in wrong.notes), wrong.notes
    assert "not applied: Incompatible keys detected: lora_te_text_model" in " ".join(wrong.notes)
    assert np.array_equal(pixels(wrong.images[0]), pixels(plain.images[0]))
    assert "Lora hashes" not in parse_infotext(wrong.infotexts[0])


def test_a_kohya_flux_lora_is_converted_by_diffusers_and_applied(lora_context) -> None:
    plain = process(family_request("flux", prompt="a fox"), lora_context)
    tagged = process(family_request("flux", prompt="a fox <lora:flux-kohya:1>"), lora_context)
    assert not any("not applied" in note for note in tagged.notes), tagged.notes
    assert np.abs(pixels(tagged.images[0]) - pixels(plain.images[0])).max() > 0
    assert parse_infotext(tagged.infotexts[0])["Lora hashes"].startswith("flux-kohya: ")
