"""Peak VRAM and time of the memory presets (none / --medvram / --lowvram) for SD 1.5-shaped and SDXL-shaped
random-weight checkpoints, one txt2img at the native size through Easel's normal path.
Targets (issue 18): --medvram peak <= 60% of none at <= 15% slowdown; --lowvram SD 1.5 peak <= 3 GB.

Usage (GPU):  venv/bin/python benchmarks/memory_presets.py [--shapes sd15,sdxl] [--steps 20] [--out f.json]
CPU check:    venv/bin/python benchmarks/memory_presets.py --device cpu --tiny --steps 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.random_models import NATIVE_SIZE, write_random_checkpoint
from modules.backends.diffusers_backend import DiffusersBackend
from modules.devices import MemoryPolicy, MemoryPreset
from modules.models.hashing import HashCache
from modules.models.manager import ModelManager, free_memory
from modules.models.registry import CheckpointRegistry
from modules.models.service import ModelService
from modules.options import Options
from modules.paths import DataPaths
from modules.processing.processing import ProcessingContext, process
from modules.processing.requests import Txt2ImgRequest


def measure(paths: DataPaths, preset: MemoryPreset, device: str, size: int, steps: int) -> dict[str, float]:
    registry = CheckpointRegistry(paths.checkpoint_dirs, HashCache(paths.cache_file))
    registry.refresh()
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    policy = MemoryPolicy(device=torch.device(device), dtype=dtype, vae_dtype=dtype, preset=preset)
    models = ModelService(ModelManager(registry, policy, paths.configs_dir))
    context = ProcessingContext(models=models, backend=DiffusersBackend(), options=Options(), paths=paths)
    request = Txt2ImgRequest(
        prompt="a lighthouse", steps=steps, width=size, height=size, seed=1, sampler_name="Euler", save_images=False
    )
    models.ensure_loaded()
    process(request, context)  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    process(request, context)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    models.unload()
    free_memory()
    return {"seconds": round(seconds, 3), "peak_vram_gb": round(peak, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model only (checks the script on a CPU)")
    parser.add_argument("--shapes", default="sd15,sdxl")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    for shape in ["tiny"] if args.tiny else args.shapes.split(","):
        with tempfile.TemporaryDirectory() as folder:
            paths = DataPaths.create(Path(folder))
            paths.ensure()
            write_random_checkpoint(shape, paths.checkpoints_dir / shape, args.device)
            base = None
            for preset in MemoryPreset:
                figures = measure(paths, preset, args.device, NATIVE_SIZE[shape], args.steps)
                base = base or figures
                row = {"shape": shape, "preset": preset.value, **figures}
                row["vram_vs_none"] = (
                    round(figures["peak_vram_gb"] / base["peak_vram_gb"], 3) if base["peak_vram_gb"] else None
                )
                row["time_vs_none"] = round(figures["seconds"] / base["seconds"], 3)
                rows.append(row)
                print(json.dumps(row))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
