"""Pixel operations of img2img, inpainting and outpainting: resize modes, masks, fill, compositing, canvas."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from modules.processing.images import (
    composite_unmasked,
    expand_canvas,
    fill_masked,
    mask_for_overlay,
    outpaint_amounts,
    prepare_mask,
    resize_image,
    to_rgb,
)
from modules.processing.requests import Img2ImgRequest, ResizeMode

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def two_halves(width: int, height: int, first: tuple[int, int, int], second: tuple[int, int, int]) -> Image.Image:
    """Left half ``first``, right half ``second``."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = first
    pixels[:, width // 2 :] = second
    return Image.fromarray(pixels, "RGB")


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def box_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


# --- to_rgb -------------------------------------------------------------------------------------------------


def test_rgb_is_returned_unchanged_without_notes() -> None:
    image = random_image(8, 8)
    converted = to_rgb(image)
    assert converted.image is image
    assert converted.notes == ()


def test_transparent_pixels_go_on_white() -> None:
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    image.putpixel((0, 0), (0, 0, 255, 255))
    converted = to_rgb(image)
    assert converted.image.mode == "RGB"
    assert converted.image.getpixel((1, 1)) == WHITE
    assert converted.image.getpixel((0, 0)) == BLUE
    assert "white" in converted.notes[0]
    half = to_rgb(Image.new("LA", (2, 2), (0, 128))).image.getpixel((0, 0))
    assert half[0] == pytest.approx(127, abs=1)


def test_sixteen_bit_gray_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257 * 100, 65535, 32896]], dtype=np.uint16)
    converted = to_rgb(Image.fromarray(values))
    assert converted.image.mode == "RGB"
    assert [converted.image.getpixel((x, 0))[0] for x in range(4)] == [0, 100, 255, 128]
    assert "16-bit" in converted.notes[0]


def test_palette_cmyk_and_gray_become_rgb() -> None:
    assert to_rgb(Image.new("CMYK", (2, 2), (0, 255, 255, 0))).image.getpixel((0, 0)) == RED
    assert to_rgb(Image.new("L", (2, 2), 77)).image.getpixel((0, 0)) == (77, 77, 77)
    palette = Image.new("RGB", (2, 2), GREEN).convert("P")
    assert to_rgb(palette).image.getpixel((0, 0)) == GREEN


# --- resize modes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(ResizeMode))
@pytest.mark.parametrize(("width", "height"), [(64, 64), (128, 64), (64, 128), (40, 96)])
def test_every_mode_gives_the_target_size(mode: ResizeMode, width: int, height: int) -> None:
    result = resize_image(random_image(100, 60), mode, width, height)
    assert result.size == (width, height)
    assert result.mode == "RGB"


def test_just_resize_stretches_the_whole_image() -> None:
    result = resize_image(two_halves(128, 64, RED, BLUE), ResizeMode.JUST_RESIZE, 64, 64)
    assert result.getpixel((4, 32)) == RED
    assert result.getpixel((60, 32)) == BLUE


def test_crop_and_resize_keeps_the_centre_of_a_wide_image() -> None:
    pixels = np.zeros((64, 128, 3), dtype=np.uint8)
    pixels[:, :32] = RED
    pixels[:, 32:96] = GREEN
    pixels[:, 96:] = BLUE
    result = resize_image(Image.fromarray(pixels, "RGB"), ResizeMode.CROP_AND_RESIZE, 64, 64)
    values = np.asarray(result)
    assert (values == GREEN).all(), "the 64 central columns fill the square; the red and blue sides are cut off"


def test_crop_and_resize_of_a_tall_image_cuts_top_and_bottom() -> None:
    pixels = np.zeros((128, 32, 3), dtype=np.uint8)
    pixels[:32] = RED
    pixels[32:96] = GREEN
    pixels[96:] = BLUE
    result = resize_image(Image.fromarray(pixels, "RGB"), ResizeMode.CROP_AND_RESIZE, 64, 64)
    assert (np.asarray(result)[4:60] == GREEN).all()


def test_resize_and_fill_stretches_the_edges_into_the_borders() -> None:
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[0] = RED
    pixels[1:-1] = GREEN
    pixels[-1] = BLUE
    result = np.asarray(resize_image(Image.fromarray(pixels, "RGB"), ResizeMode.RESIZE_AND_FILL, 64, 64))
    assert (result[:16] == RED).all(), "the top border repeats the top row"
    assert (result[48:] == BLUE).all(), "the bottom border repeats the bottom row"
    assert (result[20:44] == GREEN).all(), "the image itself sits in the middle, unscaled"


