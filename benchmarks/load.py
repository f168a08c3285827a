"""Load time of the same weights as an A1111 single file and as a diffusers folder.

``venv/bin/python -m benchmarks.load [--runs 3] [--cache-dir ~/.cache/easel-bench] [--skip-full]``

Two models: the tiny test model (fp32) and an SD 1.5-sized model with random weights built from
configs/sd15 (stored in fp16 to save disk, about 2 GB per copy, cached outside the repo and built once).
Prints the median of a few runs of ``loader.load_pipeline`` for each form and the ratio single/folder
(target: <= 1.2).
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from modules.models.checkpoint_writer import write_single_file
from modules.models.hashing import HashCache
from modules.models.loader import load_pipeline
from modules.models.registry import CheckpointRegistry
from modules.paths import INSTALL_DIR
from modules.tiny_model import build_tiny_pipeline, write_diffusers

logger = logging.getLogger(__name__)

CONFIGS = INSTALL_DIR / "configs"


def build_sd15_random(configs: Path = CONFIGS) -> StableDiffusionPipeline:
    """SD 1.5 architecture with random weights (no download), in fp16."""
    folder = configs / "sd15"
    torch.manual_seed(0)
    pipeline = StableDiffusionPipeline(
        vae=AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
        scheduler=PNDMScheduler.from_pretrained(folder, subfolder="scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return pipeline.to(torch.float16)


def prepare(cache_dir: Path, label: str, build, with_config: bool) -> tuple[Path, Path]:
    """Write both forms once; later runs reuse them."""
    single, folder = cache_dir / label / f"{label}.safetensors", cache_dir / label / f"{label}-diffusers"
    if not (single.is_file() and (folder / "model_index.json").is_file()):
        logger.info("building model label=%s", label)
        pipeline = build()
        write_single_file(pipeline, single, with_config=with_config)
        write_diffusers(pipeline, folder)
        del pipeline
        gc.collect()
    return single, folder


def time_load(registry: CheckpointRegistry, name: str, dtype: torch.dtype) -> float:
    info = registry.find(name)
    started = time.perf_counter()
    pipeline, _ = load_pipeline(info, CONFIGS, torch_dtype=dtype)
    seconds = time.perf_counter() - started
    del pipeline
    gc.collect()
    return seconds


def measure(cache_dir: Path, label: str, build, with_config: bool, dtype: torch.dtype, runs: int) -> None:
    single, folder = prepare(cache_dir, label, build, with_config)
    registry = CheckpointRegistry([single.parent], HashCache(cache_dir / "cache.json"))
    time_load(registry, single.stem, dtype)  # warm the page cache and imports
    time_load(registry, folder.name, dtype)
    single_times: list[float] = []
    folder_times: list[float] = []
    for _ in range(runs):  # interleaved so drift hits both forms alike
        single_times.append(time_load(registry, single.stem, dtype))
        folder_times.append(time_load(registry, folder.name, dtype))
    single_median, folder_median = statistics.median(single_times), statistics.median(folder_times)
    print(  # a benchmark script prints its figures
        f"{label:>6}: single file {single_median:6.2f} s | diffusers folder {folder_median:6.2f} s | "
        f"ratio {single_median / folder_median:4.2f} | runs {runs} | "
        f"single {[round(value, 2) for value in single_times]} folder {[round(value, 2) for value in folder_times]}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "easel-bench")
    parser.add_argument("--skip-full", action="store_true", help="only the tiny model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    measure(args.cache_dir, "tiny", build_tiny_pipeline, True, torch.float32, args.runs)
    if not args.skip_full:
        measure(args.cache_dir, "sd15", build_sd15_random, False, torch.float16, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
