"""Pixel operations of img2img, inpainting and outpainting, on PIL images (numpy and OpenCV inside).

Behaviour follows A1111 where users can see it (resize modes, mask binarising and blur, "fill" masked content,
overlay compositing); the functions are written here, small and separate, with the A1111 detail they match noted.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image, ImageOps

from modules.processing.requests import ResizeMode

logger = logging.getLogger(__name__)

BACKGROUND = (255, 255, 255)  # A1111's img2img_background_color default "#ffffff" for transparent pixels
MASK_THRESHOLD = 128  # A1111 rounds a mask: above 128 is masked
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
LATENT_MULTIPLE = 8
# (Gaussian sigma, repeats) of A1111's "fill" masked content, coarse to fine; sigma 0 is the image itself.
FILL_PASSES: tuple[tuple[float, int], ...] = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))

Box = tuple[int, int, int, int]


class ConvertedImage(NamedTuple):
    """An image with notes on what was changed to get it, for the UI to show."""

    image: Image.Image
    notes: tuple[str, ...] = ()


class ExpandedCanvas(NamedTuple):
    """Outpainting input: the larger image and its mask (white = area to paint)."""

    image: Image.Image
    mask: Image.Image


# --- colour modes -------------------------------------------------------------------------------------------


def sixteen_bit_to_gray(image: Image.Image) -> Image.Image:
    """16-bit (and 32-bit integer, read as 16-bit) grayscale to 8-bit 'L': 0..65535 maps to 0..255."""
    values = np.asarray(image).astype(np.float64)
    return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), "L")


def float_to_gray(image: Image.Image) -> Image.Image:
    """'F' images as Pillow treats them: values 0..255, clipped."""
    return Image.fromarray(np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8), "L")


def flatten_transparency(image: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Composite a transparent image onto a plain background (A1111 flattens onto white)."""
    rgba = image.convert("RGBA")
    flat = Image.new("RGBA", rgba.size, (*background, 255))
    flat.alpha_composite(rgba)
    return flat.convert("RGB")


def has_transparency(image: Image.Image) -> bool:
    return image.mode in TRANSPARENT_MODES or (image.mode == "P" and "transparency" in image.info)


def to_rgb(image: Image.Image) -> ConvertedImage:
    """Any Pillow image as 8-bit RGB, with a note naming the conversion (none for RGB)."""
    mode = image.mode
    if mode == "RGB":
        return ConvertedImage(image)
    if has_transparency(image):
        return ConvertedImage(flatten_transparency(image), (f"{mode} image: transparent pixels put on white",))
    if mode in SIXTEEN_BIT_MODES:
        converted = sixteen_bit_to_gray(image).convert("RGB")
        return ConvertedImage(converted, (f"{mode} image: 16-bit grayscale scaled to 8-bit RGB",))
    if mode == "F":
        return ConvertedImage(float_to_gray(image).convert("RGB"), ("F image: float grayscale clipped to 0..255",))
    if mode == "CMYK":
        return ConvertedImage(image.convert("RGB"), ("CMYK image converted to RGB (colours approximate)",))
    return ConvertedImage(image.convert("RGB"), (f"{mode} image converted to RGB",))


# --- resizing -----------------------------------------------------------------------------------------------


def resize_lanczos(image: Image.Image, width: int, height: int) -> Image.Image:
    return image.resize((width, height), resample=Image.Resampling.LANCZOS)