def test_resize_and_fill_of_a_tall_image_fills_left_and_right() -> None:
    pixels = np.zeros((64, 32, 3), dtype=np.uint8)
    pixels[:, 0] = RED
    pixels[:, 1:-1] = GREEN
    pixels[:, -1] = BLUE
    result = np.asarray(resize_image(Image.fromarray(pixels, "RGB"), ResizeMode.RESIZE_AND_FILL, 64, 64))
    assert (result[:, :16] == RED).all()
    assert (result[:, 48:] == BLUE).all()


def test_resize_keeps_a_mask_a_mask() -> None:
    mask = box_mask((100, 50), (40, 10, 60, 40))
    for mode in ResizeMode:
        assert resize_image(mask, mode, 64, 64).mode == "L"


# --- masks --------------------------------------------------------------------------------------------------


def test_gray_mask_is_binarised_at_128() -> None:
    values = np.array([[0, 128, 129, 255]], dtype=np.uint8)
    prepared = prepare_mask(Image.fromarray(values, "L"), (4, 1), blur=0, invert=False)
    assert prepared.image.mode == "L"
    assert list(np.asarray(prepared.image)[0]) == [0, 0, 255, 255]
    assert prepared.notes == ()


def test_painted_layer_uses_its_alpha() -> None:
    layer = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # an ImageEditor layer: transparent, strokes opaque
    layer.paste((255, 255, 255, 255), (2, 2, 6, 6))
    prepared = prepare_mask(layer, (8, 8), blur=0, invert=False)
    assert prepared.image.getbbox() == (2, 2, 6, 6)
    assert np.asarray(prepared.image).sum() == 16 * 255
    assert "transparency" in prepared.notes[0]


def test_opaque_rgba_mask_uses_its_colours() -> None:
    mask = Image.new("RGBA", (8, 8), (0, 0, 0, 255))
    mask.paste((255, 255, 255, 255), (0, 0, 4, 8))
    assert prepare_mask(mask, (8, 8), 0, False).image.getbbox() == (0, 0, 4, 8)


def test_sixteen_bit_mask() -> None:
    values = np.zeros((8, 8), dtype=np.uint16)
    values[:, 4:] = 65535
    prepared = prepare_mask(Image.fromarray(values), (8, 8), blur=0, invert=False)
    assert prepared.image.getbbox() == (4, 0, 8, 8)


def test_mask_of_another_size_is_resized_with_a_note() -> None:
    prepared = prepare_mask(box_mask((32, 32), (0, 0, 16, 32)), (64, 64), blur=0, invert=False)
    assert prepared.image.size == (64, 64)
    assert prepared.image.getbbox() == (0, 0, 32, 64)
    assert "32x32 resized to the image size 64x64" in prepared.notes[-1]


def test_invert_swaps_masked_and_kept() -> None:
    prepared = prepare_mask(box_mask((8, 8), (0, 0, 4, 8)), (8, 8), blur=0, invert=True)
    assert prepared.image.getbbox() == (4, 0, 8, 8)


def test_blur_matches_a1111_opencv_passes() -> None:
    mask = box_mask((64, 64), (16, 16, 48, 48))
    blurred = np.asarray(prepare_mask(mask, (64, 64), blur=4, invert=False).image)
    kernel = 2 * int(2.5 * 4 + 0.5) + 1
    expected = cv2.GaussianBlur(np.asarray(mask), (kernel, 1), 4)
    expected = cv2.GaussianBlur(expected, (1, kernel), 4)
    assert np.array_equal(blurred, expected)
    assert blurred[32, 32] == 255 and blurred[0, 0] == 0
    assert 0 < blurred[32, 16] < 255, "the edge is soft"


def test_overlay_mask_doubles() -> None:
    values = np.array([[0, 60, 128, 255]], dtype=np.uint8)
    assert list(np.asarray(mask_for_overlay(Image.fromarray(values, "L")))[0]) == [0, 120, 255, 255]


def only_masked(size: tuple[int, int], box: tuple[int, int, int, int], width: int, height: int, padding: int):
    request = Img2ImgRequest(
        init_image=Image.new("RGB", size),
        mask=box_mask(size, box),
        width=width,
        height=height,
        mask_blur=0,
        inpaint_full_res=True,
        inpaint_full_res_padding=padding,
    )
    return request.prepare_inputs()


def test_only_masked_crop_pads_and_clamps() -> None:
    assert only_masked((64, 64), (10, 20, 30, 40), 64, 64, padding=4).paste_box == (6, 16, 34, 44)
    assert only_masked((64, 64), (10, 20, 30, 40), 64, 64, padding=32).paste_box == (0, 0, 64, 64)


