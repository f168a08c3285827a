"""Outpainting mk2 (img2img, A1111's title, controls and steps): the canvas grows one direction at a time; each new
strip is first filled with noise that matches the picture's colours (its fall-off exponent sets how coarse the
noise is, colour variation how far it strays), then inpainted with the original content (the noise) as start.

The matched-noise fill is Easel's own, written by hand: noise shaped in the frequency domain (numpy FFT) with a
1/f^q fall-off and coloured with the known pixels' per-channel mean and spread. A1111's ``get_matched_noise``
matches the image's spectrum more closely; the results differ in detail, not in kind."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from modules.backends.base import MaskedContent
from modules.processing.images import round_up_to_multiple
from modules.processing.requests import Img2ImgRequest, ResizeMode
from modules.processing.run import ProcessingResult
from modules.scripts.base import (
    Script,
    ScriptArgs,
    ScriptError,
    ScriptJob,
    Visibility,
    fixed_seed,
    merge_results,
    updated,
)
from modules.scripts.builtin.outpainting import DIRECTIONS
from modules.scripts.controls import Control, Dropdown, Info, Slider


def matched_noise(
    image: np.ndarray, known: np.ndarray, fall_off: float, variation: float, rng: np.random.Generator
) -> np.ndarray:
    """``image`` (H, W, 3, 0..1) with the unknown pixels (``known`` False) replaced by coloured, shaped noise."""
    height, width, _ = image.shape
    noise = rng.standard_normal((height, width, 3))
    frequency = np.sqrt(np.fft.fftfreq(height)[:, None] ** 2 + np.fft.fftfreq(width)[None, :] ** 2)
    shaping = 1.0 / np.maximum(frequency * max(height, width), 1.0) ** fall_off
    noise = np.fft.ifft2(np.fft.fft2(noise, axes=(0, 1)) * shaping[..., None], axes=(0, 1)).real
    noise = (noise - noise.mean(axis=(0, 1))) / np.maximum(noise.std(axis=(0, 1)), 1e-6)
    pixels = image[known] if known.any() else image.reshape(-1, 3)
    mean, spread = pixels.mean(axis=0), pixels.std(axis=0)
    shift = rng.normal(0.0, variation, 3)
    coloured = np.clip(mean + shift + noise * spread * (1.0 + variation), 0.0, 1.0)
    return np.where(known[..., None], image, coloured)


def grow(image: Image.Image, direction: str, pixels: int) -> tuple[Image.Image, Image.Image, np.ndarray]:
    """The bigger canvas (a multiple of 8 on the grown side), the mask of the new strip, and the known pixels."""
    horizontal = direction in ("left", "right")
    width = round_up_to_multiple(image.width + pixels) if horizontal else image.width
    height = image.height if horizontal else round_up_to_multiple(image.height + pixels)
    offset = (width - image.width if direction == "left" else 0, height - image.height if direction == "up" else 0)
    canvas = Image.new("RGB", (width, height))
    canvas.paste(image, offset)
    known = np.zeros((height, width), dtype=bool)
    known[offset[1] : offset[1] + image.height, offset[0] : offset[0] + image.width] = True
    mask = Image.fromarray(np.where(known, 0, 255).astype(np.uint8), mode="L")
    return canvas, mask, known


class OutpaintingMk2(Script):
    def title(self) -> str:
        return "Outpainting mk2"

    def show(self, is_img2img: bool) -> Visibility:
        return Visibility.SELECTABLE if is_img2img else Visibility.HIDDEN

    def ui(self, is_img2img: bool) -> Sequence[Control]:
        return [
            Info("info", "Recommended settings: Sampling Steps: 80-100, Sampler: Euler a, Denoising strength: 0.8"),
            Slider("pixels", "Pixels to expand", 128, minimum=8, maximum=256, step=8),
            Slider("mask_blur", "Mask blur", 8, minimum=0, maximum=64, step=1),
            Dropdown("direction", "Outpainting direction", list(DIRECTIONS), choices=DIRECTIONS, multiselect=True),
            Slider("noise_q", "Fall-off exponent (lower=higher detail)", 1.0, minimum=0.0, maximum=4.0, step=0.01),
            Slider("color_variation", "Color variation", 0.05, minimum=0.0, maximum=1.0, step=0.01),
        ]

    def run(self, job: ScriptJob, args: ScriptArgs) -> ProcessingResult:
        request = job.request
        if not isinstance(request, Img2ImgRequest):
            raise ScriptError("Outpainting mk2 needs an img2img request")
        directions = [direction for direction in DIRECTIONS if direction in set(args["direction"])]
        if not directions:
            raise ScriptError(f"Outpainting direction: choose among {', '.join(DIRECTIONS)}")
        request = fixed_seed(request)
        rng = np.random.default_rng(request.seed)
        results = []
        for batch in range(request.n_iter):
            image = request.init_image.convert("RGB")
            result = None
            for direction in directions:
                if job.control.interrupted:
                    break
                canvas, mask, known = grow(image, direction, int(args["pixels"]))
                pixels = np.asarray(canvas, dtype=np.float64) / 255.0
                noised = matched_noise(pixels, known, float(args["noise_q"]), float(args["color_variation"]), rng)
                start = Image.fromarray((noised * 255.0 + 0.5).astype(np.uint8))
                step = updated(
                    request,
                    init_image=start,
                    mask=mask,
                    width=canvas.width,
                    height=canvas.height,
                    resize_mode=ResizeMode.JUST_RESIZE,
                    inpainting_fill=MaskedContent.ORIGINAL,
                    inpaint_full_res=False,
                    mask_blur=int(args["mask_blur"]),
                    n_iter=1,
                    batch_size=1,
                    seed=request.seed + batch,
                    save_grid=False,
                )
                result = job.process(step)
                image = result.images[0]
            if result is not None:
                results.append(result)
        return merge_results(results)