def centred_paste(image: Image.Image, width: int, height: int) -> tuple[Image.Image, tuple[int, int]]:
    """A canvas of the target size (same mode as the image) with the image centred on it (A1111's offsets)."""
    canvas = Image.new(image.mode, (width, height))
    offset = (width // 2 - image.width // 2, height // 2 - image.height // 2)
    canvas.paste(image, offset)
    return canvas, offset


def crop_and_resize(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to cover the target, keeping the aspect ratio, then cut the overflow equally from both sides."""
    if width / height > image.width / image.height:
        scaled_width, scaled_height = width, image.height * width // image.width
    else:
        scaled_width, scaled_height = image.width * height // image.height, height
    return centred_paste(resize_lanczos(image, scaled_width, scaled_height), width, height)[0]


def resize_and_fill(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to fit inside the target, then fill the borders with the image's own edge rows or columns stretched.

    As in A1111 a border is Pillow's resize of the zero-thickness box on the edge, which repeats the edge line.
    """
    if width / height < image.width / image.height:
        scaled_width, scaled_height = width, image.height * width // image.width
    else:
        scaled_width, scaled_height = image.width * height // image.height, height
    scaled = resize_lanczos(image, scaled_width, scaled_height)
    canvas, (left, top) = centred_paste(scaled, width, height)
    if top > 0:
        strip_size = (width, top)
        canvas.paste(scaled.resize(strip_size, box=(0, 0, width, 0)), (0, 0))
        canvas.paste(scaled.resize(strip_size, box=(0, scaled_height, width, scaled_height)), (0, top + scaled_height))
    elif left > 0:
        strip_size = (left, height)
        canvas.paste(scaled.resize(strip_size, box=(0, 0, 0, height)), (0, 0))
        canvas.paste(scaled.resize(strip_size, box=(scaled_width, 0, scaled_width, height)), (left + scaled_width, 0))
    return canvas


def resize_image(image: Image.Image, mode: ResizeMode, width: int, height: int) -> Image.Image:
    """A1111's img2img resize modes (Lanczos, no upscaler model); the image's colour mode is kept."""
    if width <= 0 or height <= 0:
        raise ValueError(f"target size must be positive, got {width}x{height}")
    if mode == ResizeMode.JUST_RESIZE:
        return resize_lanczos(image, width, height)
    if mode == ResizeMode.CROP_AND_RESIZE:
        return crop_and_resize(image, width, height)
    if mode == ResizeMode.RESIZE_AND_FILL:
        return resize_and_fill(image, width, height)
    raise ValueError(f"unknown resize mode {mode!r}")


# --- masks --------------------------------------------------------------------------------------------------


def mask_channel(mask: Image.Image) -> ConvertedImage:
    """The one channel that holds a mask: alpha for a not fully opaque image (a painted layer), else the grays."""
    if has_transparency(mask):
        alpha = mask.convert("RGBA").getchannel("A")
        if alpha.getextrema() != (255, 255):
            return ConvertedImage(alpha, ("mask taken from the transparency of the image",))
    if mask.mode in SIXTEEN_BIT_MODES:
        return ConvertedImage(sixteen_bit_to_gray(mask), (f"{mask.mode} mask scaled to 8-bit",))
    if mask.mode == "F":
        return ConvertedImage(float_to_gray(mask))
    return ConvertedImage(mask.convert("L"))


def binarize(mask: Image.Image) -> Image.Image:
    """'L' mask of 0 and 255: above 128 is masked (A1111's mask rounding)."""
    values = np.asarray(mask.convert("L"))
    return Image.fromarray(np.where(values > MASK_THRESHOLD, 255, 0).astype(np.uint8), "L")


def blur_mask(mask: Image.Image, blur: int) -> Image.Image:
    """A1111's mask blur: one horizontal then one vertical OpenCV Gaussian pass, kernel 2*int(2.5*blur+0.5)+1.

    The vertical pass, as in A1111, gives the sigma as OpenCV's sigmaX of a one-column kernel, so OpenCV
    derives the vertical sigma from the kernel size; kept so that masks match A1111's pixel for pixel.
    """
    if blur <= 0:
        return mask
    kernel_size = 2 * int(2.5 * blur + 0.5) + 1
    values = np.asarray(mask.convert("L"))
    values = cv2.GaussianBlur(values, (kernel_size, 1), blur)
    values = cv2.GaussianBlur(values, (1, kernel_size), blur)
    return Image.fromarray(values, "L")


def prepare_mask(mask: Image.Image, size: tuple[int, int], blur: int, invert: bool) -> ConvertedImage:
    """An inpainting mask: 'L', binarised, at ``size`` (the init image's), optionally inverted, then blurred."""
    channel, notes = mask_channel(mask)
    binary = binarize(channel)
    if binary.size != size:
        notes = (*notes, f"mask {binary.width}x{binary.height} resized to the image size {size[0]}x{size[1]}")
        binary = binarize(binary.resize(size, resample=Image.Resampling.BILINEAR))
    if invert:
        binary = ImageOps.invert(binary)
    for note in notes:
        logger.info("mask prepared note=%r", note)
    return ConvertedImage(blur_mask(binary, blur), notes)


def mask_for_overlay(mask: Image.Image) -> Image.Image:
    """A1111's overlay mask: the blurred mask doubled, so the blend with the original lies outside the mask's
    half-way line and the painted area is fully replaced."""
    values = np.asarray(mask.convert("L")).astype(np.uint16) * 2
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")


# --- filling and compositing --------------------------------------------------------------------------------


def box_sizes_for_gaussian(sigma: float, passes: int = 3) -> list[int]:
    """Odd box widths whose repeated box blur approximates a Gaussian of ``sigma`` (hand-written: the standard
    recipe, as Pillow's GaussianBlur uses; OpenCV's exact Gaussian is too slow at sigma 256)."""
    ideal = math.sqrt(12 * sigma * sigma / passes + 1)
    lower = int(ideal) - (1 - int(ideal) % 2)
    upper = lower + 2
    lower_count = round((12 * sigma * sigma - passes * lower**2 - 4 * passes * lower - 3 * passes) / (-4 * lower - 4))
    return [lower if index < lower_count else upper for index in range(passes)]


def gaussian_blur_float(values: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return values
    for size in box_sizes_for_gaussian(sigma):
        values = cv2.blur(values, (size, size), borderType=cv2.BORDER_REFLECT)
    return values


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's "fill" masked content: the masked area takes the blurred colours of its surroundings.

    Equivalent of A1111's masking.fill: the unmasked pixels are blurred at decreasing radii, each layer (colour
    normalised by the blurred coverage, coverage as alpha) composited over the previous one; unmasked pixels
    end as they were.
    """
    colors = np.asarray(image.convert("RGB")).astype(np.float32)
    coverage = 1.0 - np.asarray(mask.convert("L").resize(image.size)).astype(np.float32) / 255.0
    premultiplied = np.zeros_like(colors)
    alpha = np.zeros_like(coverage)
    for sigma, repeats in FILL_PASSES:
        layer_alpha = np.clip(gaussian_blur_float(coverage, sigma), 0.0, 1.0)
        blurred = gaussian_blur_float(colors * coverage[..., None], sigma)
        layer_colors = blurred / np.maximum(layer_alpha, 1e-6)[..., None]
        for _ in range(repeats):
            premultiplied = layer_colors * layer_alpha[..., None] + premultiplied * (1.0 - layer_alpha[..., None])
            alpha = layer_alpha + alpha * (1.0 - layer_alpha)
    result = premultiplied / np.maximum(alpha, 1e-6)[..., None]
    return Image.fromarray(np.clip(np.rint(result), 0, 255).astype(np.uint8), "RGB")


def composite_unmasked(original: Image.Image, generated: Image.Image, mask: Image.Image) -> Image.Image:
    """Keep the original where the mask is 0 (byte for byte), the generated image where it is 255, blend between."""
    if original.size != generated.size or original.size != mask.size:
        raise ValueError(
            f"composite needs equal sizes: original {original.size}, generated {generated.size}, mask {mask.size}"
        )
    kept = np.asarray(original.convert("RGB")).astype(np.uint32)
    painted = np.asarray(generated.convert("RGB")).astype(np.uint32)
    weight = np.asarray(mask.convert("L")).astype(np.uint32)[..., None]
    blended = (kept * (255 - weight) + painted * weight + 127) // 255
    return Image.fromarray(blended.astype(np.uint8), "RGB")


# --- outpainting --------------------------------------------------------------------------------------------


def round_up_to_multiple(value: int, multiple: int = LATENT_MULTIPLE) -> int:
    return -(-value // multiple) * multiple


def outpaint_amounts(size: int, before: int, after: int) -> tuple[int, int]:
    """Amounts rounded up to multiples of 8; if the new side is still no multiple of 8 (an odd-sized image),
    the remainder goes to the ``after`` side, or to ``before`` when only that one grows."""
    if before < 0 or after < 0:
        raise ValueError(f"outpainting amounts must not be negative, got {before} and {after}")
    before, after = round_up_to_multiple(before), round_up_to_multiple(after)
    remainder = -(size + before + after) % LATENT_MULTIPLE
    if remainder and after:
        after += remainder
    elif remainder and before:
        before += remainder
    return before, after


def expand_canvas(
    image: Image.Image,
    left: int,
    right: int,
    up: int,
    down: int,
    fill: str = "edge",
    overlap: int = 0,
    seed: int = 0,
) -> ExpandedCanvas:
    """Grow the canvas for outpainting; sizes stay multiples of 8 (see ``outpaint_amounts``).

    The new area is prefilled by stretching the edge pixels (``fill="edge"``) or with seeded noise
    (``fill="noise"``). The mask is white over the new area and ``overlap`` pixels into the original on each
    side that grew, so the seam is repainted.
    """
    if fill not in ("edge", "noise"):
        raise ValueError(f"fill must be 'edge' or 'noise', got {fill!r}")
    left, right = outpaint_amounts(image.width, left, right)
    up, down = outpaint_amounts(image.height, up, down)
    pixels = np.asarray(to_rgb(image).image)
    padded = np.pad(pixels, ((up, down), (left, right), (0, 0)), mode="edge")
    mask = np.full(padded.shape[:2], 255, dtype=np.uint8)
    mask[up : up + image.height, left : left + image.width] = 0
    if fill == "noise":
        noise = np.random.default_rng(seed).integers(0, 256, size=padded.shape, dtype=np.uint8)
        padded = np.where(mask[..., None] == 255, noise, padded)
    grow_mask_into_original(mask, (left, up, left + image.width, up + image.height), (left, right, up, down), overlap)
    return ExpandedCanvas(Image.fromarray(padded, "RGB"), Image.fromarray(mask, "L"))


def grow_mask_into_original(mask: np.ndarray, box: Box, amounts: Box, overlap: int) -> None:
    """Whiten ``overlap`` pixels of the original inside ``box`` along each side that grew (amounts l, r, u, d)."""
    if overlap <= 0:
        return
    x1, y1, x2, y2 = box
    left, right, up, down = amounts
    if left:
        mask[y1:y2, x1 : min(x1 + overlap, x2)] = 255
    if right:
        mask[y1:y2, max(x2 - overlap, x1) : x2] = 255
    if up:
        mask[y1 : min(y1 + overlap, y2), x1:x2] = 255
    if down:
        mask[max(y2 - overlap, y1) : y2, x1:x2] = 255
