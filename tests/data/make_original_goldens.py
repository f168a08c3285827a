"""Make ``tests/data/original_goldens.npz``: reference results from k-diffusion's and A1111's own code.

The original backend (``modules/backends/original``) is Easel's own code; this script computes what the
real implementations return on the cases of ``tests/original_support.py``, so the tests can compare.

    pip download k-diffusion==0.1.1.post1 --no-deps -d /tmp/kd && cd /tmp/kd && unzip -q k_diffusion-*.whl
    git clone https://github.com/AUTOMATIC1111/stable-diffusion-webui /tmp/a1111 && git -C /tmp/a1111 checkout 82a973c0
    python tests/data/make_original_goldens.py /tmp/kd/k_diffusion/sampling.py --a1111 /tmp/a1111

k-diffusion's ``sampling.py`` (byte-identical in 0.0.16, the version A1111 v1.10.1 pins, and 0.1.1.post1)
is imported as a single file with ``external.py`` beside it; its package ``utils`` and ``torchdiffeq`` are
replaced by stubs (only ``append_dims`` is used). From A1111 (commit 82a973c0) the script imports
``modules/rng.py``, ``rng_philox.py``, ``sd_schedulers.py``, ``sd_samplers_extra.py``, ``sd_samplers_lcm.py``,
``sd_samplers_timesteps_impl.py`` and ``models/diffusion/uni_pc/uni_pc.py`` with stub ``shared`` /
``devices`` modules (CPU, float32). The glue that A1111 keeps in heavier files (its sampler table, CFG
batching, ``TorchHijack``, the torchsde noise hook) is restated below from A1111-SAMPLING.md.
Run it from the repository root; it writes the .npz next to itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import sys
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests import original_support as cases  # noqa: E402

OUTPUT = Path(__file__).resolve().parent / "original_goldens.npz"


def load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def stub(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []
    module.__dict__.update(attributes)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def load_k_diffusion(sampling_path: Path) -> tuple[types.ModuleType, types.ModuleType]:
    stub("torchdiffeq", odeint=None)
    stub("k_diffusion")
    stub("k_diffusion.utils", append_dims=lambda x, n: x[(...,) + (None,) * (n - x.ndim)])
    sampling = load_file("k_diffusion.sampling", sampling_path)
    external = load_file("k_diffusion.external", sampling_path.parent / "external.py")
    sys.modules["k_diffusion"].sampling = sampling
    sys.modules["k_diffusion"].external = external
    return sampling, external


class Options(types.SimpleNamespace):
    pass


def load_a1111(root: Path, opts: Options, sd_model) -> dict[str, types.ModuleType]:
    modules_dir = root / "modules"
    cpu = torch.device("cpu")
    stub("modules")
    stub("modules.devices", device=cpu, cpu=cpu)
    stub("modules.shared", opts=opts, sd_model=sd_model, device=cpu)
    stub("modules.torch_utils", float64=lambda t: torch.float64)
    stub("modules.models")
    stub("modules.models.diffusion")
    stub("modules.models.diffusion.uni_pc")
    stub("modules.sd_samplers_cfg_denoiser", CFGDenoiser=object)
    stub("modules.sd_samplers_kdiffusion", KDiffusionSampler=object)
    stub("modules.sd_samplers_common", SamplerData=lambda *args: args)
    loaded = {}
    for name in ("rng_philox", "rng", "sd_schedulers", "sd_samplers_extra", "sd_samplers_lcm"):
        loaded[name] = load_file(f"modules.{name}", modules_dir / f"{name}.py")
        setattr(sys.modules["modules"], name, loaded[name])
    uni_pc = load_file("modules.models.diffusion.uni_pc.uni_pc", modules_dir / "models/diffusion/uni_pc/uni_pc.py")
    sys.modules["modules.models.diffusion.uni_pc"].uni_pc = uni_pc
    loaded["timesteps"] = load_file("modules.sd_samplers_timesteps_impl", modules_dir / "sd_samplers_timesteps_impl.py")
    return loaded


class ToyLDM:
    """What k-diffusion's CompVis wrappers and A1111's LCM wrapper see of an SD model."""

    def __init__(self, prediction: str) -> None:
        self.alphas_cumprod = cases.ldm_alphas_cumprod()
        self.device = torch.device("cpu")
        self.parameterization = prediction
        self.is_sdxl = False

    def apply_model(self, x, t, cond, **_):
        return cases.toy_output(x, t, cond)


class TorchWithImageNoise:
    """A1111's TorchHijack: k-diffusion's ``torch`` with ``randn_like`` from the per-image generators."""

    def __init__(self, image_rng) -> None:
        self.image_rng = image_rng

    def __getattr__(self, name):
        if name == "randn_like":
            return lambda x: self.image_rng.next()
        return getattr(torch, name)


class CFG:
    """A1111's CFG for one prompt per image: one batch [cond, uncond], guidance on the model output."""

    def __init__(self, inner, cond, uncond, scale, inner_ldm) -> None:
        self.inner, self.cond, self.uncond, self.scale = inner, cond, uncond, scale
        self.inner_model = types.SimpleNamespace(inner_model=inner_ldm)
        self.cond_scale_miltiplier = 1.0
        self.need_last_noise_uncond = False
        self.last_noise_uncond = None

    def __call__(self, x, sigma, **_):
        batch = x.shape[0]
        out = self.inner(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=torch.cat([self.cond, self.uncond]))
        uncond = out[batch:]
        if self.need_last_noise_uncond:
            self.last_noise_uncond = torch.clone(uncond)
        denoised = torch.clone(uncond)
        for i in range(batch):
            denoised[i] += (out[i] - uncond[i]) * (1.0 * self.scale * self.cond_scale_miltiplier)
        return denoised


