"""System information (the System info tab, ``/internal/sysinfo``) and the benchmark (SD.Next style: it/s at batch
1, 2 and 4 on the loaded model, at 512x512 and at the checkpoint's native size; past runs kept in a JSON file)."""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import torch

from modules.models.service import ModelService
from modules.processing.processing import ProcessingContext, process
from modules.processing.requests import Txt2ImgRequest

logger = logging.getLogger(__name__)

SECRET_FLAGS = frozenset({"api_auth", "gradio_auth"})
PACKAGES = ("diffusers", "transformers", "gradio", "accelerate", "safetensors", "xformers")
BenchmarkProgress = Callable[[str], None]


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None,
    }
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def memory_figures() -> dict[str, Any]:
    """RAM and CUDA memory in bytes, with the shape of A1111's ``/sdapi/v1/memory``."""
    ram = psutil.virtual_memory()
    result: dict[str, Any] = {"ram": {"free": ram.available, "used": ram.total - ram.available, "total": ram.total}}
    if not torch.cuda.is_available():
        result["cuda"] = {"error": "CUDA is not available"}
        return result
    free, total = torch.cuda.mem_get_info()
    stats = torch.cuda.memory_stats()

    def pair(key: str) -> dict[str, int]:
        return {"current": stats.get(f"{key}.all.current", 0), "peak": stats.get(f"{key}.all.peak", 0)}

    result["cuda"] = {
        "system": {"free": free, "used": total - free, "total": total},
        "active": pair("active_bytes"),
        "allocated": pair("allocated_bytes"),
        "reserved": pair("reserved_bytes"),
        "inactive": pair("inactive_split_bytes"),
        "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
    }
    return result


def device_info(models: ModelService) -> dict[str, Any]:
    policy = models.manager.policy
    info: dict[str, Any] = {"device": str(policy.device), "cpu_count": psutil.cpu_count(), **_policy(policy)}
    if policy.device.type == "cuda":
        properties = torch.cuda.get_device_properties(policy.device)
        info.update(name=properties.name, capability=f"{properties.major}.{properties.minor}")
        info["vram_total"] = properties.total_memory
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def _policy(policy: Any) -> dict[str, str]:
    return {
        "dtype": str(policy.dtype).removeprefix("torch."),
        "vae_dtype": str(policy.vae_dtype).removeprefix("torch."),
        "memory_preset": policy.preset.value,
        "attention_flag": policy.attention.value,
    }


def loaded_models(models: ModelService) -> list[dict[str, Any]]:
    model = models.current
    rows = []
    if model is not None:
        compute = model.compute
        processors = {type(item).__name__ for item in model.pipeline.unet.attn_processors.values()}
        rows.append(
            {
                "name": model.name,
                "hash": model.short_hash,
                "architecture": model.architecture.value if model.architecture else None,
                "weights_mb": round(model.weights_bytes / 2**20, 1),
                "unet_dtype": str(model.pipeline.unet.dtype).removeprefix("torch."),
                "attention": sorted(processors),
                "compute_applied": compute.applied if compute else [],
                "compute_skipped": compute.skipped if compute else {},
                "warmup_seconds": round(compute.warmup_seconds, 2) if compute else 0.0,
                "load_seconds": round(model.load_seconds, 2),
            }
        )
    rows.extend({"name": name, "cached_in_ram": True} for name in models.cached_names())
    return rows


def public_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {
        key: "<hidden>" if key in SECRET_FLAGS and value else str(value) if isinstance(value, Path) else value
        for key, value in vars(args).items()
    }


def compute_in_force(models: ModelService) -> dict[str, Any]:
    return {
        **models.manager.compute.describe(),
        "torch_tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "torch_cudnn_benchmark": torch.backends.cudnn.benchmark,
    }


def collect(models: ModelService, args: argparse.Namespace, history: Sequence[BenchmarkRow] = ()) -> dict[str, Any]:
    """Everything the System info tab shows and ``/internal/sysinfo`` returns."""
    return {
        "versions": versions(),
        "device": device_info(models),
        "memory": memory_figures(),
        "flags": public_flags(args),
        "models": loaded_models(models),
        "compute": compute_in_force(models),
        "benchmarks": [asdict(row) for row in history],
    }


@dataclass
class BenchmarkRow:
    time: str
    model: str
    width: int
    height: int
    batch_size: int
    steps: int
    seconds: float
    its: float  # denoising steps per second for the whole batch
    images_per_second: float
    device: str
    compute: str


class BenchmarkHistory:
    """Past benchmark runs, kept in a JSON file (newest last)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self) -> list[BenchmarkRow]:
        if not self.path.is_file():
            return []
        try:
            return [BenchmarkRow(**row) for row in json.loads(self.path.read_text(encoding="utf-8"))]
        except (OSError, ValueError, TypeError) as error:
            logger.error("benchmark history unreadable path=%s error=%s", self.path, error)
            return []

    def add(self, new_rows: Sequence[BenchmarkRow]) -> list[BenchmarkRow]:
        rows = [*self.rows(), *new_rows]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps([asdict(row) for row in rows], indent=1), encoding="utf-8")
        return rows


def benchmark_sizes(native: int) -> list[int]:
    return sorted({512, native})


def run_benchmark(
    context: ProcessingContext,
    steps: int = 20,
    batch_sizes: Sequence[int] = (1, 2, 4),
    sizes: Sequence[int] | None = None,
    progress: BenchmarkProgress | None = None,
) -> list[BenchmarkRow]:
    """Time txt2img through Easel's normal path on the loaded model; one untimed warm-up run first per size."""
    model = context.models.ensure_loaded()
    compute = ",".join(model.compute.applied) if model.compute and model.compute.applied else "eager"
    rows = []
    for size in sizes or benchmark_sizes(model.native_size):
        _generate(context, size, 1, 2)  # warm-up (kernels, allocator, compile)
        for batch in batch_sizes:
            if progress is not None:
                progress(f"benchmark {size}x{size} batch {batch}")
            seconds = _generate(context, size, batch, steps)
            rows.append(
                BenchmarkRow(
                    time=datetime.now().isoformat(timespec="seconds"),
                    model=model.name,
                    width=size,
                    height=size,
                    batch_size=batch,
                    steps=steps,
                    seconds=round(seconds, 3),
                    its=round(steps / seconds, 3),
                    images_per_second=round(batch / seconds, 3),
                    device=context.models.device_name,
                    compute=compute,
                )
            )
            logger.info("benchmark size=%d batch=%d steps=%d its=%.3f", size, batch, steps, rows[-1].its)
    return rows


def _generate(context: ProcessingContext, size: int, batch: int, steps: int) -> float:
    request = Txt2ImgRequest(
        prompt="a photograph of a lighthouse on a cliff at sunset",
        steps=steps,
        width=size,
        height=size,
        batch_size=batch,
        seed=1,
        sampler_name="Euler",
        save_images=False,
    )
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    process(request, context)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started
