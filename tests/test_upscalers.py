"""Upscaler registry, tiling and latent modes, with the real weights from ../shared/testdata/upscalers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from spandrel import ModelLoader

from modules.postprocess.latent_upscale import LATENT_UPSCALE_MODES, upscale_latents
from modules.postprocess.tiling import run_tiled
from modules.postprocess.upscalers import (
    UpscalerNotFoundError,
    UpscalerRegistry,
    UpscalerUnsupportedError,
    pil_to_tensor,
    tensor_to_pil,
)

ANIME = "R-ESRGAN AnimeVideo"
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def registry(testdata: Path) -> UpscalerRegistry:
    return UpscalerRegistry([testdata / "upscalers"])


@pytest.fixture(scope="module")
def chelsea_crop() -> Image.Image:
    return Image.fromarray(skimage.data.chelsea()[100:228, 150:278])


def mean_abs_diff(first: Image.Image, second: Image.Image) -> float:
    return float(np.abs(np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64)).mean())


def test_listing_has_builtins_supported_model_and_unsupported_span(registry: UpscalerRegistry) -> None:
    entries = {info.name: info for info in registry.upscalers()}
    assert list(entries)[:3] == ["None", "Lanczos", "Nearest"]
    anime = entries[ANIME]
    assert anime.supported and anime.kind == "model" and anime.architecture == "RealESRGAN Compact"
    span = entries["span-x4-ch28-slim"]
    assert not span.supported
    assert "does not recognise" in span.reason
    with pytest.raises(UpscalerUnsupportedError, match="span-x4-ch28-slim"):
        registry.upscale(Image.new("RGB", (8, 8)), "span-x4-ch28-slim")


def test_listing_survives_broken_and_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "broken.pth").write_bytes(b"not a pickle at all")
    (tmp_path / "notes.txt").write_text("ignored")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "tiny.pth")
    entries = {info.name: info for info in UpscalerRegistry([tmp_path, tmp_path / "absent"]).upscalers()}
    assert not entries["broken"].supported and "cannot be read" in entries["broken"].reason
    assert not entries["tiny"].supported
    assert "notes" not in entries


def test_pickle_with_code_is_refused_not_run(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({"params": Exploit()}, tmp_path / "evil.pth")
    info = UpscalerRegistry([tmp_path]).find("evil")
    assert not info.supported and "weights only" in info.reason
    assert not (tmp_path / "pwned").exists()


def test_untiled_4x_equals_direct_spandrel(
    registry: UpscalerRegistry, chelsea_crop: Image.Image, testdata: Path
) -> None:
    easel = registry.upscale(chelsea_crop, ANIME, tile_size=0)
    descriptor = ModelLoader().load_from_file(testdata / "upscalers" / "realesr-animevideov3.pth").eval()
    direct = tensor_to_pil(descriptor(pil_to_tensor(chelsea_crop)))
    assert easel.size == (512, 512)
    assert mean_abs_diff(easel, direct) < 0.5


def test_tiled_matches_untiled(registry: UpscalerRegistry, chelsea_crop: Image.Image) -> None:
    untiled = registry.upscale(chelsea_crop, ANIME, tile_size=0)
    tiled = registry.upscale(chelsea_crop, ANIME, tile_size=64, tile_overlap=16)
    assert tiled.size == untiled.size
    assert mean_abs_diff(tiled, untiled) < 1.0  # measured about 0.1 / 255 (overlap 16), 0.22 (overlap 8)


def test_factor_8_repeats_the_4x_model_then_resizes(registry: UpscalerRegistry) -> None:
    small = Image.fromarray(skimage.data.chelsea()[100:124, 150:180])
    result = registry.upscale(small, ANIME, scale=8, tile_size=0)
    assert result.size == (240, 192)
    once = registry.upscale(small, ANIME, tile_size=0).resize((240, 192), Image.Resampling.LANCZOS)
    assert mean_abs_diff(result, once) > 1.0  # a second model pass, not one pass and a resize


def test_upscale_to_a_size(registry: UpscalerRegistry) -> None:
    small = Image.fromarray(skimage.data.chelsea()[100:124, 150:180])
    assert registry.upscale(small, ANIME, target_size=(100, 70), tile_size=0).size == (100, 70)


def test_builtin_upscalers(registry: UpscalerRegistry) -> None:
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    nearest = registry.upscale(image, "Nearest", scale=2)
    assert nearest.size == (8, 8)
    assert np.array_equal(np.asarray(nearest)[::2, ::2], np.asarray(image))
    assert registry.upscale(image, "Lanczos", target_size=(12, 6)).size == (12, 6)
    assert registry.upscale(image, "None") is image
    with pytest.raises(UpscalerNotFoundError, match="no upscaler named"):
        registry.find("Bogus")


@pytest.mark.parametrize("mode", list(LATENT_UPSCALE_MODES))
def test_latent_upscale_modes_give_the_target_shape(mode: str) -> None:
    latents = torch.randn(2, 4, 8, 12)
    result = upscale_latents(latents, mode, width_px=144, height_px=96)
    assert result.shape == (2, 4, 12, 18)
    assert torch.isfinite(result).all()


def test_latent_upscale_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unknown latent upscale mode"):
        upscale_latents(torch.zeros(1, 4, 8, 8), "Latent (magic)", 128, 128)


def test_tiling_is_exact_for_a_pointwise_model_at_any_scale() -> None:
    image = torch.rand(1, 3, 150, 97)
    for factor in (1, 2, 3):

        def model(tensor: torch.Tensor, factor: int = factor) -> torch.Tensor:
            return torch.nn.functional.interpolate(tensor, scale_factor=factor, mode="nearest")

        assert torch.allclose(run_tiled(image, model, 40, 8), model(image), atol=1e-5)


def measure_peak_memory(tile_size: int) -> int:
    """Peak RSS growth (bytes) of one 4x upscale of a 384x384 image in a fresh interpreter.

    RSS is sampled every millisecond during the upscale (ru_maxrss would keep the import-time peak).
    """
    script = (
        "import json, sys, threading, time, psutil, skimage.data\n"
        "from pathlib import Path\nfrom PIL import Image\n"
        "from modules.postprocess.upscalers import UpscalerRegistry\n"
        "registry = UpscalerRegistry([Path(sys.argv[1])])\n"
        "image = Image.fromarray(skimage.data.astronaut()[:384, :384])\n"
        "registry.upscale(Image.new('RGB', (16, 16)), 'R-ESRGAN AnimeVideo', tile_size=0)\n"
        "process = psutil.Process()\nbefore = process.memory_info().rss\npeak = [before]\ndone = threading.Event()\n"
        "def sample():\n"
        "    while not done.is_set():\n"
        "        peak[0] = max(peak[0], process.memory_info().rss)\n"
        "        time.sleep(0.001)\n"
        "sampler = threading.Thread(target=sample)\nsampler.start()\n"
        "registry.upscale(image, 'R-ESRGAN AnimeVideo', tile_size=int(sys.argv[2]))\n"
        "done.set()\nsampler.join()\n"
        "print(json.dumps(peak[0] - before))\n"
    )
    folder = REPO_ROOT.parent / "shared" / "testdata" / "upscalers"
    completed = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(tile_size)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
    )
    return int(json.loads(completed.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_tiled_upscale_uses_less_peak_memory(testdata: Path) -> None:
    untiled = measure_peak_memory(0)
    tiled = measure_peak_memory(128)
    # measured: untiled about 134 MB, tiled (128) about 80 MB; both hold the 1536x1536 float32 output (28 MB)
    assert tiled < 0.75 * untiled, f"tiled peak {tiled} bytes, untiled {untiled} bytes"