class TimestepsModel:
    """A1111's CompVisTimesteps(V)Denoiser: the UNet at integer timesteps, v converted to eps."""

    def __init__(self, ldm: ToyLDM) -> None:
        self.ldm = ldm

    def __call__(self, x, t, cond):
        out = self.ldm.apply_model(x, t, cond)
        if self.ldm.parameterization != "v":
            return out
        ac = self.ldm.alphas_cumprod
        index = t.to(torch.int)
        return torch.sqrt(ac)[index, None, None, None] * out + torch.sqrt(1 - ac)[index, None, None, None] * x


# A1111's sampler table (sd_samplers_kdiffusion.py): function, default scheduler, discard, brownian, extra.
K_SAMPLERS = {
    "DPM++ 2M": ("sample_dpmpp_2m", "karras", False, False, {}),
    "DPM++ SDE": ("sample_dpmpp_sde", "karras", False, True, {}),
    "DPM++ 2M SDE": ("sample_dpmpp_2m_sde", "exponential", False, True, {}),
    "DPM++ 2M SDE Heun": ("sample_dpmpp_2m_sde", "exponential", False, True, {"solver_type": "heun"}),
    "DPM++ 2S a": ("sample_dpmpp_2s_ancestral", "karras", False, False, {}),
    "DPM++ 3M SDE": ("sample_dpmpp_3m_sde", "exponential", True, True, {}),
    "Euler a": ("sample_euler_ancestral", None, False, False, {}),
    "Euler": ("sample_euler", None, False, False, {}),
    "LMS": ("sample_lms", None, False, False, {}),
    "Heun": ("sample_heun", None, False, False, {}),
    "DPM2": ("sample_dpm_2", "karras", True, False, {}),
    "DPM2 a": ("sample_dpm_2_ancestral", "karras", True, False, {}),
    "DPM fast": ("sample_dpm_fast", None, False, False, {}),
    "DPM adaptive": ("sample_dpm_adaptive", None, False, False, {}),
    "Restart": ("restart", "karras", False, False, {}),
    "LCM": ("lcm", None, False, False, {}),
}
TIMESTEP_SAMPLERS = {"DDIM": "ddim", "DDIM CFG++": "ddim_cfgpp", "PLMS": "plms", "UniPC": "unipc"}


