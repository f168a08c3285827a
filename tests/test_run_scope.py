"""The run object and the model scope: hires step counts, a hires checkpoint with networks, no request leaking
into the loaded model (scheduler, VAE), the img2img noise multiplier and exact steps."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modules.backends.diffusers_backend import DiffusersBackend
from modules.models.hashing import HashCache
from modules.models.ldm_keys import convert_vae
from modules.models.service import ModelService
from modules.networks.service import AppliedNetworks, Networks, build_networks
from modules.options import Options
from modules.paths import DataPaths
from modules.processing.infotext import parse_infotext
from modules.processing.job import JobControl
from modules.processing.processing import ProcessingContext, ProcessingError, process
from modules.tiny_model import build_tiny_pipeline, write_diffusers
from tests.helpers import UNET_LINEAR, kohya_lora, make_manager, pixels, tiny_img2img, tiny_request


class RecordingNetworks:
    """The real Networks, recording for each pass which model it patched and whether the LoRA'd weight changed."""

    def __init__(self, networks: Networks) -> None:
        self.networks = networks
        self.passes: list[tuple[str, bool]] = []

    @contextmanager
    def applied(
        self, model, prompts: Sequence[str], negative_prompts: Sequence[str], vae: str | None = None
    ) -> Iterator[AppliedNetworks]:
        weight = model.pipeline.unet.get_submodule(UNET_LINEAR).weight
        before = weight.detach().clone()
        with self.networks.applied(model, prompts, negative_prompts, vae) as applied:
            self.passes.append((model.info.name, not torch.equal(before, weight)))
            yield applied

    def use_checkpoint_vae(self, model) -> None:
        self.networks.use_checkpoint_vae(model)


class CountingControl(JobControl):
    """A job control that records the progress total of every step it is told about."""

    def __init__(self) -> None:
        super().__init__(preview_every_n_steps=0)
        self.totals: list[int] = []

    def step_done(self, step, preview=None) -> None:
        super().step_done(step, preview)
        self.totals.append(self.snapshot().sampling_steps)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    paths = DataPaths.create(tmp_path_factory.mktemp("scope-data"))
    paths.ensure()
    write_diffusers(build_tiny_pipeline(seed=0), paths.checkpoints_dir / "tiny")
    write_diffusers(build_tiny_pipeline(seed=1), paths.checkpoints_dir / "tiny2")
    save_file(kohya_lora(), str(paths.lora_dir / "foxy.safetensors"))
    other_vae = build_tiny_pipeline(seed=11).vae
    save_file(convert_vae(other_vae.state_dict(), other_vae.config), str(paths.vae_dir / "other-vae.safetensors"))
    options = Options()
    networks = RecordingNetworks(
        build_networks(paths, argparse.Namespace(), HashCache(paths.cache_file), lambda: options.sd_vae)
    )
    models = ModelService(make_manager(paths), networks)
    models.load("tiny")
    context = ProcessingContext(models=models, backend=DiffusersBackend(), options=options, paths=paths)
    return context, networks


@contextmanager
def counting_unet_calls(model) -> Iterator[list[int]]:
    calls: list[int] = []
    handle = model.pipeline.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


@pytest.mark.parametrize(
    ("steps", "hires_steps", "strength"), [(2, 0, 0.7), (3, 4, 0.7), (2, 5, 0.33), (4, 3, 0.95), (3, 2, 1.0)]
)
def test_hires_pass_runs_exactly_its_steps(setup, steps, hires_steps, strength):
    """A1111 runs hr_second_pass_steps (or the first pass's steps) steps of img2img: counted as UNet calls."""
    context, _ = setup
    request = tiny_request(
        steps=steps, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=hires_steps, denoising_strength=strength
    )
    control = CountingControl()
    with counting_unet_calls(context.models.current) as calls:
        process(request, context, control)
    second = hires_steps or steps
    assert len(calls) == steps + second  # Euler: one UNet call per step (the CFG batch is one call)
    assert control.totals == [steps] * steps + [second] * second


def test_hires_checkpoint_gets_the_networks_and_the_base_comes_back(setup):
    context, networks = setup
    networks.passes.clear()
    request = tiny_request(
        prompt="a red fox <lora:foxy:1>", enable_hr=True, hr_scale=1.5, hr_checkpoint_name="tiny2", steps=2
    )
    result = process(request, context)
    assert networks.passes == [("tiny", True), ("tiny2", True)]  # the LoRA patched both passes' models
    parsed = parse_infotext(result.infotexts[0])
    assert parsed["Hires checkpoint"] == "tiny2" and parsed["Lora hashes"].startswith("foxy: ")
    assert parsed["Model"] == "tiny"
    assert context.models.current.info.name == "tiny"
    without_lora = process(request.model_copy(update={"prompt": "a red fox"}), context)
    assert np.abs(pixels(result.images[0]) - pixels(without_lora.images[0])).max() > 0


