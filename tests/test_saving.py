"""Saving: A1111 file layout and numbering, infotext inside the files, atomic writes, grids, params.txt."""

from __future__ import annotations

import errno
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules.processing.infotext import read_infotext
from modules.processing.saving import (
    ImageSaveError,
    describe_os_error,
    grid_rows,
    make_grid,
    next_sequence_number,
    save_grid,
    save_image,
    write_image_atomic,
    write_params_txt,
)

DAY = datetime(2024, 5, 6, 13, 30)
INFOTEXT = 'a cat, ünï ✓\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, Seed: 42, Size: 64x64, Lora hashes: "a: 1"'


def solid(color: tuple[int, ...], mode: str = "RGB", size: tuple[int, int] = (64, 64)) -> Image.Image:
    return Image.new(mode, size, color)


def leftover_temp_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.name.endswith(".tmp")]


def test_first_image_goes_to_dated_folder_as_00000_seed(tmp_path: Path) -> None:
    path = save_image(solid((255, 0, 0)), tmp_path / "txt2img-images", 42, INFOTEXT, now=DAY)
    assert path == tmp_path / "txt2img-images" / "2024-05-06" / "00000-42.png"
    with Image.open(path) as loaded:
        assert read_infotext(loaded) == INFOTEXT
        assert loaded.getpixel((0, 0)) == (255, 0, 0)
    assert leftover_temp_files(tmp_path) == []


def test_number_follows_largest_existing_prefix(tmp_path: Path) -> None:
    day_folder = tmp_path / "2024-05-06"
    day_folder.mkdir()
    for name in ("00003-1.png", "00007-99.jpg", "notes.txt", "grid-0012.png", "00002.png"):
        (day_folder / name).write_bytes(b"x")
    assert next_sequence_number(day_folder) == 8
    path = save_image(solid((0, 0, 0)), tmp_path, 5, None, now=DAY)
    assert path.name == "00008-5.png"
    assert save_image(solid((0, 0, 0)), tmp_path, 5, None, now=DAY).name == "00009-5.png"


def test_without_date_subfolder(tmp_path: Path) -> None:
    path = save_image(solid((0, 0, 0)), tmp_path, 7, None, date_subfolder=False)
    assert path == tmp_path / "00000-7.png"


@pytest.mark.parametrize("file_format", ["jpg", "jpeg", "webp", "png"])
def test_infotext_is_stored_in_every_format(tmp_path: Path, file_format: str) -> None:
    path = save_image(solid((10, 200, 30, 128), "RGBA"), tmp_path, 1, INFOTEXT, file_format=file_format, now=DAY)
    assert path.suffix == f".{file_format}"
    with Image.open(path) as loaded:
        assert read_infotext(loaded) == INFOTEXT


def test_16_bit_image_saves_as_jpeg_scaled_to_8_bit(tmp_path: Path) -> None:
    image = Image.fromarray(np.full((16, 16), 65535, dtype=np.uint16))
    path = save_image(image, tmp_path, 1, None, file_format="jpg", now=DAY)
    with Image.open(path) as loaded:
        assert loaded.convert("L").getpixel((8, 8)) >= 250


def test_unknown_format_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImageSaveError, match="unsupported image format 'bmp'"):
        save_image(solid((0, 0, 0)), tmp_path, 1, None, file_format="bmp")
    assert list(tmp_path.iterdir()) == []


def test_folder_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "outputs"
    not_a_folder.write_text("I am a file")
    with pytest.raises(ImageSaveError, match="could not save"):
        save_image(solid((0, 0, 0)), not_a_folder, 1, INFOTEXT, now=DAY)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["outputs"]


def test_failed_rename_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "00000-1.png"
    target.mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(ImageSaveError, match=r"00000-1\.png"):
        write_image_atomic(solid((0, 0, 0)), target, INFOTEXT)
    assert leftover_temp_files(tmp_path) == []
    assert target.is_dir()


def test_disk_full_message_says_so() -> None:
    message = describe_os_error(OSError(errno.ENOSPC, "No space left on device"), Path("/out/00000-1.png"))
    assert message.startswith("disk full")
    assert "/out/00000-1.png" in message


def test_real_disk_full_error_is_recognised() -> None:
    full_device = Path("/dev/full")  # every write to it fails with ENOSPC
    if not full_device.exists():
        pytest.skip("/dev/full is absent on this system")
    with pytest.raises(OSError) as caught, full_device.open("wb", buffering=0) as device:
        device.write(b"x")
    assert describe_os_error(caught.value, Path("out.png")).startswith("disk full")


@pytest.mark.parametrize(
    ("count", "rows"), [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2), (6, 2), (7, 3), (8, 3), (9, 3), (16, 4)]
)
def test_grid_rows_follow_a1111(count: int, rows: int) -> None:
    assert grid_rows(count) == rows


def test_grid_places_images_row_by_row_on_white() -> None:
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    grid = make_grid([solid(color) for color in colors])
    assert grid.size == (128, 128)
    assert grid.getpixel((10, 10)) == (255, 0, 0)
    assert grid.getpixel((100, 10)) == (0, 255, 0)
    assert grid.getpixel((10, 100)) == (0, 0, 255)
    assert grid.getpixel((100, 100)) == (255, 255, 255)


def test_grid_centres_smaller_images() -> None:
    grid = make_grid([solid((0, 0, 0), size=(64, 64)), solid((0, 0, 0), size=(32, 32))], rows=1)
    assert grid.size == (128, 64)
    assert grid.getpixel((64 + 2, 2)) == (255, 255, 255)
    assert grid.getpixel((96, 32)) == (0, 0, 0)


def test_save_grid_names_grids_as_a1111(tmp_path: Path) -> None:
    grid = make_grid([solid((0, 0, 0))] * 2)
    first = save_grid(grid, tmp_path / "txt2img-grids", INFOTEXT, now=DAY)
    second = save_grid(grid, tmp_path / "txt2img-grids", INFOTEXT, now=DAY)
    assert first == tmp_path / "txt2img-grids" / "2024-05-06" / "grid-0000.png"
    assert second.name == "grid-0001.png"
    with Image.open(first) as loaded:
        assert read_infotext(loaded) == INFOTEXT


def test_params_txt_holds_the_last_infotext(tmp_path: Path) -> None:
    path = tmp_path / "params.txt"
    write_params_txt(path, "first")
    write_params_txt(path, INFOTEXT)
    assert path.read_text(encoding="utf-8") == INFOTEXT
    assert leftover_temp_files(tmp_path) == []