class Goldens:
    def __init__(self, kd_sampling, kd_external, a1111, opts) -> None:
        self.kd, self.external, self.a1111, self.opts = kd_sampling, kd_external, a1111, opts

    def sigmas(self, model_wrap, label, steps, discard=False, **overrides):
        schedulers = self.a1111["sd_schedulers"]
        steps += 1 if discard else 0
        scheduler = schedulers.schedulers_map.get(label)
        if scheduler is None or scheduler.function is None:
            sigmas = model_wrap.get_sigmas(steps)
        else:
            kwargs = {"sigma_min": model_wrap.sigmas[0].item(), "sigma_max": model_wrap.sigmas[-1].item()}
            kwargs.update(overrides)
            if scheduler.need_inner_model:
                kwargs["inner_model"] = model_wrap
            sigmas = scheduler.function(n=steps, **kwargs, device=torch.device("cpu"))
        if discard:
            sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
        return sigmas.cpu()

    def image_rng(self, seeds, **kwargs):
        return self.a1111["rng"].ImageRNG(cases.LATENT_SHAPE, list(seeds), **kwargs)

    def run_case(self, name, prediction, schedule, options):
        options = dict(options)
        steps = options.pop("steps", cases.STEPS)
        for key in ("uni_pc_variant", "uni_pc_skip_type"):
            if key in options:
                setattr(self.opts, key, options.pop(key))
        seeds = cases.SEEDS[:1] if options.pop("single", False) else cases.SEEDS
        denoise = options.pop("denoise", None)
        init = None if denoise is None else cases.toy_init_latent(len(seeds))
        ldm = ToyLDM(prediction)
        cond, uncond = cases.toy_conditioning(len(seeds))
        image_rng = self.image_rng(seeds)
        self.kd.torch = TorchWithImageNoise(image_rng)
        try:
            if name in TIMESTEP_SAMPLERS:
                return self.run_timesteps(name, ldm, cond, uncond, image_rng, steps, options, init, denoise)
            return self.run_k(name, ldm, cond, uncond, image_rng, seeds, steps, schedule, options, init, denoise)
        finally:
            self.kd.torch = torch
            self.opts.uni_pc_variant, self.opts.uni_pc_skip_type = "bh1", "time_uniform"

    def run_k(self, name, ldm, cond, uncond, image_rng, seeds, steps, schedule, options, init, denoise):
        function_name, default, discard, brownian, extra = K_SAMPLERS[name]
        if name == "LCM":
            model_wrap = self.a1111["sd_samplers_lcm"].LCMCompVisDenoiser(ldm)
        else:
            wrapper = self.external.CompVisVDenoiser if prediction_is_v(ldm) else self.external.CompVisDenoiser
            model_wrap = wrapper(ldm)
        label = schedule or default
        sigmas = self.sigmas(model_wrap, label, steps, discard)
        cfg = CFG(model_wrap, cond, uncond, cases.CFG_SCALE, ldm)
        noise = image_rng.next()
        if init is None:  # txt2img
            run_sigmas, x, tree_x = sigmas, noise * sigmas[0], None
        else:  # img2img: t_enc + 1 steps on the tail of the full schedule
            t_enc = int(min(denoise, 0.999) * steps)
            run_sigmas = sigmas[steps - t_enc - 1 :]
            x, tree_x = init + noise * run_sigmas[0], init
        kwargs = {**extra, **options}
        if function_name == "restart":
            function = self.a1111["sd_samplers_extra"].restart_sampler
        elif function_name == "lcm":
            function = self.a1111["sd_samplers_lcm"].sample_lcm
        else:
            function = getattr(self.kd, function_name)
        parameters = inspect.signature(function).parameters
        if "eta" in parameters and "eta" not in kwargs:
            kwargs["eta"] = 1.0
        if brownian:
            positive = sigmas[sigmas > 0]
            tree_x = x if tree_x is None else tree_x
            tree = self.kd.BrownianTreeNoiseSampler(tree_x, positive.min(), sigmas.max(), seed=list(seeds))
            kwargs["noise_sampler"] = tree
        if "sigma_min" in parameters:
            if init is None:
                kwargs.update(sigma_min=model_wrap.sigmas[0].item(), sigma_max=model_wrap.sigmas[-1].item())
            else:
                kwargs.update(sigma_min=run_sigmas[-2], sigma_max=run_sigmas[0])
            if "n" in parameters:
                kwargs["n"] = steps if init is None else len(run_sigmas) - 1
            return function(cfg, x, extra_args={}, disable=True, **kwargs)
        return function(cfg, x, run_sigmas, extra_args={}, disable=True, **kwargs)

    def run_timesteps(self, name, ldm, cond, uncond, image_rng, steps, options, init, denoise):
        impl = self.a1111["timesteps"]
        timesteps = torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
        cfg = CFG(TimestepsModel(ldm), cond, uncond, cases.CFG_SCALE, ldm)
        x = image_rng.next()
        function = getattr(impl, TIMESTEP_SAMPLERS[name])
        kwargs = dict(options)
        if init is not None:  # img2img: noise to timesteps[t_enc], run the timesteps below it
            t_enc = int(min(denoise, 0.999) * steps)
            alpha = ldm.alphas_cumprod[timesteps[t_enc]]
            x = init * torch.sqrt(alpha) + x * torch.sqrt(1 - alpha)
            timesteps = timesteps[:t_enc]
            if name == "UniPC":
                kwargs["is_img2img"] = True
        if name == "UniPC":
            kwargs["callback"] = lambda info: None
        return function(cfg, x, timesteps, extra_args={}, disable=True, **kwargs)

    def noise(self, source: str) -> dict[str, np.ndarray]:
        self.opts.randn_source = source
        out = {}
        for variant, kwargs in cases.NOISE_VARIANTS.items():
            image_rng = self.image_rng(cases.SEEDS, **kwargs)
            out[f"noise/{source}/{variant}"] = torch.stack([image_rng.next() for _ in range(3)]).numpy()
        self.opts.eta_noise_seed_delta = cases.ENSD
        image_rng = self.image_rng(cases.SEEDS)
        out[f"noise/{source}/ensd"] = torch.stack([image_rng.next() for _ in range(3)]).numpy()
        self.opts.eta_noise_seed_delta = 0
        x = torch.zeros(2, *cases.LATENT_SHAPE)
        tree = self.kd.BrownianTreeNoiseSampler(x, torch.tensor(0.03), torch.tensor(14.6), seed=list(cases.SEEDS))
        queries = [(14.6, 7.0), (7.0, 1.5), (0.5, 0.03)]
        out[f"brownian/{source}"] = torch.stack([tree(torch.tensor(a), torch.tensor(b)) for a, b in queries]).numpy()
        self.opts.randn_source = "CPU"
        return out

    def schedules(self) -> dict[str, np.ndarray]:
        out = {}
        model_wrap = self.external.CompVisDenoiser(ToyLDM("eps"))
        for label in cases.SCHEDULE_LABELS:
            for steps in (7, 11):
                out[f"schedule/{label}/{steps}"] = self.sigmas(model_wrap, label, steps).numpy()
        out["schedule/Karras/7/discard"] = self.sigmas(model_wrap, "Karras", 7, discard=True).numpy()
        out["schedule/Karras/7/rho5"] = self.sigmas(model_wrap, "Karras", 7, rho=5.0).numpy()
        out["schedule/Karras/7/old"] = self.sigmas(model_wrap, "Karras", 7, sigma_min=0.1, sigma_max=10).numpy()
        out["schedule/Exponential/7/range"] = self.sigmas(model_wrap, "Exponential", 7, sigma_max=5.0).numpy()
        self.a1111["sd_schedulers"].shared.sd_model.is_sdxl = True
        out["schedule/Align Your Steps/7/sdxl"] = self.sigmas(model_wrap, "Align Your Steps", 7).numpy()
        self.a1111["sd_schedulers"].shared.sd_model.is_sdxl = False
        lcm_wrap = self.a1111["sd_samplers_lcm"].LCMCompVisDenoiser(ToyLDM("eps"))
        out["schedule/lcm/7"] = lcm_wrap.get_sigmas(7).numpy()
        return out


