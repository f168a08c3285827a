"""Seconds per sampling step of the diffusers and the original backend on the same request (tiny model).

Each backend runs the same txt2img request (default: 20 Euler a steps, 64x64, CPU). Seconds per step is the time
between the first and the last step reports divided by the steps between them (the sampling loop alone: UNet,
guidance, sampler); the whole job's time per step is printed too. Medians over repeats; runs alternate between
the backends so that machine load hits both alike. Prints figures only. Target: the original backend within 3 %
of the diffusers backend.
Usage: venv/bin/python benchmarks/backends.py [--steps 20] [--size 64] [--repeats 7] [--sampler "Euler a"]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from modules.backends.registry import backend_names, create_backend
from modules.devices import MemoryPolicy
from modules.models.hashing import HashCache
from modules.models.manager import ModelManager
from modules.models.registry import CheckpointRegistry
from modules.models.service import ModelService
from modules.options import Options
from modules.paths import DataPaths
from modules.processing.job import JobControl
from modules.processing.processing import ProcessingContext, process
from modules.processing.requests import Txt2ImgRequest
from modules.tiny_model import build_tiny_pipeline, write_diffusers


def tiny_context(folder: Path) -> ProcessingContext:
    paths = DataPaths.create(folder)
    paths.ensure()
    write_diffusers(build_tiny_pipeline(), paths.checkpoints_dir / "tiny")
    registry = CheckpointRegistry(paths.checkpoint_dirs, HashCache(paths.cache_file))
    registry.refresh()
    manager = ModelManager(registry, MemoryPolicy.cpu(), paths.configs_dir)
    backends = {name: create_backend(name) for name in backend_names()}
    return ProcessingContext(
        models=ModelService(manager),
        backend=backends["diffusers"],
        options=Options(samples_save=False),
        paths=paths,
        backends=backends,
    )


class StepClock(JobControl):
    """Records when each step is reported."""

    def __init__(self) -> None:
        super().__init__(preview_every_n_steps=0)
        self.times: list[float] = []

    def step_done(self, step: int, preview: object = None) -> None:
        self.times.append(time.perf_counter())
        super().step_done(step, preview)


def seconds_per_step(context: ProcessingContext, request: Txt2ImgRequest) -> tuple[float, float]:
    """(sampling-loop seconds per step, whole-job seconds per step)."""
    clock = StepClock()
    started = time.perf_counter()
    process(request, context, clock)
    total = time.perf_counter() - started
    return (clock.times[-1] - clock.times[0]) / (len(clock.times) - 1), total / request.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sampler", default="Euler a")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    fields = {"prompt": "a red fox", "negative_prompt": "blurry", "seed": 1, "steps": args.steps}
    fields.update(width=args.size, height=args.size, sampler_name=args.sampler, save_images=False)
    with tempfile.TemporaryDirectory() as folder:
        context = tiny_context(Path(folder))
        context.models.ensure_loaded()
        names = list(context.backends)
        loops: dict[str, list[float]] = {name: [] for name in names}
        jobs: dict[str, list[float]] = {name: [] for name in names}
        for name in names:  # warm-up: prompt encoding cache, first-call allocations
            seconds_per_step(context, Txt2ImgRequest(**fields, sampling_backend=name))
        for _ in range(args.repeats):
            for name in names:
                loop, job = seconds_per_step(context, Txt2ImgRequest(**fields, sampling_backend=name))
                loops[name].append(loop)
                jobs[name].append(job)
    medians = {name: statistics.median(values) for name, values in loops.items()}
    print(
        f"{args.sampler}, {args.steps} steps, {args.size}x{args.size}, {args.repeats} repeats, "
        f"torch threads {torch.get_num_threads()}"
    )
    for name, median in medians.items():
        spread = max(loops[name]) - min(loops[name])
        job = statistics.median(jobs[name])
        print(
            f"  {name:10s} {median * 1000:8.2f} ms/step sampling loop (median; spread {spread * 1000:.2f} ms), "
            f"{job * 1000:8.2f} ms/step whole job"
        )
    ratio = medians["original"] / medians["diffusers"]
    print(f"  original / diffusers = {ratio:.3f} ({(ratio - 1) * 100:+.1f} %; target within +3 %)")


if __name__ == "__main__":
    main()
