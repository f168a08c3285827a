"""Saving outputs in A1111's layout: ``folder/YYYY-MM-DD/NNNNN-SEED.png``, grids ``grid-NNNN.png``, params.txt.

Every file is written atomically (temporary file in the same folder, fsync, ``os.replace``), so a reader never
sees half an image and a failed save leaves nothing behind. The infotext goes in the PNG "parameters" text chunk
or, for JPEG and WEBP, in the EXIF UserComment as A1111 writes it.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

from PIL import Image, PngImagePlugin

from modules.processing.infotext import build_user_comment_exif

logger = logging.getLogger(__name__)

# file extension -> Pillow format name
IMAGE_FORMATS = MappingProxyType({"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"})
JPEG_QUALITY = 80  # A1111's default "jpeg_quality", used for JPEG and lossy WEBP
MAX_NAME_TRIES = 500  # as A1111: after this many taken names in a row, give up
GRID_BASENAME = "grid"
GRID_BACKGROUND = (255, 255, 255)  # A1111's default grid_background_color "#ffffff"


class ImageSaveError(Exception):
    """An image could not be written; the message says why and where, for the UI and the API. ``disk_full``: the
    disk (or the quota) is full, which the API answers with 507 Insufficient Storage."""

    def __init__(self, message: str, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def save_error(error: OSError, path: Path) -> ImageSaveError:
    return ImageSaveError(describe_os_error(error, path), disk_full=error.errno in DISK_FULL_ERRNOS)


def output_folder(folder: Path, date_subfolder: bool, now: datetime | None) -> Path:
    """The folder itself, or its ``YYYY-MM-DD`` subfolder (A1111's default directory pattern "[date]")."""
    if not date_subfolder:
        return folder
    return folder / (now or datetime.now()).date().isoformat()


def next_sequence_number(folder: Path, basename: str = "") -> int:
    """A1111's get_next_sequence_number: the largest leading number of the folder's names, plus one."""
    prefix = f"{basename}-" if basename else ""
    largest = -1
    for entry in folder.iterdir() if folder.is_dir() else ():
        if not entry.name.startswith(prefix):
            continue
        leading = entry.name[len(prefix) :].split(".")[0].split("-")[0]
        if leading.isdigit():
            largest = max(largest, int(leading))
    return largest + 1


def free_file_name(folder: Path, basename: str, decoration: str, extension: str) -> Path:
    """``NNNNN-decoration.ext`` (no basename) or ``basename-NNNN.ext``, skipping names already taken."""
    first = next_sequence_number(folder, basename)
    suffix = f"-{decoration}" if decoration else ""
    for number in range(first, first + MAX_NAME_TRIES):
        stem = f"{basename}-{number:04}" if basename else f"{number:05}"
        path = folder / f"{stem}{suffix}.{extension}"
        if not path.exists():
            return path
    raise ImageSaveError(f"no free file name in {folder} after {MAX_NAME_TRIES} tries (from number {first})")


def pillow_format(file_format: str) -> str:
    try:
        return IMAGE_FORMATS[file_format.lower().lstrip(".")]
    except KeyError:
        raise ImageSaveError(
            f"unsupported image format {file_format!r}; use one of {', '.join(IMAGE_FORMATS)}"
        ) from None


def prepare_for_format(image: Image.Image, format_name: str) -> Image.Image:
    """JPEG and WEBP take no alpha and no 16-bit: flatten RGBA, scale 16-bit down (as A1111 does)."""
    if format_name == "PNG":
        return image
    if image.mode.startswith("I;16"):
        return image.point(lambda value: value * (255 / 65535)).convert("RGB")
    if image.mode not in ("RGB", "L"):
        return image.convert("RGB")
    return image


def save_options(format_name: str, infotext: str | None) -> dict[str, object]:
    """Pillow save keywords: the infotext in a PNG text chunk or an EXIF UserComment."""
    if format_name == "PNG":
        if infotext is None:
            return {}
        png_info = PngImagePlugin.PngInfo()
        png_info.add_text("parameters", infotext)  # Pillow writes iTXt when the text is not Latin-1
        return {"pnginfo": png_info}
    options: dict[str, object] = {"quality": JPEG_QUALITY}
    if infotext is not None:
        options["exif"] = build_user_comment_exif(infotext)
    return options


def describe_os_error(error: OSError, path: Path) -> str:
    if error.errno in DISK_FULL_ERRNOS:
        return f"disk full: could not save {path} (no space left on device); free some space or choose another folder"
    return f"could not save {path}: {error.strerror or error}"


def write_file_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, fsync, rename; on failure the temporary file is removed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise save_error(error, path) from error
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_name, path)
    except OSError as error:
        Path(temp_name).unlink(missing_ok=True)
        raise save_error(error, path) from error
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_image_atomic(image: Image.Image, path: Path, infotext: str | None, file_format: str = "png") -> None:
    """Write one image with its infotext atomically (see ``write_file_atomic``)."""
    format_name = pillow_format(file_format)
    prepared = prepare_for_format(image, format_name)
    options = save_options(format_name, infotext)
    write_file_atomic(path, lambda file: prepared.save(file, format=format_name, **options))


