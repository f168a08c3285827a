"""The sampler catalogue and the diffusers backend's samplers: every sampler and schedule type it offers runs on the
tiny model; names resolve as in A1111."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from modules import samplers
from modules.backends.diffusers_backend import schedulers
from modules.backends.diffusers_backend.schedulers import SUPPORT, build_scheduler
from modules.backends.original import catalogue as original_catalogue
from modules.models.manager import pipeline_view
from modules.samplers import SamplerError, find_sampler, infotext_schedule, resolve

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
COMBINATIONS = [(name, schedule) for name, spec in schedulers.SAMPLERS.items() for schedule in spec.schedules]
STOCHASTIC = ("Euler a", "DPM2 a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 3M SDE", "LCM")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny model runs ~20x slower when torch's threads fight other processes for 2 busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_scheduler_config(folder: str) -> dict:
    return json.loads((CONFIGS / folder / "scheduler" / "scheduler_config.json").read_text())


@pytest.fixture(scope="module")
def prompt_embeds(tiny_pipeline: StableDiffusionPipeline) -> tuple[torch.Tensor, torch.Tensor]:
    positive, negative = tiny_pipeline.encode_prompt("a red cube", "cpu", 1, True, "blurry")
    return positive, negative


def generate(
    tiny_pipeline: StableDiffusionPipeline,
    prompt_embeds: tuple[torch.Tensor, torch.Tensor],
    sampler: str,
    schedule: str = "Automatic",
    steps: int = 2,
    seed: int = 7,
    output_type: str = "np",
    guidance_scale: float = 5.0,
) -> np.ndarray:
    """One 64x64 image (or its latents) on a pipeline view, so the session pipeline keeps its scheduler."""
    scheduler = build_scheduler(tiny_pipeline.scheduler.config, sampler, schedule, noise_seed=seed)
    pipeline = pipeline_view(tiny_pipeline, scheduler=scheduler)
    positive, negative = prompt_embeds
    output = pipeline(
        prompt_embeds=positive,
        negative_prompt_embeds=negative,
        num_inference_steps=steps,
        height=64,
        width=64,
        guidance_scale=guidance_scale,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type=output_type,
    )
    return np.asarray(output.images[0])


@pytest.mark.parametrize(("sampler", "schedule"), COMBINATIONS)
def test_every_sampler_and_schedule_gives_finite_latents(tiny_pipeline, prompt_embeds, sampler, schedule) -> None:
    # Latents, not decoded images, to keep the 70-odd runs cheap; the tests below decode real images.
    latents = generate(tiny_pipeline, prompt_embeds, sampler, schedule, output_type="latent", guidance_scale=1.0)
    assert latents.shape == (4, 8, 8)
    assert np.isfinite(latents).all()
    assert latents.std() > 0


def test_session_pipeline_scheduler_is_untouched(tiny_pipeline, prompt_embeds) -> None:
    before = dict(tiny_pipeline.scheduler.config)
    generate(tiny_pipeline, prompt_embeds, "DPM++ 2M", "Karras")
    assert type(tiny_pipeline.scheduler).__name__ == "PNDMScheduler"
    assert dict(tiny_pipeline.scheduler.config) == before


def test_samplers_give_distinct_images(tiny_pipeline, prompt_embeds) -> None:
    # 5 steps: with fewer, the multistep SDE solvers (2M SDE, 2M SDE Heun, 3M SDE) all fall back to the
    # same low orders and legitimately agree.
    images = {name: generate(tiny_pipeline, prompt_embeds, name, steps=5) for name in samplers.sampler_names(SUPPORT)}
    names = list(images)
    for image in images.values():
        assert image.shape == (64, 64, 3)
        assert np.isfinite(image).all()
    same = [
        (first, second)
        for index, first in enumerate(names)
        for second in names[index + 1 :]
        if np.abs(images[first] - images[second]).max() < 1e-4
    ]
    assert same == []


@pytest.mark.parametrize("sampler", STOCHASTIC)
def test_same_sampler_and_seed_is_deterministic(tiny_pipeline, prompt_embeds, sampler) -> None:
    first = generate(tiny_pipeline, prompt_embeds, sampler, seed=11)
    second = generate(tiny_pipeline, prompt_embeds, sampler, seed=11)
    other_seed = generate(tiny_pipeline, prompt_embeds, sampler, seed=12)
    np.testing.assert_array_equal(first, second)
    assert np.abs(first - other_seed).max() > 1e-3


def test_build_returns_a_new_scheduler_and_leaves_the_config_alone() -> None:
    config = read_scheduler_config("sd15")
    original = dict(config)
    first = build_scheduler(config, "Euler", "Karras")
    second = build_scheduler(config, "Euler", "Karras")
    assert first is not second
    assert config == original
    assert first.config.use_karras_sigmas is True


@pytest.mark.parametrize("sampler", samplers.sampler_names(SUPPORT))
def test_v_prediction_is_kept(sampler: str) -> None:
    config = read_scheduler_config("sd2-v")
    assert config["prediction_type"] == "v_prediction"
    assert build_scheduler(config, sampler).config.prediction_type == "v_prediction"


def test_epsilon_is_the_default_prediction() -> None:
    assert "prediction_type" not in read_scheduler_config("sd15")
    assert build_scheduler(read_scheduler_config("sd15"), "Euler").config.prediction_type == "epsilon"


@pytest.mark.parametrize("spec", schedulers.SAMPLERS.values(), ids=lambda spec: spec.name)
def test_table_options_are_real_scheduler_arguments(spec: schedulers.DiffusersSampler) -> None:
    """An option the class does not take would be dropped by from_config: the table must not have one."""
    parameters = inspect.signature(spec.scheduler_class.__init__).parameters
    for options in (spec.options, *spec.schedule_options.values()):
        assert set(options) <= set(parameters), spec.name
    assert find_sampler(spec.name).default_schedule in spec.schedule_options
    assert spec.schedules[0] == "Automatic"


def test_catalogue_names_every_a1111_sampler_and_schedule_type() -> None:
    a1111 = {info.name for info in samplers.SAMPLERS if info.a1111}
    assert len(a1111) == 20 and {"DPM fast", "DPM adaptive", "Restart", "DDIM CFG++", "LCM"} <= a1111
    assert samplers.SCHEDULE_TYPES[1:] == (
        "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
        "Align Your Steps", "Simple", "Normal", "DDIM", "Beta",
    )  # fmt: skip
    assert set(SUPPORT) <= {info.name for info in samplers.SAMPLERS}


# --- schedules against A1111's own formulas (k-diffusion get_sigmas, get_sigmas_karras, sgm_uniform) ---


def reference_sigmas(schedule: str, steps: int) -> np.ndarray:
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1 - betas)
    log_sigmas = np.log(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5)
    sigma_min, sigma_max = np.exp(log_sigmas[0]), np.exp(log_sigmas[-1])
    if schedule == "Uniform":
        timesteps = np.linspace(999, 0, steps)
    elif schedule == "SGM Uniform":
        timesteps = np.linspace(999, 0, steps + 1)[:-1]
    else:
        ramp = np.linspace(0, 1, steps)
        karras = (sigma_max ** (1 / 7) + ramp * (sigma_min ** (1 / 7) - sigma_max ** (1 / 7))) ** 7
        return np.append(karras, 0.0)
    return np.append(np.exp(np.interp(timesteps, np.arange(1000), log_sigmas)), 0.0)


@pytest.mark.parametrize(
    ("sampler", "schedule", "tolerance"),
    [
        ("Euler", "Uniform", 1e-4),
        ("Euler", "Karras", 1e-4),
        ("Euler a", "Uniform", 1e-4),
        ("LMS", "Karras", 1e-4),
        ("Euler", "SGM Uniform", 0.01),
        ("DPM++ 2M", "Karras", 1e-4),
        ("DPM++ 2M", "SGM Uniform", 0.01),
        ("DPM++ 2S a", "SGM Uniform", 0.01),
    ],
)
def test_sigmas_follow_a1111(sampler: str, schedule: str, tolerance: float) -> None:
    # SDXL's config says "leading" spacing with steps_offset=1; A1111's k-diffusion samplers ignore it.
    scheduler = build_scheduler(read_scheduler_config("sdxl"), sampler, schedule)
    scheduler.set_timesteps(10)
    expected = reference_sigmas(schedule, 10)
    np.testing.assert_allclose(np.asarray(scheduler.sigmas, dtype=np.float64), expected, rtol=tolerance, atol=1e-6)


@pytest.mark.parametrize("sampler", ["DDIM", "PLMS"])
def test_ddim_and_plms_use_a1111_uniform_ddim_timesteps(sampler: str) -> None:
    # A1111: range(0, 1000, 1000 // steps) + 1, whatever steps_offset the checkpoint's config says.
    config = {**read_scheduler_config("sd15"), "steps_offset": 0, "timestep_spacing": "trailing"}
    scheduler = build_scheduler(config, sampler)
    scheduler.set_timesteps(4)
    assert sorted(set(scheduler.timesteps.tolist())) == [1, 251, 501, 751]


# --- names ---


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("k_euler_a", "Euler a"),
        ("K_EULER_ANCESTRAL", "Euler a"),
        ("k_euler", "Euler"),
        ("k_lms", "LMS"),
        ("k_heun", "Heun"),
        ("k_dpm_2", "DPM2"),
        ("k_dpm_2_a", "DPM2 a"),
        ("k_dpmpp_2m", "DPM++ 2M"),
        ("k_dpmpp_sde", "DPM++ SDE"),
        ("k_dpmpp_2m_sde", "DPM++ 2M SDE"),
        ("k_dpmpp_2m_sde_heun", "DPM++ 2M SDE Heun"),
        ("k_dpmpp_3m_sde", "DPM++ 3M SDE"),
        ("k_dpmpp_2s_a", "DPM++ 2S a"),
        ("ddim", "DDIM"),
        ("plms", "PLMS"),
        ("unipc", "UniPC"),
        ("euler A", "Euler a"),
        (" dpm++ 2m ", "DPM++ 2M"),
    ],
)
def test_aliases_resolve_case_insensitively(name: str, expected: str) -> None:
    assert find_sampler(name).name == expected


@pytest.mark.parametrize(
    ("name", "sampler", "schedule", "infotext"),
    [
        ("DPM++ 2M Karras", "DPM++ 2M", "Karras", "Automatic"),
        ("dpm++ 2m karras", "DPM++ 2M", "Karras", "Automatic"),
        ("DPM++ 2M SDE Exponential", "DPM++ 2M SDE", "Exponential", "Automatic"),
        ("DPM++ 2M SDE Karras", "DPM++ 2M SDE", "Karras", "Karras"),
        ("DPM2 a Karras", "DPM2 a", "Karras", "Automatic"),
        ("LMS Karras", "LMS", "Karras", "Karras"),
        ("Euler a", "Euler a", "Uniform", "Automatic"),
        ("Euler SGM Uniform", "Euler", "SGM Uniform", "SGM Uniform"),
        ("k_dpmpp_2m_ka", "DPM++ 2M", "Karras", "Automatic"),
        ("k_lms_ka", "LMS", "Karras", "Karras"),
        ("k_dpmpp_3m_sde_exp", "DPM++ 3M SDE", "Exponential", "Automatic"),
    ],
)
def test_legacy_combined_names_split(name: str, sampler: str, schedule: str, infotext: str) -> None:
    spec, effective = resolve(name)
    assert (spec.name, effective) == (sampler, schedule)
    assert infotext_schedule(spec, effective) == infotext


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [("karras", "Karras"), ("sgm_uniform", "SGM Uniform"), ("", "Karras"), ("AUTOMATIC", "Karras")],
)
def test_schedule_names_and_automatic(schedule: str, expected: str) -> None:
    assert resolve("DPM++ 2M", schedule)[1] == expected


def test_automatic_defaults_follow_a1111() -> None:
    defaults = {spec.name: resolve(spec.name)[1] for spec in samplers.SAMPLERS}
    for name in ("DPM++ 2M", "DPM++ SDE", "DPM2", "DPM2 a", "DPM++ 2S a"):
        assert defaults[name] == "Karras"
    for name in ("DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE"):
        assert defaults[name] == "Exponential"
    for name in ("Euler a", "Euler", "LMS", "Heun", "DDIM", "PLMS", "UniPC"):
        assert defaults[name] == "Uniform"


def test_second_order_samplers_follow_a1111() -> None:
    # A1111 v1.10.1 sd_samplers_kdiffusion: the entries with "second_order": True.
    expected = {"DPM++ SDE", "DPM++ 2S a", "Heun", "DPM2", "DPM2 a", "Restart"}
    assert {spec.name for spec in samplers.SAMPLERS if spec.second_order} == expected
    # The original backend's own sampler table agrees (its CFG wrapper's total_steps reads it).
    assert {spec.name for spec in original_catalogue.SAMPLERS if spec.second_order} == expected
    assert samplers.prompt_schedule_steps("k_heun", 20) == 40
    assert samplers.prompt_schedule_steps("DPM2 a Karras", 7) == 14
    assert samplers.prompt_schedule_steps("DPM++ 2M", 20) == 20
    assert samplers.prompt_schedule_steps("not a sampler", 20) == 20  # A1111: no sampler config, plain steps


def test_unknown_sampler_names_the_valid_ones() -> None:
    with pytest.raises(SamplerError, match="Unknown sampler 'Euler b'") as error:
        resolve("Euler b")
    assert "Euler a" in str(error.value) and "DPM++ 2M SDE" in str(error.value)
    with pytest.raises(SamplerError, match="Unknown sampler 'DDIM CFG\\+\\+'"):
        build_scheduler(read_scheduler_config("sd15"), "DDIM CFG++")  # in the catalogue, not in this backend
    assert resolve("DDIM CFG++")[0].name == "DDIM CFG++"


def test_unsupported_schedule_is_an_error() -> None:
    with pytest.raises(SamplerError, match=r"cannot use schedule type 'Karras'.*Uniform") as error:
        build_scheduler(read_scheduler_config("sd15"), "Euler a", "Karras")
    assert isinstance(error.value, ValueError)
    with pytest.raises(SamplerError, match="cannot use schedule type 'Uniform'"):
        resolve("DPM++ 2M", "Uniform", SUPPORT)
    with pytest.raises(SamplerError, match="cannot use schedule type 'KL Optimal'"):
        resolve("Euler", "KL Optimal", SUPPORT)
    assert resolve("Euler", "kl_optimal")[1] == "KL Optimal"  # the catalogue knows every A1111 type
    with pytest.raises(SamplerError, match="Unknown schedule type"):
        resolve("Euler", "Wobbly")
    with pytest.raises(SamplerError, match="conflicts"):
        resolve("DPM++ 2M Karras", "Exponential")


def test_schedule_types_for_lists_only_what_runs() -> None:
    assert samplers.schedule_types_for("k_euler_a", SUPPORT) == ["Automatic", "Uniform", "SGM Uniform"]
    assert samplers.schedule_types_for("DDIM", SUPPORT) == ["Automatic", "Uniform"]
    assert samplers.schedule_types_for("Euler", SUPPORT) == [
        "Automatic", "Uniform", "Karras", "Exponential", "SGM Uniform", "Beta"
    ]  # fmt: skip
    assert "Uniform" not in samplers.schedule_types_for("DPM++ 2M", SUPPORT)
    assert samplers.schedule_types_for("Euler") == list(samplers.SCHEDULE_TYPES)


def test_names_and_aliases_are_unique() -> None:
    keys = [key for spec in samplers.SAMPLERS for key in {key.lower() for key in (spec.name, *spec.aliases)}]
    assert len(keys) == len(set(keys))
    assert len(samplers.sampler_names(SUPPORT)) >= 17


def test_zero_terminal_snr_needs_a_sampler_that_supports_it() -> None:
    config = {**read_scheduler_config("sd15"), "rescale_betas_zero_snr": True}
    assert build_scheduler(config, "Euler").config.rescale_betas_zero_snr is True
    with pytest.raises(SamplerError, match="zero-terminal-SNR"):
        build_scheduler(config, "LMS")
