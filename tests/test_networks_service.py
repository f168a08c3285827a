"""Extra networks through process(): LoRA tags, embeddings by file name, VAE choice, notes and infotext."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modules.backends.diffusers_backend import DiffusersBackend
from modules.models.hashing import HashCache
from modules.models.ldm_keys import convert_vae
from modules.models.service import ModelService
from modules.networks.registry import addnet_hash
from modules.networks.service import build_networks
from modules.options import Options
from modules.paths import DataPaths
from modules.processing.infotext import parse_infotext
from modules.processing.processing import ProcessingContext, process
from modules.processing.requests import Txt2ImgRequest
from modules.tiny_model import build_tiny_pipeline, write_diffusers
from tests.helpers import kohya_lora, make_manager, tiny_request


def txt2img(**fields) -> Txt2ImgRequest:
    return tiny_request(**{"negative_prompt": "", "steps": 2, "seed": 7, **fields})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    paths = DataPaths.create(tmp_path_factory.mktemp("networks-data"))
    paths.ensure()
    write_diffusers(build_tiny_pipeline(), paths.checkpoints_dir / "tiny")
    save_file(kohya_lora(), str(paths.lora_dir / "foxy.safetensors"))
    (paths.lora_dir / "styles").mkdir()
    save_file(kohya_lora(seed=9), str(paths.lora_dir / "styles" / "other.safetensors"))
    save_file({"emb_params": torch.randn(2, 32) * 3}, str(paths.embeddings_dir / "tinyneg.safetensors"))
    save_file({"emb_params": torch.randn(2, 768)}, str(paths.embeddings_dir / "bigneg.safetensors"))
    other_vae = build_tiny_pipeline(seed=11).vae
    save_file(convert_vae(other_vae.state_dict(), other_vae.config), str(paths.vae_dir / "other-vae.safetensors"))
    options = Options()
    networks = build_networks(paths, argparse.Namespace(), HashCache(paths.cache_file), lambda: options.sd_vae)
    models = ModelService(make_manager(paths), networks)
    context = ProcessingContext(models=models, backend=DiffusersBackend(), options=options, paths=paths)
    return context, networks, paths


def run(context, **fields):
    result = process(txt2img(**fields), context)
    return np.asarray(result.images[0], dtype=np.int16), result


def test_lora_tag_changes_image_and_is_removed_after(setup):
    context, _networks, paths = setup
    baseline, _ = run(context)
    with_lora, result = run(context, prompt="a red fox <lora:foxy:1>")
    assert np.abs(with_lora - baseline).max() > 0
    expected = addnet_hash(paths.lora_dir / "foxy.safetensors")
    assert parse_infotext(result.infotexts[0])["Lora hashes"] == f"foxy: {expected}"
    assert "<lora:foxy:1>" in result.infotexts[0]
    again, _ = run(context)
    assert np.array_equal(again, baseline)
    zero, _ = run(context, prompt="a red fox <lora:foxy:0>")
    assert np.array_equal(zero, baseline)


def test_subfolder_lora_and_missing_lora_note(setup):
    context, _networks, _ = setup
    _, result = run(context, prompt="a red fox <lora:other:0.5> <lora:nope:1>")
    assert any("LoRA not found: nope" in note for note in result.notes)
    assert "other:" in parse_infotext(result.infotexts[0])["Lora hashes"]


def test_embedding_in_negative_prompt_with_weight(setup):
    context, networks, _ = setup
    baseline, _ = run(context, negative_prompt="ugly")
    changed, result = run(context, negative_prompt="ugly, (tinyneg:1.2)")
    plain, _ = run(context, negative_prompt="ugly, (tinyneg:1.2)")
    assert np.array_equal(changed, plain)
    assert "TI hashes" in parse_infotext(result.infotexts[0])
    model = context.models.current
    state = networks._state(model)
    assert "tinyneg" in state.embeddings
    assert np.abs(changed - baseline).max() > 0


def test_incompatible_embedding_is_listed_as_skipped(setup):
    context, networks, _ = setup
    _, result = run(context, prompt="a fox, bigneg")
    assert any("bigneg skipped" in note and "768" in note for note in result.notes)
    loaded, skipped = networks.embeddings_status(context.models.current)
    assert "tinyneg" in loaded and "bigneg" in skipped


def test_vae_choice_and_automatic_sidecar(setup):
    context, _networks, paths = setup
    builtin, _ = run(context)
    context.options.sd_vae = "other-vae.safetensors"
    try:
        chosen, result = run(context)
        parsed = parse_infotext(result.infotexts[0])
        assert parsed["VAE"] == "other-vae.safetensors" and len(parsed["VAE hash"]) == 10
        assert np.abs(chosen - builtin).max() > 0
        context.options.sd_vae = "None"
        assert np.array_equal(run(context)[0], builtin)
        context.options.sd_vae = "Automatic"
        sidecar = paths.checkpoints_dir / "tiny.vae.safetensors"
        sidecar.write_bytes((paths.vae_dir / "other-vae.safetensors").read_bytes())
        automatic, result = run(context)
        assert np.array_equal(automatic, chosen)
        assert parse_infotext(result.infotexts[0])["VAE"] == "tiny.vae.safetensors"
        sidecar.unlink()
        assert np.array_equal(run(context)[0], builtin)
    finally:
        context.options.sd_vae = "Automatic"
