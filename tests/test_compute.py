"""Compute settings (modules/compute): option plumbing, infotext keys, and each option against the eager UNet."""

from __future__ import annotations

import argparse
import copy

import numpy as np
import pytest
import torch

from modules.compute import ComputeSettings, DeepCacheUNet, prepare_pipeline, warm_up
from modules.compute.options import OPTION_FIELDS, compute_settings_from
from modules.compute.token_merging import TokenMerging, bipartite_soft_matching
from modules.models.manager import warmup_size
from modules.options import Options
from modules.paths import DataPaths
from modules.processing.processing import ProcessingContext, process
from modules.tiny_model import build_tiny_pipeline, write_diffusers
from tests.helpers import make_manager, pixels, tiny_request


def unet_inputs(batch: int = 2, height: int = 16, width: int = 24, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, height, width, generator=generator)
    states = torch.randn(batch, 77, 32, generator=generator)
    return sample, torch.tensor(500), states


@pytest.fixture(scope="module")
def fresh_pipeline():
    """A tiny pipeline this module may change (the session's tiny_pipeline must not be)."""
    return build_tiny_pipeline(seed=3)


@pytest.fixture(scope="module")
def compute_context(tmp_path_factory):
    paths = DataPaths.create(tmp_path_factory.mktemp("compute-data"))
    paths.ensure()
    write_diffusers(build_tiny_pipeline(), paths.checkpoints_dir / "tiny")
    from modules.backends.diffusers_backend import DiffusersBackend
    from modules.backends.original.backend import OriginalBackend
    from modules.models.service import ModelService

    models = ModelService(make_manager(paths))
    backends = {"diffusers": DiffusersBackend(), "original": OriginalBackend()}
    return ProcessingContext(
        models=models, backend=backends["diffusers"], options=Options(), paths=paths, backends=backends
    )


def test_only_pixel_changing_settings_write_infotext():
    exact = ComputeSettings(compile_unet=True, channels_last=True, fuse_qkv=True, cudnn_benchmark=True, tf32=True)
    assert exact.infotext(is_xl=False) == {}
    lossy = ComputeSettings(token_merging_ratio=0.3, deepcache_interval=3, fp8_storage="Enable for SDXL")
    assert lossy.infotext(is_xl=False) == {"Token merging ratio": 0.3, "DeepCache interval": 3}
    assert lossy.infotext(is_xl=True)["FP8 weight"] == "Enable for SDXL"


def test_settings_come_from_options_and_flags():
    options = Options(compute_compile_unet=True, compute_compile_mode="max-autotune", token_merging_ratio=0.4)
    settings = compute_settings_from(options, argparse.Namespace(opt_channelslast=True))
    assert settings.compile_unet and settings.compile_mode == "max-autotune"
    assert settings.channels_last and settings.token_merging_ratio == 0.4 and settings.tf32
    assert set(OPTION_FIELDS) <= set(Options.model_fields)
    assert not compute_settings_from(Options()).channels_last
    with pytest.raises(ValueError, match="compile mode"):
        ComputeSettings(compile_mode="fastest")


def test_reload_is_needed_only_for_weight_changes():
    base = ComputeSettings()
    assert ComputeSettings(compile_unet=True).needs_reload(base)
    assert ComputeSettings(fp8_storage="Enable").needs_reload(base)
    assert not ComputeSettings(token_merging_ratio=0.5, deepcache_interval=2, tf32=False).needs_reload(base)


def test_warmup_traces_a_non_square_size_for_dynamic_graphs():
    assert warmup_size(512, dynamic=True) == (512, 448)
    assert warmup_size(1024, dynamic=False) == (1024, 1024)


def test_token_matching_removes_the_ratio_and_restores_the_token_count():
    metric = torch.randn(2, 16 * 24, 8, generator=torch.Generator().manual_seed(1))
    merge, unmerge = bipartite_soft_matching(metric, 16, 24, 0.5)
    merged = merge(metric)
    assert merged.shape == (2, 16 * 24 - int(16 * 24 * 0.5), 8)
    assert unmerge(merged).shape == metric.shape
    # Tokens that are merged are replaced by their mean: equal tokens come back unchanged.
    constant = torch.ones(2, 16 * 24, 8)
    assert torch.allclose(unmerge(merge(constant)), constant)
    identity_merge, identity_unmerge = bipartite_soft_matching(metric, 16, 24, 0.0)
    assert torch.equal(identity_unmerge(identity_merge(metric)), metric)