def test_only_masked_crop_grows_to_the_processing_ratio_inside_the_image() -> None:
    inputs = only_masked((256, 128), (200, 0, 256, 100), 96, 64, padding=4)
    left, top, right, bottom = inputs.paste_box
    assert (left, top, right, bottom) == (100, 0, 256, 104)
    assert abs((right - left) / (bottom - top) - 96 / 64) < 0.01
    assert inputs.init_image.size == inputs.mask.size == (96, 64)


# --- fill and composite -------------------------------------------------------------------------------------


def test_fill_paints_the_hole_with_nearby_colours() -> None:
    image = two_halves(64, 64, RED, BLUE)
    image.paste((0, 0, 0), (8, 24, 24, 40))  # a black hole in the red half
    mask = box_mask((64, 64), (8, 24, 24, 40))
    filled = np.asarray(fill_masked(image, mask)).astype(int)
    hole = filled[24:40, 8:24]
    assert hole[..., 0].min() > 200, "the hole takes the red around it"
    assert hole[..., 2].max() < 60
    unmasked = np.asarray(mask) == 0
    assert np.array_equal(filled[unmasked], np.asarray(image)[unmasked]), "unmasked pixels stay"


def test_composite_keeps_unmasked_pixels_byte_identical() -> None:
    original, generated = random_image(64, 64, seed=1), random_image(64, 64, seed=2)
    mask = prepare_mask(box_mask((64, 64), (16, 16, 48, 48)), (64, 64), blur=4, invert=False).image
    result = np.asarray(composite_unmasked(original, generated, mask))
    weights = np.asarray(mask)
    assert np.array_equal(result[weights == 0], np.asarray(original)[weights == 0])
    assert np.array_equal(result[weights == 255], np.asarray(generated)[weights == 255])
    edge = (weights > 0) & (weights < 255)
    assert edge.any()
    low = np.minimum(np.asarray(original), np.asarray(generated))[edge]
    high = np.maximum(np.asarray(original), np.asarray(generated))[edge]
    assert ((result[edge] >= low) & (result[edge] <= high)).all(), "edge pixels are blends"


def test_composite_refuses_different_sizes() -> None:
    with pytest.raises(ValueError, match="equal sizes"):
        composite_unmasked(random_image(8, 8), random_image(16, 16), Image.new("L", (8, 8)))


# --- outpainting --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "before", "after", "expected"),
    [(64, 8, 16, (8, 16)), (64, 5, 0, (8, 0)), (64, 0, 13, (0, 16)), (60, 8, 8, (8, 12)), (60, 3, 0, (12, 0))],
)
def test_outpaint_amounts_keep_multiples_of_8(size: int, before: int, after: int, expected: tuple) -> None:
    assert outpaint_amounts(size, before, after) == expected
    if before or after:
        assert (size + sum(expected)) % 8 == 0


def test_expand_canvas_grows_by_what_was_asked() -> None:
    image = random_image(64, 48)
    canvas = expand_canvas(image, left=16, right=0, up=8, down=24)
    assert canvas.image.size == (80, 80)
    assert canvas.mask.size == (80, 80)
    pixels, mask = np.asarray(canvas.image), np.asarray(canvas.mask)
    assert np.array_equal(pixels[8:56, 16:80], np.asarray(image)), "the original sits untouched"
    assert (mask[8:56, 16:80] == 0).all() and (mask[:8] == 255).all() and (mask[:, :16] == 255).all()
    assert np.array_equal(pixels[8:56, 0], np.asarray(image)[:, 0]), "edge pixels stretched to the left"
    assert np.array_equal(pixels[0, 16:], np.asarray(image)[0]), "and upwards"


def test_expand_canvas_rounds_up_and_overlaps() -> None:
    canvas = expand_canvas(random_image(64, 64), left=0, right=10, up=0, down=0, overlap=4)
    assert canvas.image.size == (80, 64)
    mask = np.asarray(canvas.mask)
    assert (mask[:, 60:] == 255).all(), "4 px of overlap into the original on the grown side"
    assert (mask[:, :60] == 0).all()


def test_expand_canvas_noise_is_seeded_and_only_outside() -> None:
    image = Image.new("RGB", (64, 64), (128, 128, 128))
    first = expand_canvas(image, 8, 8, 8, 8, fill="noise", seed=3)
    second = expand_canvas(image, 8, 8, 8, 8, fill="noise", seed=3)
    assert np.array_equal(np.asarray(first.image), np.asarray(second.image))
    pixels = np.asarray(first.image)
    assert (pixels[8:72, 8:72] == 128).all()
    assert pixels[:8].std() > 30


def test_expand_canvas_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="negative"):
        expand_canvas(random_image(8, 8), -8, 0, 0, 0)
    with pytest.raises(ValueError, match="fill"):
        expand_canvas(random_image(8, 8), 8, 0, 0, 0, fill="mirror")
