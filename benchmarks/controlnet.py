"""The cost of ControlNet units over plain generation: txt2img with 0, 1 and 2 units on each backend.

Tiny random-weight models on the CPU (the tiny UNet and ControlNets made from it with
``ControlNetModel.from_unet``): the figures show the relative cost of the extra ControlNet forward passes, not
real-model timings (a real SD 1.5 ControlNet is about 40% of its UNet's compute, the tiny one's share differs).
Rounds interleave the cases so a busy machine weighs on all alike; the median of the rounds is printed.
Usage: venv/bin/python benchmarks/controlnet.py [--size 128] [--steps 8] [--rounds 3] [--backends diffusers original]
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from PIL import Image

from modules.backends.registry import create_backend
from modules.controlnet.models import ControlNetLibrary
from modules.devices import MemoryPolicy
from modules.models.hashing import HashCache
from modules.models.manager import ModelManager
from modules.models.registry import CheckpointRegistry
from modules.models.service import ModelService
from modules.options import Options
from modules.paths import DataPaths
from modules.processing.processing import ProcessingContext
from modules.processing.requests import Txt2ImgRequest
from modules.scripts.builtin.controlnet import ControlNetScript
from modules.scripts.runner import ScriptCatalogue
from modules.tiny_model import build_tiny_controlnet, build_tiny_pipeline, write_diffusers


def encoded_image(size: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def build(root: Path) -> tuple[ProcessingContext, ControlNetLibrary]:
    paths = DataPaths.create(root)
    paths.ensure()
    pipeline = build_tiny_pipeline()
    write_diffusers(pipeline, paths.checkpoints_dir / "tiny")
    for seed in (1, 2):
        build_tiny_controlnet(pipeline.unet, seed=seed).save_pretrained(paths.controlnet_dir / f"control_{seed}")
    registry = CheckpointRegistry(paths.checkpoint_dirs, HashCache(paths.cache_file))
    registry.refresh()
    manager = ModelManager(registry, MemoryPolicy.cpu(), paths.configs_dir)
    context = ProcessingContext(
        models=ModelService(manager), backend=create_backend("diffusers"), options=Options(), paths=paths
    )
    library = ControlNetLibrary([paths.controlnet_dir], HashCache(paths.cache_file), paths.configs_dir)
    library.refresh()
    return context, library


def timed(context: ProcessingContext, library: ControlNetLibrary, request: Txt2ImgRequest, units: list[dict]) -> float:
    tab = ScriptCatalogue([ControlNetScript(library, lambda: 3)]).tab(False)
    script = tab.always_on[0]
    bound = tab.bind(always_on={id(script): tab.arguments(script, units)})
    started = time.perf_counter()
    bound.execute(request, context)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["diffusers", "original"])
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        context, library = build(Path(folder))
        units = [
            {"enabled": True, "module": "none", "model": f"control_{seed}", "image": encoded_image(options.size, seed)}
            for seed in (1, 2)
        ]
        request = Txt2ImgRequest(
            prompt="a fox",
            steps=options.steps,
            width=options.size,
            height=options.size,
            seed=1,
            sampler_name="Euler",
            save_images=False,
        )
        print(
            f"tiny model on CPU, {options.size}x{options.size}, {options.steps} Euler steps, "
            f"median of {options.rounds} rounds"
        )
        for backend in options.backends:
            run_context = ProcessingContext(
                models=context.models, backend=create_backend(backend), options=context.options, paths=context.paths
            )
            timed(run_context, library, request, units)  # warm-up: load the models, fill caches
            results: dict[int, list[float]] = {0: [], 1: [], 2: []}
            for _ in range(options.rounds):
                for count in results:
                    results[count].append(timed(run_context, library, request, units[:count]))
            plain = statistics.median(results[0])
            for count, values in results.items():
                seconds = statistics.median(values)
                print(
                    f"backend={backend:9s} units={count} seconds={seconds:.3f} "
                    f"overhead={100 * (seconds / plain - 1):+.0f}%"
                )


if __name__ == "__main__":
    main()
