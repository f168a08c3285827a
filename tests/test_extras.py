"""Extras (A1111's postprocessing) with the real postprocessor: built-in upscalers, no weights, tiny images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from modules.options import Options
from modules.postprocess.service import Postprocessor
from modules.processing.extras import (
    Extras,
    ExtrasError,
    ExtrasRequest,
    combined_infotext,
    plan_upscale,
    sources_from_folder,
    sources_from_images,
)
from modules.processing.infotext import create_infotext, parse_infotext, read_infotext
from tests.helpers import REPO_ROOT

SOURCE_INFOTEXT = create_infotext(
    "a red fox, snow",
    "blurry",
    {"Steps": 20, "Sampler": "Euler a", "CFG scale": 7, "Seed": 123, "Size": "48x32", "Model hash": "45dee52b"},
)


def noisy_image(seed: int, size: tuple[int, int] = (48, 32)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def save_png(image: Image.Image, path: Path, infotext: str | None) -> Path:
    info = PngImagePlugin.PngInfo()
    if infotext:
        info.add_text("parameters", infotext)
    image.save(path, pnginfo=info)
    return path


@pytest.fixture
def extras(tmp_path: Path) -> Extras:
    data_dir = tmp_path / "data"
    models_dir = data_dir / "models"  # empty: no face restoration weights
    detector = REPO_ROOT / "configs" / "face-detection" / "yunet.onnx"
    options = Options()
    return Extras(Postprocessor(models_dir, options, detector), options, data_dir)


def test_single_image_keeps_the_source_infotext_and_adds_the_extras_keys(extras: Extras, tmp_path: Path) -> None:
    source = save_png(noisy_image(1), tmp_path / "fox.png", SOURCE_INFOTEXT)
    with Image.open(source) as opened:
        opened.load()
        request = ExtrasRequest(upscaling_resize=2, extras_upscaler_1="Lanczos")
        result = extras.run(request, sources_from_images([opened]))
    [output] = result.outputs
    assert output.image.size == (96, 64)
    assert output.postprocessing == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    assert output.path == extras.data_dir / "outputs" / "extras-images" / "00000.png"  # no date folder, as A1111
    with Image.open(output.path) as saved:
        assert saved.size == (96, 64)
        assert saved.info["parameters"] == SOURCE_INFOTEXT
        assert saved.info["extras"] == saved.info["postprocessing"] == output.postprocessing
    parsed = parse_infotext(output.infotext)
    assert parsed["Prompt"] == "a red fox, snow" and parsed["Seed"] == "123"
    assert parsed["Postprocess upscaler"] == "Lanczos" and parsed["Postprocess upscale by"] == "2"


def test_batch_over_a_folder_writes_one_result_per_image(extras: Extras, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index in range(3):
        save_png(noisy_image(index), inputs / f"picture{index}.png", None)
    (inputs / "notes.txt").write_text("not an image")
    request = ExtrasRequest(upscaling_resize=1.5, extras_upscaler_1="Nearest")
    result = extras.run(request, sources_from_folder(inputs), output_dir=tmp_path / "out", keep_images=False)
    assert [path.name for path in sorted((tmp_path / "out").iterdir())] == [
        "picture0.png",
        "picture1.png",
        "picture2.png",
    ]
    assert result.images == [] and len(result.saved_paths) == 3
    assert len(result.skipped) == 1 and "notes.txt" in result.skipped[0]
    for path in result.saved_paths:
        with Image.open(path) as saved:
            assert saved.size == (72, 48)
            assert "parameters" not in saved.info  # the sources had no infotext
            assert saved.info["extras"] == "Postprocess upscale by: 1.5, Postprocess upscaler: Nearest"


def test_batch_never_overwrites_and_relative_output_is_under_the_data_folder(extras: Extras, tmp_path: Path) -> None:
    path = save_png(noisy_image(5), tmp_path / "same.png", None)
    request = ExtrasRequest(upscaling_resize=1, extras_upscaler_1="Lanczos")
    first = extras.run(request, sources_from_images([path]), output_dir=Path("batch-out"))
    second = extras.run(request, sources_from_images([path]), output_dir=Path("batch-out"))
    assert first.saved_paths == [extras.data_dir / "batch-out" / "same.png"]
    assert second.saved_paths == [extras.data_dir / "batch-out" / "same-0000.png"]


def test_upscaler_2_visibility_blends_the_two_upscales(extras: Extras) -> None:
    image = noisy_image(7)
    request = ExtrasRequest(
        upscaling_resize=3,
        extras_upscaler_1="Lanczos",
        extras_upscaler_2="Nearest",
        extras_upscaler_2_visibility=0.25,
    )
    blended, parameters = extras.process_image(image, request)
    lanczos = image.resize((144, 96), Image.Resampling.LANCZOS)
    nearest = image.resize((144, 96), Image.Resampling.NEAREST)
    expected = np.asarray(Image.blend(lanczos, nearest, 0.25), dtype=np.int16)
    assert np.abs(np.asarray(blended, dtype=np.int16) - expected).max() <= 1
    assert np.abs(np.asarray(blended, dtype=np.int16) - np.asarray(lanczos, dtype=np.int16)).mean() > 5
    assert parameters["Postprocess upscaler 2"] == "Nearest"
    alone, parameters_alone = extras.process_image(
        image, request.model_copy(update={"extras_upscaler_2_visibility": 0})
    )
    assert np.array_equal(np.asarray(alone), np.asarray(lanczos))
    assert "Postprocess upscaler 2" not in parameters_alone


def test_scale_to_with_and_without_crop() -> None:
    cropped = plan_upscale((64, 48), ExtrasRequest(resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=100))
    assert cropped.size == (133, 100) and cropped.crop == (100, 100)
    assert cropped.parameters == {"Postprocess upscale to": "100x100", "Postprocess crop to": "100x100"}
    free = plan_upscale(
        (64, 48), ExtrasRequest(resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=100, upscaling_crop=False)
    )
    assert free.size == (133, 100) and free.crop is None
    assert free.parameters == {"Postprocess upscale to": "100x100"}
    capped = plan_upscale((64, 48), ExtrasRequest(upscaling_resize=4, max_side_length=128))
    assert capped.size == (128, 96) and capped.parameters["Max side length"] == 128


def test_scale_to_with_crop_gives_the_exact_size(extras: Extras) -> None:
    request = ExtrasRequest(resize_mode=1, upscaling_resize_w=40, upscaling_resize_h=40, extras_upscaler_1="Lanczos")
    image, parameters = extras.process_image(noisy_image(3), request)
    assert image.size == (40, 40)
    assert list(parameters) == ["Postprocess upscale to", "Postprocess crop to", "Postprocess upscaler"]


def test_face_restore_with_missing_weights_says_where_to_put_them(extras: Extras) -> None:
    for request, name, folder in (
        (ExtrasRequest(gfpgan_visibility=1.0), "GFPGAN", "GFPGAN"),
        (ExtrasRequest(codeformer_visibility=0.5, codeformer_weight=0.3), "CodeFormer", "Codeformer"),
    ):
        with pytest.raises(FileNotFoundError) as raised:
            extras.run(request, sources_from_images([noisy_image(2)]))
        message = str(raised.value)
        assert name in message and str(extras.data_dir / "models" / folder) in message
    assert not (extras.data_dir / "outputs" / "extras-images").exists()


def test_jpeg_output_carries_both_texts_in_exif(extras: Extras) -> None:
    extras.options.samples_format = "jpg"
    image = noisy_image(4)
    image.info["parameters"] = SOURCE_INFOTEXT
    result = extras.run(ExtrasRequest(extras_upscaler_1="Lanczos"), sources_from_images([image]))
    assert "postprocessing" not in image.info  # the caller's image is left as it was
    with Image.open(result.saved_paths[0]) as saved:
        assert saved.format == "JPEG" and saved.size == (96, 64)
        parsed = parse_infotext(read_infotext(saved))
    assert parsed["Negative prompt"] == "blurry" and parsed["Steps"] == "20"
    assert parsed["Postprocess upscaler"] == "Lanczos"


def test_combined_infotext_without_a_parameter_line() -> None:
    assert combined_infotext(None, "Postprocess upscaler: Lanczos") == "Postprocess upscaler: Lanczos"
    assert combined_infotext("just a prompt", "A: 1") == "just a prompt\nA: 1"
    assert combined_infotext(SOURCE_INFOTEXT, "") == SOURCE_INFOTEXT


def test_missing_input_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ExtrasError, match="input directory not found"):
        sources_from_folder(tmp_path / "absent")
