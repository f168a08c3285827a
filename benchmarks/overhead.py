"""Easel's txt2img against the plain diffusers call on the same tiny model and request.

Interleaved runs, medians, and the ratio Easel / diffusers (target <= 1.02). Prints figures only.
Usage: venv/bin/python benchmarks/overhead.py [--runs 15] [--steps 20] [--size 256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffusers import StableDiffusionPipeline

from modules.backends.diffusers_backend import DiffusersBackend
from modules.backends.diffusers_backend.schedulers import build_scheduler
from modules.devices import MemoryPolicy
from modules.models.hashing import HashCache
from modules.models.manager import ModelManager
from modules.models.registry import CheckpointRegistry
from modules.models.service import ModelService
from modules.options import Options
from modules.paths import DataPaths
from modules.processing.processing import ProcessingContext, process
from modules.processing.requests import Txt2ImgRequest
from modules.tiny_model import build_tiny_pipeline, write_diffusers


def build_context(data_dir: Path) -> ProcessingContext:
    paths = DataPaths.create(data_dir)
    paths.ensure()
    write_diffusers(build_tiny_pipeline(), paths.checkpoints_dir / "tiny")
    registry = CheckpointRegistry(paths.checkpoint_dirs, HashCache(paths.cache_file))
    registry.refresh()
    manager = ModelManager(registry, MemoryPolicy.cpu(), paths.configs_dir)
    return ProcessingContext(models=ModelService(manager), backend=DiffusersBackend(), options=Options(), paths=paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        context = build_context(Path(folder))
        model = context.models.ensure_loaded()
        request = Txt2ImgRequest(
            prompt="a lighthouse at dusk",
            negative_prompt="blurry",
            steps=args.steps,
            width=args.size,
            height=args.size,
            seed=42,
            sampler_name="Euler a",
            save_images=False,
        )
        plain = StableDiffusionPipeline(**model.pipeline.components)
        plain.scheduler = build_scheduler(model.scheduler_config, "Euler a", "Automatic")
        plain.set_progress_bar_config(disable=True)

        def run_plain() -> None:
            generator = [torch.Generator("cpu").manual_seed(42)]
            with torch.inference_mode():
                plain(
                    prompt=["a lighthouse at dusk"],
                    negative_prompt=["blurry"],
                    num_inference_steps=args.steps,
                    width=args.size,
                    height=args.size,
                    guidance_scale=7.0,
                    generator=generator,
                )

        def run_easel() -> None:
            process(request, context)

        run_plain()
        run_easel()
        times: dict[object, list[float]] = {run_easel: [], run_plain: []}
        cpu_times: dict[object, list[float]] = {run_easel: [], run_plain: []}
        for index in range(args.runs):
            order = (run_easel, run_plain) if index % 2 == 0 else (run_plain, run_easel)
            for function in order:
                started, cpu_started = time.perf_counter(), time.process_time()
                function()
                times[function].append(time.perf_counter() - started)
                cpu_times[function].append(time.process_time() - cpu_started)
        easel_median = statistics.median(times[run_easel])
        plain_median = statistics.median(times[run_plain])
        easel_cpu = statistics.median(cpu_times[run_easel])
        plain_cpu = statistics.median(cpu_times[run_plain])
        print(
            f"tiny model, {args.size}x{args.size}, {args.steps} steps, Euler a, {args.runs} interleaved runs, "
            f"torch threads {torch.get_num_threads()}"
        )
        print(f"plain diffusers median: {plain_median * 1000:.1f} ms")
        print(f"easel txt2img median:   {easel_median * 1000:.1f} ms")
        print(f"ratio easel/diffusers:  {easel_median / plain_median:.3f} (target <= 1.02)")
        print(
            f"CPU time medians: plain {plain_cpu * 1000:.1f} ms, easel {easel_cpu * 1000:.1f} ms, "
            f"ratio {easel_cpu / plain_cpu:.3f} (steadier than wall time on a shared machine)"
        )


if __name__ == "__main__":
    main()