def test_token_merging_changes_the_unet_a_little_and_is_removable(fresh_pipeline):
    unet = fresh_pipeline.unet
    sample, timestep, states = unet_inputs()
    with torch.no_grad():
        eager = unet(sample, timestep, states).sample
        # The tiny UNet attends only at half resolution: merge there (tomesd's max_downsample 2).
        merging = TokenMerging(unet, 0.5, max_downsample=2)
        merged = unet(sample, timestep, states).sample
        assert all(processor.calls == 1 for processor in merging.processors) and merging.processors
        merging.remove()
        again = unet(sample, timestep, states).sample
    difference = (merged - eager).abs().max().item()
    assert 0 < difference < 0.2 * eager.abs().max().item()
    assert torch.equal(again, eager)


def test_deepcache_reuses_deep_features_between_full_steps(fresh_pipeline):
    unet = fresh_pipeline.unet
    sample, timestep, states = unet_inputs()
    other, _, _ = unet_inputs(seed=1)
    cached = DeepCacheUNet(unet, interval=3)
    with torch.no_grad():
        assert torch.equal(cached(sample, timestep, states).sample, unet(sample, timestep, states).sample)
        assert torch.equal(cached(sample, timestep, states).sample, unet(sample, timestep, states).sample)
        shallow = cached(other, timestep, states).sample  # deep features of `sample`, shallow path of `other`
        assert not torch.allclose(shallow, unet(other, timestep, states).sample)
        cached(other, timestep, states)
        assert cached.full_calls == 2 and cached.calls == 4
        plain = DeepCacheUNet(unet, interval=1)
        assert torch.equal(plain(other, timestep, states).sample, unet(other, timestep, states).sample)


def test_channels_last_and_fused_qkv_match_eager():
    pipeline = build_tiny_pipeline(seed=5)
    sample, timestep, states = unet_inputs()
    with torch.no_grad():
        eager = pipeline.unet(sample, timestep, states).sample
        state = prepare_pipeline(pipeline, ComputeSettings(channels_last=True, fuse_qkv=True), is_xl=False)
        prepared = pipeline.unet(sample, timestep, states).sample
    assert state.applied == ["fused qkv", "channels_last"]
    assert pipeline.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(prepared, eager, atol=1e-5)
    assert state.infotext == {}


def test_fp8_weight_storage_is_close_to_eager():
    pipeline = build_tiny_pipeline(seed=6)
    sample, timestep, states = unet_inputs()
    with torch.no_grad():
        eager = pipeline.unet(sample, timestep, states).sample
        state = prepare_pipeline(pipeline, ComputeSettings(fp8_storage="Enable"), is_xl=False)
        stored = pipeline.unet(sample, timestep, states).sample
    assert pipeline.unet.conv_in.weight.dtype == torch.float8_e4m3fn
    assert state.infotext == {"FP8 weight": "Enable"}
    relative = ((stored - eager).norm() / eager.norm()).item()
    assert 0 < relative < 0.2
    # "Enable for SDXL" leaves an SD 1.x model alone.
    untouched = build_tiny_pipeline(seed=6)
    assert (
        "fp8 weight" not in prepare_pipeline(untouched, ComputeSettings(fp8_storage="Enable for SDXL"), False).applied
    )
    assert untouched.unet.conv_in.weight.dtype == torch.float32


def test_processing_writes_the_compute_infotext_keys(compute_context):
    models = compute_context.models
    plain = process(tiny_request(), compute_context)
    assert "Token merging ratio" not in plain.infotexts[0] and "DeepCache" not in plain.infotexts[0]
    loaded = models.current
    try:
        models.set_compute(ComputeSettings(token_merging_ratio=0.5, deepcache_interval=2))
        assert models.current is loaded  # no reload for these two
        assert "token merging" in loaded.compute.applied
        cached = process(tiny_request(steps=4), compute_context)
    finally:
        models.set_compute(ComputeSettings())
    text = cached.infotexts[0]
    assert "Token merging ratio: 0.5" in text and "DeepCache interval: 2" in text
    assert cached.parameters["DeepCache interval"] == "2"
    eager = process(tiny_request(steps=4), compute_context)
    assert not np.array_equal(pixels(cached.images[0]), pixels(eager.images[0]))
    assert "token merging" not in models.current.compute.applied


def test_a_weight_setting_reloads_the_model(compute_context):
    models = compute_context.models
    models.ensure_loaded()
    before = models.current
    try:
        models.set_compute(ComputeSettings(channels_last=True))
        assert models.current is not before
        assert models.current.compute.applied == ["channels_last"]
        result = process(tiny_request(), compute_context)
    finally:
        models.set_compute(ComputeSettings())
    reference = process(tiny_request(), compute_context)
    assert np.abs(pixels(result.images[0]).astype(int) - pixels(reference.images[0]).astype(int)).max() <= 1