def save_image(
    image: Image.Image,
    folder: Path,
    seed: int,
    infotext: str | None,
    file_format: str = "png",
    date_subfolder: bool = True,
    now: datetime | None = None,
) -> Path:
    """Save one output as ``folder/YYYY-MM-DD/NNNNN-SEED.ext``; returns the path written."""
    path = save_numbered(image, folder, "", str(seed), infotext, file_format, date_subfolder, now)
    logger.info("image saved path=%s seed=%s", path, seed)
    return path


def save_numbered(
    image: Image.Image,
    folder: Path,
    basename: str,
    decoration: str,
    infotext: str | None,
    file_format: str,
    date_subfolder: bool,
    now: datetime | None,
) -> Path:
    """Write ``image`` under the next free number in the (dated) folder, atomically."""
    target_folder = output_folder(folder, date_subfolder, now)
    extension = file_format.lower().lstrip(".")
    pillow_format(extension)
    path = free_file_name(target_folder, basename, decoration, extension)
    write_image_atomic(image, path, infotext, extension)
    return path


def grid_rows(count: int) -> int:
    """A1111's default grid rows (n_rows -1): round(sqrt(count)), at most count, at least 1."""
    return max(1, min(count, round(math.sqrt(count))))


def make_grid(images: Sequence[Image.Image], rows: int | None = None) -> Image.Image:
    """Images in rows of ``ceil(count / rows)``, each centred in a cell of the largest size, white background."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    row_count = grid_rows(len(images)) if rows is None else max(1, min(rows, len(images)))
    columns = math.ceil(len(images) / row_count)
    cell_width = max(image.width for image in images)
    cell_height = max(image.height for image in images)
    grid = Image.new("RGB", (columns * cell_width, row_count * cell_height), GRID_BACKGROUND)
    for index, image in enumerate(images):
        left = index % columns * cell_width + (cell_width - image.width) // 2
        top = index // columns * cell_height + (cell_height - image.height) // 2
        grid.paste(image.convert("RGB"), (left, top))
    return grid


def save_grid(
    grid: Image.Image,
    folder: Path,
    infotext: str | None,
    file_format: str = "png",
    date_subfolder: bool = True,
    now: datetime | None = None,
) -> Path:
    """Save a grid as ``folder/YYYY-MM-DD/grid-NNNN.ext`` (A1111 numbers grids with four digits)."""
    path = save_numbered(grid, folder, GRID_BASENAME, "", infotext, file_format, date_subfolder, now)
    logger.info("grid saved path=%s", path)
    return path


def write_params_txt(path: Path, infotext: str) -> bool:
    """Write the last infotext to params.txt (A1111's "paste last parameters" reads it), atomically.

    A convenience, never a reason for a job to fail: a failure (a full disk) is logged and gives False."""
    try:
        write_file_atomic(path, lambda file: file.write(infotext.encode("utf-8")))
    except ImageSaveError as error:
        logger.warning("params.txt not written path=%s error=%s", path, error)
        return False
    return True
