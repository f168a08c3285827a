"""The original backend's core (A1111's noise, schedules, model call, samplers) against A1111 and k-diffusion.

Golden values come from k-diffusion's and A1111's own code (``tests/data/make_original_goldens.py``); the
property tests need no golden. Everything runs on a toy linear model with 4x4x4 latents.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
import torchsde._brownian.brownian_interval as torchsde_interval

from modules.backends.original import catalogue, pipeline, rng, schedules
from modules.backends.original.denoiser import CFGDenoiser, InpaintBlend, ModelConditioning, MultiCond, Prediction
from tests import original_support as cases

GOLDENS_PATH = Path(__file__).resolve().parent / "data" / "original_goldens.npz"
PACKAGE = Path(__file__).resolve().parent.parent / "modules" / "backends" / "original"
# Thread count and summation order move results at the 1e-7 level (relative); latents reach ~40.
RTOL, ATOL = 2e-5, 5e-5


@pytest.fixture(scope="module")
def goldens() -> dict[str, np.ndarray]:
    with np.load(GOLDENS_PATH) as data:
        return {key: data[key] for key in data.files}


def toy_unet(x: torch.Tensor, t: torch.Tensor, cond: ModelConditioning) -> torch.Tensor:
    assert isinstance(cond.text, torch.Tensor)
    return cases.toy_output(x, t, cond.text)


def cpu_rng(seeds, **kwargs) -> rng.ImageRNG:
    source = rng.NoiseSource(rng.RandnSource(kwargs.pop("source", "CPU")))
    return rng.ImageRNG(cases.LATENT_SHAPE, seeds, source=source, **kwargs)


def run_sampler(
    name: str,
    schedule: str | None = None,
    prediction: str = "eps",
    seeds=cases.SEEDS,
    steps: int = cases.STEPS,
    ensd: int = 0,
    unet=toy_unet,
    **options,
) -> pipeline.SamplingResult:
    cond, uncond = cases.toy_conditioning(len(seeds))
    model = pipeline.DiffusionModel(unet, schedules.ldm_alphas_cumprod(), Prediction(prediction))
    guidance = pipeline.Guidance(MultiCond.single(cond), uncond, cases.CFG_SCALE)
    denoise = options.pop("denoise", None)
    parameters = catalogue.SamplerParameters(eta_noise_seed_delta=ensd, **options)
    image_rng = cpu_rng(seeds, eta_noise_seed_delta=ensd)
    if denoise is None:
        return pipeline.sample_txt2img(name, steps, model, guidance, image_rng, schedule, parameters=parameters)
    init = cases.toy_init_latent(len(seeds))
    return pipeline.sample_img2img(
        name, steps, model, guidance, image_rng, init, denoise, schedule=schedule, parameters=parameters
    )


# ---------------------------------------------------------------------------------------------------
# Noise


def test_philox_reproduces_a1111_documented_values():
    expected = np.array(
        [
            [-0.92466259, -0.42534415, -2.6438457, 0.14518388],
            [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
            [-1.07454231, -0.36314407, -1.67105067, 2.26550497],
        ]
    )
    # A1111's docstring shows real CUDA output; its numpy Philox is a few ulp away from it (<= 2.7e-7).
    np.testing.assert_allclose(rng.PhiloxGenerator(0).randn((3, 4)), expected, rtol=0, atol=3e-7)


def test_philox_is_bit_equal_to_a1111_and_advances_per_call(goldens):
    generator = rng.PhiloxGenerator(2**32 + 7)
    draws = np.stack([generator.randn((3, 5)), generator.randn((3, 5))])
    np.testing.assert_array_equal(draws, goldens["philox/4294967303"])
    assert generator.offset == 2
    assert not np.array_equal(draws[0], draws[1])


NOISE_VARIANTS = {**cases.NOISE_VARIANTS, "ensd": {"eta_noise_seed_delta": cases.ENSD}}


@pytest.mark.parametrize("source", ["CPU", "NV"])
@pytest.mark.parametrize("variant", sorted(NOISE_VARIANTS))
def test_image_noise_matches_a1111(goldens, source, variant):
    image_rng = cpu_rng(cases.SEEDS, source=source, **NOISE_VARIANTS[variant])
    draws = torch.stack([image_rng.next() for _ in range(3)]).numpy()
    np.testing.assert_allclose(draws, goldens[f"noise/{source}/{variant}"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("source", ["CPU", "NV"])
def test_brownian_tree_matches_a1111(goldens, source):
    noise_source = rng.NoiseSource(rng.RandnSource(source))
    x = torch.zeros(2, *cases.LATENT_SHAPE)
    sampler = rng.BrownianTreeNoiseSampler(x, torch.tensor(0.03), torch.tensor(14.6), cases.SEEDS, noise_source)
    queries = [(14.6, 7.0), (7.0, 1.5), (0.5, 0.03)]
    values = torch.stack([sampler(torch.tensor(a), torch.tensor(b)) for a, b in queries]).numpy()
    np.testing.assert_allclose(values, goldens[f"brownian/{source}"], rtol=1e-5, atol=1e-5)


def test_brownian_tree_leaves_torchsde_as_it_was():
    before = torchsde_interval._randn
    sampler = rng.BrownianTreeNoiseSampler(torch.zeros(1, 4, 2, 2), 0.1, 10.0, [3], rng.NoiseSource(rng.RandnSource.NV))
    sampler(torch.tensor(5.0), torch.tensor(1.0))
    assert torchsde_interval._randn is before


def test_subseed_strength_zero_is_no_variation():
    plain = cpu_rng(cases.SEEDS).next()
    varied = cpu_rng(cases.SEEDS, subseeds=[99, 100], subseed_strength=0.0).next()
    assert torch.equal(plain, varied)
    assert not torch.equal(plain, cpu_rng(cases.SEEDS, subseeds=[99, 100], subseed_strength=0.1).next())


def test_subseed_strength_one_is_the_subseed_noise():
    full = cpu_rng([5], subseeds=[99], subseed_strength=1.0).next()
    torch.testing.assert_close(full, cpu_rng([99]).next(), rtol=1e-5, atol=1e-5)


def test_resize_from_the_same_size_is_no_resize():
    height, width = cases.LATENT_SHAPE[1] * 8, cases.LATENT_SHAPE[2] * 8
    plain = cpu_rng(cases.SEEDS).next()
    resized = cpu_rng(cases.SEEDS, seed_resize_from_h=height, seed_resize_from_w=width).next()
    assert torch.equal(plain, resized)


def test_batch_image_noise_equals_single_run_of_its_seed():
    batch = cpu_rng([40, 41, 42], source="NV")
    singles = [cpu_rng([seed], source="NV") for seed in (40, 41, 42)]
    for _ in range(3):
        drawn = batch.next()
        for index, single in enumerate(singles):
            assert torch.equal(drawn[index], single.next()[0])


def test_slerp_fallback_keeps_a1111_swapped_weights():
    low = torch.ones(1, 3, 2)
    assert torch.equal(rng.slerp(0.25, low, low * 2), low * 0.25 + low * 2 * 0.75)


# ---------------------------------------------------------------------------------------------------
# Schedules


@pytest.mark.parametrize("label", cases.SCHEDULE_LABELS)
@pytest.mark.parametrize("steps", [7, 11])
def test_schedule_matches_a1111(goldens, label, steps):
    table = schedules.DiscreteSigmas(schedules.ldm_alphas_cumprod())
    plan = schedules.compute_sigmas(steps, label, table)
    np.testing.assert_allclose(plan.sigmas.numpy(), goldens[f"schedule/{label}/{steps}"], rtol=1e-6, atol=0)
    assert plan.infotext["Schedule type"] == label


@pytest.mark.parametrize(
    ("key", "options", "discard"),
    [
        ("Karras/7/discard", schedules.ScheduleOptions(), True),
        ("Karras/7/rho5", schedules.ScheduleOptions(rho=5.0), False),
        ("Karras/7/old", schedules.ScheduleOptions(use_old_karras_scheduler_sigmas=True), False),
        ("Exponential/7/range", schedules.ScheduleOptions(sigma_max=5.0), False),
        ("Align Your Steps/7/sdxl", schedules.ScheduleOptions(is_sdxl=True), False),
    ],
)
def test_schedule_options_match_a1111(goldens, key, options, discard):
    table = schedules.DiscreteSigmas(schedules.ldm_alphas_cumprod())
    label = key.split("/")[0]
    plan = schedules.compute_sigmas(7, label, table, options, sampler_discards_penultimate=discard)
    np.testing.assert_allclose(plan.sigmas.numpy(), goldens[f"schedule/{key}"], rtol=1e-6, atol=0)


def test_lcm_table_schedule_matches_a1111(goldens):
    table = schedules.LCMSigmas(schedules.ldm_alphas_cumprod())
    np.testing.assert_allclose(table.get_sigmas(7).numpy(), goldens["schedule/lcm/7"], rtol=1e-6, atol=0)


def test_always_discard_option_drops_the_penultimate_sigma_and_says_so():
    table = schedules.DiscreteSigmas(schedules.ldm_alphas_cumprod())
    plain = schedules.compute_sigmas(6, "Karras", table).sigmas
    discarded = schedules.compute_sigmas(6, "Karras", table, schedules.ScheduleOptions(True))
    assert len(discarded.sigmas) == len(plain) == 7
    assert discarded.infotext["Discard penultimate sigma"] is True
    assert discarded.sigmas[-1] == 0 and discarded.sigmas[-2] > plain[-2]


def test_automatic_uses_the_sampler_default():
    table = schedules.DiscreteSigmas(schedules.ldm_alphas_cumprod())
    automatic = schedules.compute_sigmas(5, "Automatic", table, sampler_default="karras").sigmas
    assert torch.equal(automatic, schedules.compute_sigmas(5, "Karras", table).sigmas)
    assert torch.equal(schedules.compute_sigmas(5, None, table).sigmas, table.get_sigmas(5))


def test_model_sigma_range_and_alphas_cumprod_are_ldm_float64():
    table = schedules.DiscreteSigmas(schedules.ldm_alphas_cumprod())
    assert torch.equal(schedules.ldm_alphas_cumprod(), cases.ldm_alphas_cumprod())
    assert table.sigmas[0].item() == pytest.approx(0.0291675, abs=1e-6)
    assert table.sigmas[-1].item() == pytest.approx(14.614642, abs=1e-5)
    rescaled = schedules.ldm_alphas_cumprod(zero_terminal_snr=True)
    assert rescaled[-1].item() == pytest.approx(4.8973451890853435e-08)


def test_ddim_timesteps_follow_a1111():
    assert schedules.ddim_timesteps(20).tolist() == list(range(1, 1000, 50))
    assert len(schedules.ddim_timesteps(30)) == 31
    assert schedules.ddim_timesteps(30)[-1] == 991
    assert schedules.ddim_timesteps(20, discard_penultimate=True).tolist() == list(range(1, 1000, 47))  # 22 values


# ---------------------------------------------------------------------------------------------------
# Samplers against k-diffusion / A1111


@pytest.mark.parametrize(("key", "name", "schedule", "prediction", "options"), cases.SAMPLER_CASES)
def test_sampler_matches_golden(goldens, key, name, schedule, prediction, options):
    seeds = cases.SEEDS[:1] if key in cases.SINGLE_IMAGE_CASES else cases.SEEDS
    result = run_sampler(name, schedule, prediction, seeds, **options)
    np.testing.assert_allclose(result.latents.numpy(), goldens[f"sampler/{key}"], rtol=RTOL, atol=ATOL)


def test_every_a1111_sampler_is_in_the_catalogue():
    assert catalogue.sampler_names() == [
        "DPM++ 2M",
        "DPM++ SDE",
        "DPM++ 2M SDE",
        "DPM++ 2M SDE Heun",
        "DPM++ 2S a",
        "DPM++ 3M SDE",
        "Euler a",
        "Euler",
        "LMS",
        "Heun",
        "DPM2",
        "DPM2 a",
        "DPM fast",
        "DPM adaptive",
        "Restart",
        "DDIM",
        "DDIM CFG++",
        "PLMS",
        "UniPC",
        "LCM",
    ]
    assert catalogue.find_sampler("k_euler_a").name == "Euler a"
    with pytest.raises(ValueError, match="unknown sampler"):
        catalogue.find_sampler("Euler b")


def test_ensd_changes_only_samplers_that_use_noise_after_the_first_step():
    changed = set()
    for name in catalogue.sampler_names():
        plain = run_sampler(name, seeds=(7,), steps=6).latents
        if not torch.equal(plain, run_sampler(name, seeds=(7,), steps=6, ensd=31337).latents):
            changed.add(name)
    assert changed == {"Euler a", "DPM2 a", "DPM++ 2S a", "DPM fast", "DPM adaptive", "LCM"}


def test_ensd_reaches_churn_ddim_eta_and_restarts():
    for name, options in [("Euler", {"s_churn": 1.0}), ("DDIM", {"eta": 0.5}), ("Restart", {"steps": 20})]:
        plain = run_sampler(name, seeds=(7,), **options).latents
        assert not torch.equal(plain, run_sampler(name, seeds=(7,), ensd=5, **options).latents), name


def test_ensd_infotext_only_for_ancestral_samplers():
    assert run_sampler("Euler a", seeds=(7,), steps=2, ensd=31337).infotext["ENSD"] == 31337
    assert "ENSD" not in run_sampler("Euler", seeds=(7,), steps=2, ensd=31337).infotext
    assert "ENSD" not in run_sampler("Euler a", seeds=(7,), steps=2, ensd=31337, eta=0.0).infotext


@pytest.mark.parametrize("name", ["Euler a", "DPM++ SDE", "DPM++ 2M SDE", "DDIM", "DPM2 a", "LCM"])
def test_batch_image_equals_single_run_of_its_seed(name):
    batch = run_sampler(name, seeds=(11, 12), steps=4).latents
    # The toy model's conditioning rows differ per image; give the single run image 1's rows.
    cond, uncond = cases.toy_conditioning(2)
    model = pipeline.DiffusionModel(toy_unet, schedules.ldm_alphas_cumprod())
    guidance = pipeline.Guidance(MultiCond.single(cond[1:]), uncond[1:], cases.CFG_SCALE)
    single = pipeline.sample_txt2img(name, 4, model, guidance, cpu_rng([12])).latents
    torch.testing.assert_close(single[0], batch[1], rtol=1e-5, atol=1e-5)


def test_ddim_at_eta_zero_is_deterministic_and_calls_the_model_len_minus_one_times():
    calls: list[float] = []

    def counting_unet(x, t, cond):
        calls.append(t[0].item())
        return toy_unet(x, t, cond)

    first = run_sampler("DDIM", seeds=(3,), steps=20, unet=counting_unet).latents
    assert calls == [float(t) for t in range(951, 50, -50)]  # 19 calls, 951 ... 51
    assert torch.equal(first, run_sampler("DDIM", seeds=(3,), steps=20).latents)


def test_sampler_parameters_follow_a1111_option_rules():
    euler = catalogue.find_sampler("Euler")
    kwargs, infotext = catalogue.SamplerParameters(s_churn=0.5, s_tmax=0.0).keyword_arguments(euler)
    assert kwargs == {"s_churn": 0.5} and infotext == {"Sigma churn": 0.5}
    ddim = catalogue.find_sampler("DDIM")
    assert catalogue.SamplerParameters(eta_ddim=0.3).keyword_arguments(ddim) == ({"eta": 0.3}, {"Eta DDIM": 0.3})
    euler_a = catalogue.find_sampler("Euler a")
    assert catalogue.SamplerParameters().keyword_arguments(euler_a) == ({"eta": 1.0}, {})
    assert catalogue.SamplerParameters(eta=0.5).keyword_arguments(euler_a) == ({"eta": 0.5}, {"Eta": 0.5})
    assert catalogue.SamplerParameters(s_noise=0.9).keyword_arguments(catalogue.find_sampler("LMS")) == ({}, {})


def test_legacy_sampler_names_split_off_their_schedule():
    assert catalogue.parse_sampler_and_schedule("DPM++ 2M Karras", None) == ("DPM++ 2M", "Automatic")
    assert catalogue.parse_sampler_and_schedule("Euler a Karras", None) == ("Euler a", "Karras")
    assert catalogue.parse_sampler_and_schedule("Euler", "Exponential") == ("Euler", "Exponential")
    assert catalogue.parse_sampler_and_schedule("DPM++ 2M", "Karras") == ("DPM++ 2M", "Automatic")


def test_img2img_runs_t_enc_plus_one_steps_from_the_noised_latent():
    assert pipeline.img2img_steps(20, 0.5) == (20, 10)
    assert pipeline.img2img_steps(20, 0.5, img2img_fix_steps=True) == (40, 19)
    sigmas_seen: list[float] = []

    def recording_unet(x, t, cond):
        sigmas_seen.append(t[0].item())
        return toy_unet(x, t, cond)

    cond, uncond = cases.toy_conditioning(1)
    model = pipeline.DiffusionModel(recording_unet, schedules.ldm_alphas_cumprod())
    guidance = pipeline.Guidance(MultiCond.single(cond), uncond, cases.CFG_SCALE)
    init = torch.zeros(1, *cases.LATENT_SHAPE)
    pipeline.sample_img2img("Euler", 10, model, guidance, cpu_rng([1]), init, denoising_strength=0.5)
    assert len(sigmas_seen) == 6  # t_enc = 5, six Euler steps on the tail of the full schedule


# ---------------------------------------------------------------------------------------------------
# CFG


def test_cfg_orders_cond_rows_before_uncond_and_applies_and_weights():
    seen = {}

    def inner(x, sigma, cond):
        seen["text"] = cond.text.clone()
        return cond.text[:, :1, :1].reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()

    rows = torch.tensor([1.0, 3.0, 5.0]).reshape(3, 1, 1)  # image 0: rows 0 and 1 (AND), image 1: row 2
    uncond = torch.tensor([10.0, 20.0]).reshape(2, 1, 1)
    multicond = MultiCond(rows, [[(0, 1.0), (1, 0.5)], [(2, 1.0)]])
    cfg = CFGDenoiser(inner, multicond, uncond, cond_scale=2.0)
    out = cfg(torch.zeros(2, 1, 2, 2), torch.ones(2))
    assert seen["text"].flatten().tolist() == [1.0, 3.0, 5.0, 10.0, 20.0]
    assert out[0, 0, 0, 0].item() == 10 + 2 * (1 - 10) + 1.0 * (3 - 10)
    assert out[1, 0, 0, 0].item() == 20 + 2 * (5 - 20)
    assert cfg.step == 1


def test_cfg_runs_cond_and_uncond_separately_when_token_lengths_differ():
    calls = []

    def inner(x, sigma, cond):
        calls.append(tuple(cond.text.shape))
        return x + cond.text.mean((1, 2)).reshape(-1, 1, 1, 1)

    long_cond = torch.ones(1, 154, 2)
    cfg = CFGDenoiser(inner, MultiCond.single(long_cond), torch.zeros(1, 77, 2), cond_scale=3.0)
    out = cfg(torch.zeros(1, 1, 2, 2), torch.ones(1))
    assert calls == [(1, 154, 2), (1, 77, 2)]
    assert torch.equal(out, torch.full((1, 1, 2, 2), 3.0))


def test_s_min_uncond_skips_the_uncond_rows_every_other_step_below_the_sigma():
    batches = []

    def inner(x, sigma, cond):
        batches.append(x.shape[0])
        return x

    cfg = CFGDenoiser(inner, MultiCond.single(torch.ones(1, 2, 2)), torch.zeros(1, 2, 2), 7.0, s_min_uncond=1.0)
    for sigma in (5.0, 5.0, 0.5, 0.5):
        cfg(torch.zeros(1, 1, 1, 1), torch.tensor([sigma]))
    assert batches == [2, 2, 2, 1]
    assert cfg.infotext == {"NGMS": 1.0}


# ---------------------------------------------------------------------------------------------------
# Layering


# The backend's adapter over Easel's loaded model, prompts and progress; the core below it stays importable alone.
ADAPTER_FILES = {"backend.py", "unet.py", "conditioning.py", "images.py"}


def test_core_imports_only_torch_numpy_scipy_torchsde_and_itself():
    allowed = ("torch", "numpy", "scipy", "torchsde", "modules.backends.original", "__future__")
    for path in PACKAGE.glob("*.py"):
        if path.name in ADAPTER_FILES:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert name.startswith(allowed) or top in _STDLIB, f"{path.name} imports {name}"


_STDLIB = {"contextlib", "enum", "threading", "collections", "dataclasses", "typing", "math", "inspect", "itertools"}


def test_image_seeds_count_up_seeds_or_only_subseeds():
    assert rng.image_seeds(10, 50, 0.0, 3) == ([10, 11, 12], [50, 51, 52])
    assert rng.image_seeds(10, 50, 0.4, 3) == ([10, 10, 10], [50, 51, 52])


def test_img2img_noise_multiplier_and_extra_noise_are_applied_and_reported():
    cond, uncond = cases.toy_conditioning(1)
    model = pipeline.DiffusionModel(toy_unet, schedules.ldm_alphas_cumprod())
    guidance = pipeline.Guidance(MultiCond.single(cond), uncond, cases.CFG_SCALE)
    init = torch.zeros(1, *cases.LATENT_SHAPE)

    def run(**kwargs):
        return pipeline.sample_img2img("DDIM", 10, model, guidance, cpu_rng([1]), init, 0.5, **kwargs)

    plain = run()
    scaled = run(initial_noise_multiplier=0.9, extra_noise=0.1)
    assert scaled.infotext == {"Noise multiplier": 0.9, "Extra noise": 0.1}
    assert not torch.equal(plain.latents, scaled.latents)


def test_inpaint_blend_keeps_the_masked_latent():
    cond, uncond = cases.toy_conditioning(1)
    init = torch.full((1, *cases.LATENT_SHAPE), 0.25)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1.0  # keep the left half
    blend = InpaintBlend(init, mask, 1 - mask)
    model = pipeline.DiffusionModel(toy_unet, schedules.ldm_alphas_cumprod())
    guidance = pipeline.Guidance(MultiCond.single(cond), uncond, cases.CFG_SCALE, blend=blend)
    for name in ("Euler a", "DDIM"):
        result = pipeline.sample_img2img(name, 8, model, guidance, cpu_rng([2]), init, 0.75).latents
        assert torch.equal(result[..., :2], init[..., :2])
        assert not torch.equal(result[..., 2:], init[..., 2:])


def test_cfg_takes_mapping_conditioning_and_per_step_prompts():
    seen = []

    def inner(x, sigma, cond):
        seen.append({key: value.clone() for key, value in cond.text.items()})
        return x + cond.text["vector"].reshape(-1, 1, 1, 1)

    def cond_at(step: int) -> MultiCond:
        return MultiCond.single({"crossattn": torch.zeros(1, 77, 2), "vector": torch.tensor([[float(step)]])})

    uncond = {"crossattn": torch.zeros(1, 77, 2), "vector": torch.tensor([[-1.0]])}
    cfg = CFGDenoiser(inner, cond_at, uncond, cond_scale=2.0)
    outputs = [cfg(torch.zeros(1, 1, 1, 1), torch.ones(1)).item() for _ in range(2)]
    assert [entry["vector"].flatten().tolist() for entry in seen] == [[0.0, -1.0], [1.0, -1.0]]
    assert outputs == [-1 + 2 * (0 + 1), -1 + 2 * (1 + 1)]


def test_skip_early_cond_drops_the_uncond_rows_for_the_first_steps():
    batches = []

    def inner(x, sigma, cond):
        batches.append(x.shape[0])
        return x

    cfg = CFGDenoiser(
        inner, MultiCond.single(torch.ones(1, 2, 2)), torch.zeros(1, 2, 2), 7.0, skip_early_cond=0.25, total_steps=8
    )
    for _ in range(4):
        cfg(torch.zeros(1, 1, 1, 1), torch.tensor([3.0]))
    assert batches == [1, 1, 1, 2]  # steps 0, 1, 2 are <= 25 % of 8
    assert cfg.infotext == {"Skip Early CFG": 0.25}


def test_prediction_from_diffusers_names():
    assert Prediction.from_diffusers("epsilon") == Prediction.EPSILON
    assert Prediction.from_diffusers("v_prediction") == Prediction.V
    with pytest.raises(ValueError, match="sample"):
        Prediction.from_diffusers("sample")


def test_gpu_source_on_a_cpu_only_device_is_the_cpu_generator_and_writes_no_infotext():
    gpu = rng.ImageRNG(cases.LATENT_SHAPE, [9], source=rng.NoiseSource(rng.RandnSource.GPU, torch.device("cpu")))
    assert torch.equal(gpu.next(), cpu_rng([9]).next())
    assert rng.NoiseSource().infotext() == {}
    assert rng.NoiseSource(rng.RandnSource.NV).infotext() == {"RNG": "NV"}