def prediction_is_v(ldm: ToyLDM) -> bool:
    return ldm.parameterization == "v"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sampling_py", type=Path, help="k-diffusion's k_diffusion/sampling.py")
    parser.add_argument("--a1111", type=Path, required=True, help="an A1111 v1.10.1 checkout (commit 82a973c0)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    kd_sampling, kd_external = load_k_diffusion(args.sampling_py)
    opts = Options(
        randn_source="CPU",
        eta_noise_seed_delta=0,
        beta_dist_alpha=0.6,
        beta_dist_beta=0.6,
        uni_pc_variant="bh1",
        uni_pc_skip_type="time_uniform",
        uni_pc_order=3,
        uni_pc_lower_order_final=True,
    )
    a1111 = load_a1111(args.a1111, opts, ToyLDM("eps"))
    rng = a1111["rng"]

    def torchsde_randn(size, dtype, device, seed):  # A1111's torchsde hook: tree noise from the RNG source
        return rng.randn_local(seed, size).to(device=device, dtype=dtype)

    import torchsde._brownian.brownian_interval as interval

    interval._randn = torchsde_randn
    goldens = Goldens(kd_sampling, kd_external, a1111, opts)
    arrays = {**goldens.schedules(), **goldens.noise("CPU"), **goldens.noise("NV")}
    philox = a1111["rng_philox"].Generator(2**32 + 7)
    arrays["philox/4294967303"] = np.stack([philox.randn((3, 5)), philox.randn((3, 5))])
    for key, name, schedule, prediction, options in cases.SAMPLER_CASES:
        options = {**options, "single": key in cases.SINGLE_IMAGE_CASES}
        arrays[f"sampler/{key}"] = goldens.run_case(name, prediction, schedule, options).numpy()
        print(f"{key}: {arrays[f'sampler/{key}'].ravel()[:3]}")
    np.savez_compressed(OUTPUT, **arrays)
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes, {len(arrays)} arrays)")


if __name__ == "__main__":
    main()
