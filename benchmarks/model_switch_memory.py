"""Resident memory (RSS) while switching between an SD 1.5-shaped and an SDXL-shaped model, and back.

``venv/bin/python -m benchmarks.model_switch_memory [--rounds 3] [--kind sdxl]``

Tiny random-weight single files of both kinds (no sidecar; the tiny config folders stand in for configs/) go
through the model manager with the RAM cache off (``--ckpt-cache 1``, the default). Prints the RSS after the
first SD 1.5 load and after each round trip (load the other kind, load SD 1.5 again), and the largest change
relative to the first figure (the issue's target: within 10 %).
"""

from __future__ import annotations

import argparse
import gc
import logging
import tempfile
from pathlib import Path

import psutil

from modules.devices import MemoryPolicy
from modules.models.checkpoint_writer import write_single_file
from modules.models.detection import ModelArchitecture
from modules.models.hashing import HashCache
from modules.models.manager import ModelManager
from modules.models.registry import CheckpointRegistry
from modules.tiny_model import build_tiny_pipeline, write_config_folders


def rss_mib() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def measure(folder: Path, rounds: int, other: ModelArchitecture) -> list[tuple[str, float]]:
    """(label, RSS MiB) after the first SD 1.5 load and after each load of the round trips."""
    configs = write_config_folders(folder / "configs")
    models = folder / "models"
    for architecture in (ModelArchitecture.SD1, other):
        pipeline = build_tiny_pipeline(architecture=architecture)
        write_single_file(pipeline, models / f"{architecture.value}.safetensors", with_config=False)
    registry = CheckpointRegistry([models], HashCache(folder / "cache.json"))
    registry.refresh()
    manager = ModelManager(registry, MemoryPolicy.cpu(), configs)
    # One warm-up round trip: the first load of each kind imports code and fills allocator pools once.
    manager.load(other.value)
    manager.load(ModelArchitecture.SD1.value)
    figures = [("sd1 (start)", rss_mib())]
    for index in range(1, rounds + 1):
        manager.load(other.value)
        figures.append((f"{other.value} #{index}", rss_mib()))
        manager.load(ModelArchitecture.SD1.value)
        figures.append((f"sd1 #{index}", rss_mib()))
    manager.unload()
    return figures


def largest_change(figures: list[tuple[str, float]]) -> float:
    """The largest relative change of the SD 1.5 figures against the first one."""
    start = figures[0][1]
    return max(abs(value - start) / start for label, value in figures if label.startswith("sd1"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.model_switch_memory", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kind", default="sdxl", choices=[item.value for item in ModelArchitecture])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        figures = measure(Path(folder), args.rounds, ModelArchitecture(args.kind))
    for label, value in figures:
        print(f"{label:>16}: RSS {value:8.1f} MiB")
    print(f"largest change of the sd1 figures against the start: {largest_change(figures) * 100:.2f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
