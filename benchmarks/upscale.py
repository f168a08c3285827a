"""Upscaler figures: megapixels per second and peak memory of the real SRVGGNet weights (tiled, untiled),
and PSNR / sharpness (variance of the Laplacian) of the model against Lanczos on skimage photos.

Run from the project root: ``venv/bin/python benchmarks/upscale.py [--weights PATH] [--device cpu]``.
Peak memory: the growth of the process's peak RSS (CPU) or torch's peak allocated memory (CUDA) during one
upscale, each measured in a fresh interpreter so runs do not share a high-water mark.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from modules.postprocess.upscalers import UpscalerRegistry  # noqa: E402

DEFAULT_WEIGHTS = REPO_ROOT.parent / "shared" / "testdata" / "upscalers" / "realesr-animevideov3.pth"
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def measure_speed(weights: Path, tile_size: int, size: int, device: str, repeats: int) -> dict[str, float]:
    """One upscale of a size x size crop of astronaut: output megapixels per second and peak memory (MB)."""
    registry = UpscalerRegistry([weights.parent])
    name = registry.find(weights.stem).name
    image = Image.fromarray(skimage.data.astronaut()).resize((size, size), Image.Resampling.LANCZOS)
    registry.upscale(Image.new("RGB", (32, 32)), name, tile_size=0, device=device)  # load and warm up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = registry.upscale(image, name, tile_size=tile_size, device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - baseline
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
    megapixels = result.width * result.height / 1e6
    return {
        "output_mp": megapixels,
        "seconds": min(timings),
        "mp_per_s": megapixels / min(timings),
        "peak_mb": peak / 1e6,
    }


def sharpness(image: Image.Image) -> float:
    gray = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def measure_quality(weights: Path, device: str) -> list[dict[str, float | str]]:
    """Downscale each photo 4x (Lanczos, bicubic-like antialiasing), upscale back 4x, compare with the original."""
    registry = UpscalerRegistry([weights.parent])
    name = registry.find(weights.stem).name
    rows: list[dict[str, float | str]] = []
    for photo in PHOTOS:
        array = getattr(skimage.data, photo)()
        height, width = (array.shape[0] // 4) * 4, (array.shape[1] // 4) * 4
        original = Image.fromarray(array[:height, :width]).convert("RGB")
        small = original.resize((width // 4, height // 4), Image.Resampling.LANCZOS)
        row: dict[str, float | str] = {"photo": photo, "reference_sharpness": sharpness(original)}
        for label, upscaler in (("lanczos", "Lanczos"), ("model", name)):
            result = registry.upscale(small, upscaler, scale=4, device=device)
            row[f"{label}_psnr"] = peak_signal_noise_ratio(np.asarray(original), np.asarray(result), data_range=255)
            row[f"{label}_sharpness"] = sharpness(result)
        rows.append(row)
    return rows


def run_isolated(arguments: list[str]) -> dict[str, float]:
    completed = subprocess.run(
        [sys.executable, __file__, *arguments, "--child"], capture_output=True, text=True, check=True
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=512, help="input side in pixels (output is 4x)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tile-size", type=int, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    torch.set_grad_enabled(False)
    if arguments.child:
        figures = measure_speed(
            arguments.weights, arguments.tile_size, arguments.size, arguments.device, arguments.repeats
        )
        print(json.dumps(figures))
        return
    weights_name = arguments.weights.name
    print(
        f"device={arguments.device} threads={torch.get_num_threads()} input={arguments.size}px weights={weights_name}"
    )
    for tile_size in (0, 192, 512):
        common = ["--weights", str(arguments.weights), "--device", arguments.device, "--size", str(arguments.size)]
        figures = run_isolated([*common, "--repeats", str(arguments.repeats), "--tile-size", str(tile_size)])
        label = "untiled" if tile_size == 0 else f"tile {tile_size}/8"
        print(
            f"{label:>12}: {figures['mp_per_s']:.3f} output MP/s ({figures['seconds']:.2f} s for "
            f"{figures['output_mp']:.2f} MP), peak memory +{figures['peak_mb']:.0f} MB"
        )
    print("photo      | PSNR Lanczos | PSNR model | sharpness ref / Lanczos / model")
    for row in measure_quality(arguments.weights, arguments.device):
        print(
            f"{row['photo']:<10} | {row['lanczos_psnr']:>9.2f} dB | {row['model_psnr']:>7.2f} dB | "
            f"{row['reference_sharpness']:.0f} / {row['lanczos_sharpness']:.0f} / {row['model_sharpness']:.0f}"
        )


if __name__ == "__main__":
    main()
