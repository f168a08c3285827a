"""Easel's txt2img with each compute setting against plain diffusers (eager, fp16, SDPA) on the same request.

Random-weight SD 1.5-shaped and SDXL-shaped checkpoints (speed needs no trained weights); plain and Easel runs
interleaved in one process; medians. Prints, per shape and setting: it/s, the ratio to plain diffusers, peak VRAM,
PSNR against the plain eager image, load + compile warm-up seconds, and whether the second job recompiled.
Targets (issue 18): SD 1.5 512x512 >= 2.0x and SDXL 1024x1024 >= 1.5x with exact methods (PSNR >= 35 dB).

Usage (GPU):  venv/bin/python benchmarks/gpu_speed.py [--shapes sd15,sdxl] [--steps 20] [--runs 3] [--out f.json]
CPU check:    venv/bin/python benchmarks/gpu_speed.py --device cpu --tiny --steps 4 --runs 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffusers import DiffusionPipeline

from benchmarks.random_models import NATIVE_SIZE, write_random_checkpoint
from modules.backends.diffusers_backend import DiffusersBackend
from modules.backends.diffusers_backend.schedulers import build_scheduler
from modules.compute import ComputeSettings, apply_backend_flags
from modules.devices import Attention, MemoryPolicy
from modules.models.hashing import HashCache
from modules.models.manager import ModelManager, free_memory
from modules.models.registry import CheckpointRegistry
from modules.models.service import ModelService
from modules.options import Options
from modules.paths import DataPaths
from modules.processing.processing import ProcessingContext, process
from modules.processing.requests import Txt2ImgRequest

PROMPT, NEGATIVE, SEED = "a lighthouse on a cliff at sunset, detailed", "blurry", 42
EXACT_BEST = ComputeSettings(
    compile_unet=True,
    compile_vae=True,
    compile_mode="max-autotune",
    channels_last=True,
    fuse_qkv=True,
    cudnn_benchmark=True,
)
VARIANTS: dict[str, tuple[ComputeSettings, Attention]] = {
    "easel eager": (ComputeSettings(), Attention.SDP),
    "channels_last": (ComputeSettings(channels_last=True), Attention.SDP),
    "fused qkv": (ComputeSettings(fuse_qkv=True), Attention.SDP),
    "cudnn benchmark": (ComputeSettings(cudnn_benchmark=True), Attention.SDP),
    "tf32 off": (ComputeSettings(tf32=False), Attention.SDP),
    "xformers": (ComputeSettings(), Attention.XFORMERS),
    "compile": (ComputeSettings(compile_unet=True, compile_vae=True), Attention.SDP),
    "compile max-autotune-no-cudagraphs": (
        ComputeSettings(compile_unet=True, compile_vae=True, compile_mode="max-autotune-no-cudagraphs"),
        Attention.SDP,
    ),
    "compile reduce-overhead (CUDA graphs)": (
        ComputeSettings(compile_unet=True, compile_vae=True, compile_mode="reduce-overhead"),
        Attention.SDP,
    ),
    "fp8 weight": (ComputeSettings(fp8_storage="Enable"), Attention.SDP),
    "token merging 0.5": (ComputeSettings(token_merging_ratio=0.5), Attention.SDP),
    "deepcache 3": (ComputeSettings(deepcache_interval=3), Attention.SDP),
    "best exact (compile max-autotune + channels_last + fused qkv + cudnn)": (EXACT_BEST, Attention.SDP),
}
CPU_VARIANTS = ("easel eager", "channels_last", "fused qkv", "fp8 weight", "token merging 0.5", "deepcache 3")


@dataclass
class Row:
    shape: str
    variant: str
    its: float
    plain_its: float
    ratio: float
    peak_vram_gb: float
    psnr_db: float
    load_seconds: float
    warmup_seconds: float
    recompiled: bool | None


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(function) -> tuple[float, object]:
    synchronize()
    started = time.perf_counter()
    result = function()
    synchronize()
    return time.perf_counter() - started, result


def psnr(first, second) -> float:
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def module_bytes(pipeline) -> int:
    return sum(
        tensor.numel() * tensor.element_size()
        for component in pipeline.components.values()
        if isinstance(component, torch.nn.Module)
        for tensor in (*component.parameters(), *component.buffers())
    )


def peak_gb(function, other_bytes: int) -> tuple[float, object]:
    """(peak VRAM of ``function`` without the weights of the other resident pipeline, its result)."""
    if not torch.cuda.is_available():
        return 0.0, function()
    torch.cuda.reset_peak_memory_stats()
    result = function()
    return (torch.cuda.max_memory_allocated() - other_bytes) / 2**30, result


class Bench:
    def __init__(self, args: argparse.Namespace, shape: str, data_dir: Path) -> None:
        self.args, self.shape = args, shape
        self.size = args.size or NATIVE_SIZE[shape]
        self.paths = DataPaths.create(data_dir)
        self.paths.ensure()
        self.folder = write_random_checkpoint(shape, self.paths.checkpoints_dir / shape, args.device)
        self.dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
        self.plain = DiffusionPipeline.from_pretrained(self.folder, torch_dtype=self.dtype).to(args.device)
        self.plain.set_progress_bar_config(disable=True)
        self.request = Txt2ImgRequest(
            prompt=PROMPT,
            negative_prompt=NEGATIVE,
            steps=args.steps,
            width=self.size,
            height=self.size,
            seed=SEED,
            sampler_name="Euler",
            save_images=False,
        )

    def run_plain(self):
        scheduler = build_scheduler(dict(self.plain.scheduler.config), "Euler", "Automatic")
        generator = [torch.Generator(self.args.device).manual_seed(SEED)]
        view = type(self.plain)(**{**self.plain.components, "scheduler": scheduler})
        view.set_progress_bar_config(disable=True)
        with torch.inference_mode():
            return view(
                prompt=[PROMPT],
                negative_prompt=[NEGATIVE],
                num_inference_steps=self.args.steps,
                width=self.size,
                height=self.size,
                generator=generator,
                guidance_scale=7.0,
            ).images[0]

    def context(self, settings: ComputeSettings, attention: Attention) -> ProcessingContext:
        registry = CheckpointRegistry(self.paths.checkpoint_dirs, HashCache(self.paths.cache_file))
        registry.refresh()
        device = torch.device(self.args.device)
        policy = MemoryPolicy(device=device, dtype=self.dtype, vae_dtype=self.dtype, attention=attention)
        manager = ModelManager(registry, policy, self.paths.configs_dir, compute=settings)
        return ProcessingContext(
            models=ModelService(manager), backend=DiffusersBackend(), options=Options(), paths=self.paths
        )

    def variant(self, name: str, eager_image) -> Row:
        settings, attention = VARIANTS[name]
        apply_backend_flags(settings)
        context = self.context(settings, attention)
        load_seconds, model = timed(lambda: context.models.ensure_loaded())
        warmup = model.compute.warmup_seconds if model.compute else 0.0
        process(self.request, context)  # first job (kernels, allocator; compile was warmed at load)
        recompiled = None
        if settings.compiles:
            torch.compiler.set_stance("fail_on_recompile")
            try:
                process(self.request, context)
                recompiled = False
            except Exception:  # torch raises a RuntimeError subclass on a recompile under this stance
                recompiled = True
            finally:
                torch.compiler.set_stance("default")
        plain_bytes, easel_bytes = module_bytes(self.plain), model.weights_bytes
        easel_times, plain_times, peaks, image = [], [], [], None
        for _ in range(self.args.runs):
            seconds, _ = timed(self.run_plain)
            plain_times.append(seconds)
            seconds, (peak, result) = timed(lambda: peak_gb(lambda: process(self.request, context), plain_bytes))
            easel_times.append(seconds)
            peaks.append(peak)
            image = result.images[0]
        del easel_bytes
        its = self.args.steps / statistics.median(easel_times)
        plain_its = self.args.steps / statistics.median(plain_times)
        context.models.unload()
        apply_backend_flags(ComputeSettings())
        free_memory()
        return Row(
            self.shape,
            name,
            round(its, 3),
            round(plain_its, 3),
            round(its / plain_its, 3),
            round(max(peaks), 3),
            round(psnr(image, eager_image), 2),
            round(load_seconds, 2),
            round(warmup, 2),
            recompiled,
        )


def print_rows(rows: list[Row]) -> None:
    print(
        f"{'shape':6} {'setting':68} {'it/s':>8} {'plain':>8} {'ratio':>6} {'VRAM GB':>8} {'PSNR':>7} "
        f"{'load s':>7} {'warm s':>7} recompiled"
    )
    for row in rows:
        print(
            f"{row.shape:6} {row.variant:68} {row.its:8.2f} {row.plain_its:8.2f} {row.ratio:6.2f} "
            f"{row.peak_vram_gb:8.2f} {row.psnr_db:7.2f} {row.load_seconds:7.1f} {row.warmup_seconds:7.1f} "
            f"{row.recompiled}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model only (checks the script on a CPU)")
    parser.add_argument("--shapes", default="sd15,sdxl")
    parser.add_argument("--variants", default="", help="comma-separated names (default: all; with --tiny a CPU set)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=0, help="image side (default: the shape's native size)")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    shapes = ["tiny"] if args.tiny else args.shapes.split(",")
    names = [name.strip() for name in args.variants.split(",") if name.strip()] or list(
        CPU_VARIANTS if args.device == "cpu" else VARIANTS
    )
    rows: list[Row] = []
    for shape in shapes:
        with tempfile.TemporaryDirectory() as folder:
            bench = Bench(args, shape, Path(folder))
            eager_image = bench.run_plain()
            for name in names:
                rows.append(bench.variant(name, eager_image))
                print_rows(rows[-1:])
            del bench
            free_memory()
    print("\nsummary (ratio = Easel it/s / plain diffusers eager it/s, interleaved, medians):")
    print_rows(rows)
    if args.out:
        args.out.write_text(json.dumps([row.__dict__ for row in rows], indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