def test_failing_hires_pass_leaves_the_base_checkpoint_loaded_and_unpatched(setup):
    context, _ = setup
    base = context.models.current
    weight = base.pipeline.unet.get_submodule(UNET_LINEAR).weight.detach().clone()
    # The first pass runs (no AND); the hires pass's AND prompt needs CFG > 1: it fails inside the tiny2 scope.
    request = tiny_request(
        prompt="a fox <lora:foxy:1>",
        hr_prompt="a fox AND a cat",
        cfg_scale=1.0,
        enable_hr=True,
        hr_scale=1.5,
        hr_checkpoint_name="tiny2",
        steps=2,
    )
    with pytest.raises(ProcessingError, match="AND prompts need classifier-free guidance"):
        process(request, context)
    assert context.models.current is base
    assert torch.equal(base.pipeline.unet.get_submodule(UNET_LINEAR).weight, weight)
    after = process(tiny_request(steps=2), context)
    assert parse_infotext(after.infotexts[0])["Model"] == "tiny"


def test_a_per_request_checkpoint_is_given_back_after_the_job(setup):
    context, _ = setup
    result = process(tiny_request(checkpoint="tiny2", steps=1, n_iter=2), context)
    assert [parse_infotext(text)["Model"] for text in result.infotexts] == ["tiny2", "tiny2"]
    assert context.models.current.info.name == "tiny"


def test_requests_never_change_the_loaded_model(setup, tmp_path):
    """DPM++ 2M Karras and another VAE, then "save as": the checkpoint's own scheduler and VAE are written."""
    context, _ = setup
    model = context.models.current
    scheduler = model.pipeline.scheduler
    original_vae = {key: value.clone() for key, value in model.pipeline.vae.state_dict().items()}
    context.options.sd_vae = "other-vae.safetensors"
    try:
        result = process(tiny_request(sampler_name="DPM++ 2M", scheduler="Karras", steps=2), context)
        assert parse_infotext(result.infotexts[0])["VAE"] == "other-vae.safetensors"
    finally:
        context.options.sd_vae = "Automatic"
    assert model.pipeline.scheduler is scheduler
    saved = context.models.save_current_as(tmp_path / "saved")
    written = json.loads((saved / "scheduler" / "scheduler_config.json").read_text())
    assert written["_class_name"] == "PNDMScheduler" == type(scheduler).__name__
    assert {key: value for key, value in written.items() if not key.startswith("_")} == {
        key: value for key, value in dict(model.scheduler_config).items() if not key.startswith("_")
    }
    for key, value in model.pipeline.vae.state_dict().items():
        assert torch.equal(value, original_vae[key]), key


def test_initial_noise_multiplier_scales_the_img2img_noise_and_is_written(setup):
    context, _ = setup
    plain = process(tiny_img2img(prompt="a cat"), context)
    assert "Noise multiplier" not in parse_infotext(plain.infotexts[0])
    quieter = process(tiny_img2img(prompt="a cat", initial_noise_multiplier=0.5), context)
    assert parse_infotext(quieter.infotexts[0])["Noise multiplier"] == "0.5"
    assert np.abs(pixels(plain.images[0]) - pixels(quieter.images[0])).mean() > 1.0
    context.options.initial_noise_multiplier = 0.5
    try:
        from_setting = process(tiny_img2img(prompt="a cat"), context)
    finally:
        context.options.initial_noise_multiplier = 1.0
    assert np.array_equal(pixels(from_setting.images[0]), pixels(quieter.images[0]))


@pytest.mark.parametrize(("fix_steps", "expected_calls"), [(False, 2), (True, 4)])
def test_img2img_fix_steps_runs_the_slider_steps(setup, fix_steps, expected_calls):
    context, _ = setup
    context.options.img2img_fix_steps = fix_steps
    try:
        with counting_unet_calls(context.models.current) as calls:
            process(tiny_img2img(steps=4, denoising_strength=0.5), context)
    finally:
        context.options.img2img_fix_steps = False
    assert len(calls) == expected_calls