@pytest.mark.slow
def test_compiled_unet_equals_eager_without_recompiling_across_sizes():
    """Inductor on the CPU: many minutes on a small, shared machine. The pipeline calls the UNet as in a job."""
    pipeline = build_tiny_pipeline(seed=7)
    eager = type(pipeline)(**{**pipeline.components, "unet": copy.deepcopy(pipeline.unet)})
    eager.set_progress_bar_config(disable=True)
    pipeline.set_progress_bar_config(disable=True)
    state = prepare_pipeline(pipeline, ComputeSettings(compile_unet=True), is_xl=False)
    # 384x320: latents 48x40. The tiny model's text width is 32, so a 256-wide trace (latent 32) would be tied to it
    # by duck sizing and specialised; real models' widths (768, 1024, 2048) never equal a latent side.
    records = warm_up(pipeline, state, [warmup_size(384, dynamic=True)])
    assert records[0].seconds > 0 and state.warmup_seconds == records[0].seconds

    def latents(target, width: int, height: int, batch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(1)
        with torch.inference_mode():
            return target(
                prompt=["a fox"] * batch,
                num_inference_steps=2,
                width=width,
                height=height,
                generator=generator,
                output_type="latent",
            ).images

    torch.compiler.set_stance("fail_on_recompile")
    try:
        compiled = [latents(pipeline, 128, 128, 1), latents(pipeline, 64, 192, 2)]
    finally:
        torch.compiler.set_stance("default")
    expected = [latents(eager, 128, 128, 1), latents(eager, 64, 192, 2)]
    for got, want in zip(compiled, expected, strict=True):
        assert torch.allclose(got, want, atol=1e-4)


def test_xformers_falls_back_to_sdpa_with_a_log_line(caplog):
    from modules.devices import Attention, MemoryPolicy

    pipeline = build_tiny_pipeline(seed=8)
    policy = MemoryPolicy(torch.device("cpu"), torch.float32, torch.float32, attention=Attention.XFORMERS)
    with caplog.at_level("WARNING", logger="modules.devices"):
        policy.apply(pipeline)
    assert "falling back to PyTorch SDPA attention" in caplog.text
    kinds = {type(processor).__name__ for processor in pipeline.unet.attn_processors.values()}
    assert kinds == {"AttnProcessor2_0"}


def test_setup_installs_the_xformers_wheel_without_dependencies_when_missing(tmp_path):
    import subprocess

    from modules.paths import INSTALL_DIR

    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    # A stand-in interpreter: "import xformers" fails until pip "installs" it; every call is logged.
    python.write_text(
        '#!/bin/sh\necho "$@" >> "$(dirname "$0")/calls"\n'
        'case "$*" in *"import xformers"*) [ -f "$(dirname "$0")/installed" ];; '
        '*"pip install"*) touch "$(dirname "$0")/installed";; esac\n'
    )
    python.chmod(0o755)
    script = f'source "{INSTALL_DIR}/scripts/setup-venv.sh"; VENV_DIR="{tmp_path}/venv"; easel_install_xformers'
    for _ in range(2):
        subprocess.run(["bash", "-c", script], check=True, capture_output=True)
    installs = [line for line in (python.parent / "calls").read_text().splitlines() if "pip install" in line]
    assert installs == ["-m pip install --quiet -U -I --no-deps xformers==0.0.35"]
    launcher = (INSTALL_DIR / "webui.sh").read_text(encoding="utf-8")
    assert '*" --xformers "*) easel_install_xformers' in launcher


def test_an_inpainting_checkpoint_skips_the_warm_up_and_says_so(inpaint_context):
    from modules.devices import MemoryPolicy
    from modules.models.manager import ModelManager

    registry = inpaint_context.models.registry
    manager = ModelManager(
        registry, MemoryPolicy.cpu(), inpaint_context.paths.configs_dir, compute=ComputeSettings(compile_unet=True)
    )
    model = manager.get()
    assert "compile unet" in model.compute.applied
    assert model.compute.skipped["warm-up"].startswith("inpainting checkpoint") and model.compute.warmups == []
    manager.unload()


def test_deepcache_applies_on_the_original_backend_too(compute_context):
    """The infotext's "DeepCache interval" comes from the model's settings, so both backends apply it: on the
    original backend the image changes with it and the key is written."""
    models = compute_context.models
    request = tiny_request(steps=4, sampling_backend="original")
    plain = process(request, compute_context)
    try:
        models.set_compute(ComputeSettings(deepcache_interval=2))
        cached = process(request, compute_context)
    finally:
        models.set_compute(ComputeSettings())
    assert "Sampler backend" not in plain.infotexts[0]  # the original backend's images carry no backend key
    assert "DeepCache interval: 2" in cached.infotexts[0] and "DeepCache" not in plain.infotexts[0]
    assert not np.array_equal(pixels(cached.images[0]), pixels(plain.images[0]))
