"""Saving outputs in A1111's layout and with A1111's saving options.

Default names as A1111: ``folder/YYYY-MM-DD/NNNNN-SEED.png``, grids ``grid-NNNN.png``, params.txt. The saving
options (``samples_filename_pattern``, ``directories_filename_pattern``, ``save_images_add_number`` ...) name files
through modules/processing/filenames.py, which also keeps every name inside the output folder.

Every file is written atomically (temporary file in the same folder, fsync, ``os.replace``), so a reader never
sees half an image and a failed save leaves nothing behind. The infotext goes in the PNG "parameters" text chunk,
for JPEG, WEBP and AVIF in the EXIF UserComment as A1111 writes it, for GIF in the comment; ``save_txt`` writes it
beside the image as ``name.txt`` too.
"""

from __future__ import annotations

import errno
import itertools
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import Any, BinaryIO

from PIL import Image, PngImagePlugin, features

from modules.options import Options
from modules.processing.filenames import (
    DEFAULT_MAX_LENGTH,
    UNSAFE_PATH_CHARS,
    FilenameGenerator,
    FilenameValues,
    NameRules,
    UnsafePathError,
    contained_path,
    fit_stem,
    name_length_limit,
    relative_folder,
    safe_path_part,
)
from modules.processing.infotext import build_user_comment_exif

logger = logging.getLogger(__name__)

# file extension -> Pillow format name (the same names as modules/options.py IMAGE_FORMAT_NAMES)
IMAGE_FORMATS = MappingProxyType(
    {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF", "gif": "GIF"}
)
# A1111: JPEG and WEBP have size limits; a larger image is saved as PNG instead.
MAX_SIDE = MappingProxyType({"JPEG": 65535, "WEBP": 16383})
JPEG_QUALITY = 80  # A1111's default "jpeg_quality", used for JPEG, lossy WEBP and AVIF
MAX_NAME_TRIES = 500  # as A1111: after this many taken names in a row, give up
NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS})
COLLISION_SUFFIX_ROOM = 8  # characters kept free in a name for "-N" (save_images_replace_action)
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


@dataclass
class ImageSaveEvent:
    """One image about to be saved, or just saved (A1111's ImageSaveParams): a listener before saving may replace
    ``image``, ``filename`` and ``pnginfo`` (the infotext is its "parameters" entry; other entries become PNG text
    chunks); ``subject`` is the job's run (or whatever the saving code names), ``None`` when there is none."""

    image: Image.Image
    subject: Any
    filename: str
    pnginfo: dict[str, Any]


@dataclass
class SaveListeners:
    """Called around every image and grid that the saving functions write (A1111's on_before_image_saved and
    on_image_saved); empty lists cost nothing."""

    before: list[Callable[[ImageSaveEvent], None]] = field(default_factory=list)
    after: list[Callable[[ImageSaveEvent], None]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.before or self.after)


@dataclass(frozen=True)
class SavingSettings:
    """The saving options one job uses (A1111 names and defaults); ``from_options`` reads them from Options.

    ``filenames_max_length`` is A1111's ``--filenames-max-length`` (the longest token value in a name).
    """

    samples_filename_pattern: str = ""
    save_images_add_number: bool = True
    save_images_replace_action: str = "Replace"
    save_to_dirs: bool = True
    grid_save_to_dirs: bool = True
    directories_filename_pattern: str = "[date]"
    directories_max_prompt_words: int = 8
    grid_extended_filename: bool = False
    jpeg_quality: int = JPEG_QUALITY
    webp_lossless: bool = False
    enable_pnginfo: bool = True
    save_txt: bool = False
    filenames_max_length: int = DEFAULT_MAX_LENGTH

    @classmethod
    def from_options(cls, options: Options, **overrides: object) -> SavingSettings:
        known = {item.name: getattr(options, item.name) for item in fields(cls) if item.name in Options.model_fields}
        return cls(**{**known, **overrides})

    @property
    def name_rules(self) -> NameRules:
        return NameRules(max_prompt_words=self.directories_max_prompt_words, max_length=self.filenames_max_length)


@dataclass(frozen=True)
class SaveTarget:
    """Where and how one image is saved: the resolved folder under the output folder, and the name to use."""

    folder: Path
    decoration: str
    numbered: bool  # NNNNN- before the decoration (save_images_add_number, or nothing else to name by)
    replaces: bool  # a taken name is written over (save_images_replace_action "Replace", without number)


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


def numbered_names(folder: Path, basename: str, decoration: str, extension: str) -> Iterator[Path]:
    """``NNNNN-decoration.ext`` (no basename) or ``basename-NNNN-decoration.ext``, from the next sequence number on
    (A1111 tries 500 numbers)."""
    first = next_sequence_number(folder, basename)
    suffix = f"-{decoration}" if decoration else ""
    for number in range(first, first + MAX_NAME_TRIES):
        stem = f"{basename}-{number:04}" if basename else f"{number:05}"
        yield folder / f"{stem}{suffix}.{extension}"


def suffixed_names(folder: Path, stem: str, extension: str) -> Iterator[Path]:
    """A1111's "Add number suffix": ``stem.ext``, then ``stem-1.ext``, ``stem-2.ext`` ..."""
    yield folder / f"{stem}.{extension}"
    for number in range(1, MAX_NAME_TRIES):
        yield folder / f"{stem}-{number}.{extension}"


def free_file_name(folder: Path, basename: str, decoration: str, extension: str) -> Path:
    """The first numbered name (see ``numbered_names``) not taken yet."""
    for path in numbered_names(folder, basename, decoration, extension):
        if not path.exists():
            return path
    raise ImageSaveError(f"no free file name in {folder} after {MAX_NAME_TRIES} tries")


def pillow_format(file_format: str) -> str:
    """The Pillow format for a file extension; an unknown one, or AVIF without Pillow's AVIF support, is refused."""
    try:
        format_name = IMAGE_FORMATS[file_format.lower().lstrip(".")]
    except KeyError:
        raise ImageSaveError(
            f"unsupported image format {file_format!r}; use one of {', '.join(IMAGE_FORMATS)}"
        ) from None
    if format_name == "AVIF" and not features.check("avif"):
        raise ImageSaveError("this Pillow has no AVIF support; choose png, jpg or webp")
    return format_name


def prepare_for_format(image: Image.Image, format_name: str) -> Image.Image:
    """Formats other than PNG take no alpha and no 16-bit: flatten RGBA, scale 16-bit down (as A1111 does)."""
    if format_name == "PNG":
        return image
    if image.mode.startswith("I;16"):
        return image.point(lambda value: value * (255 / 65535)).convert("RGB")
    if image.mode not in ("RGB", "L"):
        return image.convert("RGB")
    return image


def save_options(
    format_name: str, infotext: str | None, quality: int = JPEG_QUALITY, webp_lossless: bool = False
) -> dict[str, object]:
    """Pillow save keywords: the infotext in a PNG text chunk, an EXIF UserComment or a GIF comment (None: no
    infotext); ``quality`` for JPEG, WEBP and AVIF, ``webp_lossless`` for WEBP."""
    if format_name == "PNG":
        if infotext is None:
            return {}
        png_info = PngImagePlugin.PngInfo()
        png_info.add_text("parameters", infotext)  # Pillow writes iTXt when the text is not Latin-1
        return {"pnginfo": png_info}
    if format_name == "GIF":
        return {} if infotext is None else {"comment": infotext.encode("utf-8")}
    options: dict[str, object] = {"quality": quality}
    if format_name == "WEBP":
        options["lossless"] = webp_lossless
    if infotext is not None:
        options["exif"] = build_user_comment_exif(infotext)
    return options


def describe_os_error(error: OSError, path: Path) -> str:
    if error.errno in DISK_FULL_ERRNOS:
        return f"disk full: could not save {path} (no space left on device); free some space or choose another folder"
    return f"could not save {path}: {error.strerror or error}"


@contextmanager
def temporary_file(folder: Path, name: str, write: Callable[[BinaryIO], None]) -> Iterator[str]:
    """A temporary file in ``folder`` holding what ``write`` wrote (fsynced), removed on exit; an OSError inside
    becomes an ImageSaveError that names ``folder / name``."""
    target = folder / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # the temporary name is short, so that it fits wherever the final name fits
        handle, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{name[:40]}.", suffix=".tmp")
    except OSError as error:
        raise save_error(error, target) from error
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        yield temp_name
    except OSError as error:
        raise save_error(error, target) from error
    finally:
        Path(temp_name).unlink(missing_ok=True)


def write_file_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, fsync, rename over ``path``; on failure the temporary
    file is removed."""
    with temporary_file(path.parent, path.name, write) as temp_name:
        os.replace(temp_name, path)


def write_file_first_free(names: Iterable[Path], write: Callable[[BinaryIO], None]) -> Path:
    """Write once, then give the file the first of ``names`` (all in one folder) that is free; returns it.

    The name is claimed with a hard link, which fails when the name exists, so two workers saving at once never
    overwrite each other's image (A1111 checks, then renames). Written by hand: no library offers this."""
    candidates = iter(names)
    first = next(candidates)
    with temporary_file(first.parent, first.name, write) as temp_name:
        for path in itertools.chain([first], candidates):
            if claim_name(temp_name, path):
                return path
    raise ImageSaveError(f"no free file name in {first.parent} after {MAX_NAME_TRIES} tries (from {first.name})")


def claim_name(temp_name: str, path: Path) -> bool:
    """Hard-link the temporary file as ``path``; False when the name is taken. Where the file system has no hard
    links (FAT, some network shares), check and rename instead."""
    try:
        os.link(temp_name, path)
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in NO_HARD_LINKS:
            raise
        if path.exists():
            return False
        os.replace(temp_name, path)
    return True


def image_writer(
    image: Image.Image,
    infotext: str | None,
    file_format: str,
    settings: SavingSettings,
    extra_text: dict[str, str] | None = None,
) -> Callable[[BinaryIO], None]:
    """What writes ``image`` in ``file_format`` with ``settings``' quality, lossless WEBP and infotext choice
    (``enable_pnginfo``) into an open file; ``extra_text``: more PNG text chunks (what extensions add)."""
    format_name = pillow_format(file_format)
    prepared = prepare_for_format(image, format_name)
    embedded = infotext if settings.enable_pnginfo else None
    options = save_options(format_name, embedded, settings.jpeg_quality, settings.webp_lossless)
    if extra_text and format_name == "PNG" and settings.enable_pnginfo:
        png_info = options.get("pnginfo") or PngImagePlugin.PngInfo()
        for key, value in extra_text.items():
            png_info.add_text(key, value)
        options["pnginfo"] = png_info
    return lambda file: prepared.save(file, format=format_name, **options)


def write_image_atomic(
    image: Image.Image,
    path: Path,
    infotext: str | None,
    file_format: str = "png",
    settings: SavingSettings | None = None,
) -> None:
    """Write one image with its infotext atomically over ``path`` (see ``write_file_atomic``)."""
    write_file_atomic(path, image_writer(image, infotext, file_format, settings or SavingSettings()))


def legacy_settings(settings: SavingSettings | None, date_subfolder: bool | None, **legacy: object) -> SavingSettings:
    """The settings of a call: ``settings`` or, for the older ``date_subfolder`` form, defaults with it."""
    if settings is not None:
        if date_subfolder is not None:
            raise TypeError("pass either settings or date_subfolder, not both")
        return settings
    in_folder = True if date_subfolder is None else date_subfolder
    return SavingSettings(save_to_dirs=in_folder, grid_save_to_dirs=in_folder, **legacy)


def save_image(
    image: Image.Image,
    folder: Path,
    seed: int | None,
    infotext: str | None,
    file_format: str = "png",
    date_subfolder: bool | None = None,
    now: datetime | None = None,
    *,
    values: FilenameValues | None = None,
    settings: SavingSettings | None = None,
    suffix: str = "",
    listeners: SaveListeners | None = None,
    subject: Any = None,
) -> Path:
    """Save one output under ``folder`` as A1111's save_image does; returns the path written.

    With ``values`` and ``settings`` the saving options apply (patterns, number, formats, infotext, text file);
    ``values.seed`` must be ``seed``. Without ``values`` there is no prompt to name by: the name is
    ``NNNNN-SEED.ext`` in the ``YYYY-MM-DD`` folder, or in ``folder`` itself when ``date_subfolder`` is False.
    ``suffix`` goes after the name ("-before-highres-fix").
    """
    if values is None:
        values = FilenameValues(seed=seed)
        settings = legacy_settings(settings, date_subfolder, samples_filename_pattern="[seed]")
    else:
        settings = legacy_settings(settings, date_subfolder)
    if values.seed != seed:
        raise ValueError(f"seed {seed} differs from values.seed {values.seed}")
    saved = SaveListenerCall(listeners, subject)
    path = save_named(
        image, folder, "", values, infotext, file_format, settings, now, grid=False, suffix=suffix, listeners=saved
    )
    logger.info("image saved path=%s seed=%s", path, seed)
    return path


def save_named(
    image: Image.Image,
    folder: Path,
    basename: str,
    values: FilenameValues,
    infotext: str | None,
    file_format: str,
    settings: SavingSettings,
    now: datetime | None,
    grid: bool,
    suffix: str = "",
    listeners: SaveListenerCall | None = None,
) -> Path:
    """A1111's save_image: folder pattern, file name pattern, number, then the image and its text file; the
    listeners (extensions) are called before (they may change the image, name and infotext) and after."""
    extension = format_for_size(image, file_format.lower().lstrip("."))
    pillow_format(extension)
    generator = FilenameGenerator(values, image, settings.name_rules, now, basename)
    target = save_target(folder, generator, settings, grid, suffix, extension)
    names = candidate_names(folder, target, basename, extension)
    if listeners:
        return save_with_listeners(image, names, target, infotext, extension, settings, listeners)
    write = image_writer(image, infotext, extension, settings)
    if target.replaces:
        path = next(names)
        write_file_atomic(path, write)
    else:
        path = write_file_first_free(names, write)
    write_text_file(path, infotext, settings)
    return path


def write_text_file(path: Path, infotext: str | None, settings: SavingSettings) -> None:
    if settings.save_txt and infotext is not None:
        write_file_atomic(path.with_suffix(".txt"), lambda file: file.write(f"{infotext}\n".encode()))


@dataclass
class SaveListenerCall:
    """The listeners of one save call, with the job it belongs to."""

    listeners: SaveListeners | None
    subject: Any = None

    def __bool__(self) -> bool:
        return bool(self.listeners)


def save_with_listeners(
    image: Image.Image,
    names: Iterator[Path],
    target: SaveTarget,
    infotext: str | None,
    extension: str,
    settings: SavingSettings,
    call: SaveListenerCall,
) -> Path:
    """A1111's order: the name is chosen first (the first free one), the before listeners may change the image,
    the name and the infotext, the file is written there, then the after listeners."""
    listeners = call.listeners
    assert listeners is not None
    chosen = next(names) if target.replaces else next(path for path in names if not path.exists())
    event = ImageSaveEvent(image, call.subject, str(chosen), {} if infotext is None else {"parameters": infotext})
    for listener in listeners.before:
        listener(event)
    path = Path(event.filename)
    infotext = event.pnginfo.get("parameters")
    extra = {str(key): str(value) for key, value in event.pnginfo.items() if key != "parameters"}
    write_file_atomic(path, image_writer(event.image, infotext, extension, settings, extra))
    write_text_file(path, infotext, settings)
    for listener in listeners.after:
        listener(event)
    return path


def format_for_size(image: Image.Image, extension: str) -> str:
    """A1111: an image too large for JPEG or WEBP is saved as PNG."""
    limit = MAX_SIDE.get(IMAGE_FORMATS.get(extension, ""))
    if limit is not None and max(image.size) > limit:
        logger.warning("image too large for format=%s size=%sx%s; saving as png", extension, *image.size)
        return "png"
    return extension


def save_target(
    folder: Path, generator: FilenameGenerator, settings: SavingSettings, grid: bool, suffix: str, extension: str
) -> SaveTarget:
    """The subfolder (``directories_filename_pattern`` when saving to dirs) and the name decoration (A1111), cut
    to the file system's name length; without number, a decoration that cleaning empties falls back to it."""
    relative = PurePath()
    if settings.grid_save_to_dirs if grid else settings.save_to_dirs:
        pattern = settings.directories_filename_pattern or "[prompt_words]"
        relative = relative_folder(generator.apply(pattern), settings.filenames_max_length)
    if relative.parts:
        contained(folder, relative)
    target_folder = folder / relative
    limit = name_length_limit(target_folder) - COLLISION_SUFFIX_ROOM
    decoration = (generator.apply(file_pattern(generator, settings, grid)) + suffix).translate(UNSAFE_PATH_CHARS)
    if not settings.save_images_add_number:
        stem = safe_path_part(fit_stem(decoration.strip(" ."), extension, limit - 1), limit)
        if stem:
            replaces = settings.save_images_replace_action == "Replace"
            return SaveTarget(folder=target_folder, decoration=stem, numbered=False, replaces=replaces)
    number_room = len(generator.basename) + 6 if generator.basename else 6
    decoration = fit_stem(decoration.strip(" ."), extension, limit - number_room)
    return SaveTarget(folder=target_folder, decoration=decoration, numbered=True, replaces=False)


def file_pattern(generator: FilenameGenerator, settings: SavingSettings, grid: bool) -> str:
    """A1111: no name but the number for a grid (unless grid_extended_filename) or an image without seed; else
    samples_filename_pattern, by default "[seed]", or "[seed]-[prompt_spaces]" when not saving to subfolders."""
    if (grid and not settings.grid_extended_filename) or generator.values.seed is None:
        return ""
    if settings.save_to_dirs:
        return settings.samples_filename_pattern or "[seed]"
    return settings.samples_filename_pattern or "[seed]-[prompt_spaces]"


def contained(folder: Path, relative: PurePath) -> None:
    try:
        contained_path(folder, relative)
    except UnsafePathError as error:
        raise ImageSaveError(str(error)) from error


def candidate_names(folder: Path, target: SaveTarget, basename: str, extension: str) -> Iterator[Path]:
    """The names to try in order: numbered (``NNNNN-decoration``), or the decoration itself then with a "-N"
    suffix; each checked to lie inside ``folder``."""
    if target.numbered:
        names = numbered_names(target.folder, basename, target.decoration, extension)
    else:
        names = suffixed_names(target.folder, target.decoration, extension)
    for path in names:
        contained(folder, path.relative_to(folder))
        yield path


def grid_rows(count: int) -> int:
    """A1111's default grid rows (n_rows -1): round(sqrt(count)), at most count, at least 1."""
    return max(1, min(count, round(math.sqrt(count))))


@dataclass
class GridLayout:
    """A grid's images and shape before they are pasted (A1111's ImageGridLoopParams): a listener may change the
    images, the columns and the rows, and the grid is laid out by what it leaves."""

    imgs: list[Image.Image] = field(default_factory=list)
    cols: int = 0
    rows: int = 0


GridListener = Callable[[GridLayout], None]


def make_grid(
    images: Sequence[Image.Image], rows: int | None = None, listeners: Sequence[GridListener] = ()
) -> Image.Image:
    """Images in rows of ``ceil(count / rows)``, each centred in a cell of the largest size, white background.

    ``listeners`` (A1111's on_image_grid) see the layout before it is drawn and may change it; as in A1111 the cell
    size stays that of the images handed in."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    row_count = grid_rows(len(images)) if rows is None else max(1, min(rows, len(images)))
    layout = GridLayout(list(images), math.ceil(len(images) / row_count), row_count)
    for listener in listeners:
        listener(layout)
    columns, row_count = max(1, int(layout.cols)), max(1, int(layout.rows))
    cell_width = max(image.width for image in images)
    cell_height = max(image.height for image in images)
    grid = Image.new("RGB", (columns * cell_width, row_count * cell_height), GRID_BACKGROUND)
    for index, image in enumerate(layout.imgs):
        left = index % columns * cell_width + (cell_width - image.width) // 2
        top = index // columns * cell_height + (cell_height - image.height) // 2
        grid.paste(image.convert("RGB"), (left, top))
    return grid


def save_grid(
    grid: Image.Image,
    folder: Path,
    infotext: str | None,
    file_format: str = "png",
    date_subfolder: bool | None = None,
    now: datetime | None = None,
    *,
    values: FilenameValues | None = None,
    settings: SavingSettings | None = None,
    listeners: SaveListeners | None = None,
    subject: Any = None,
) -> Path:
    """Save a grid as A1111 does: ``folder/<directory pattern>/grid-NNNN.ext`` (four digits; the file name pattern
    after the number with ``grid_extended_filename``). ``values`` are the job's first image's (A1111 names a grid
    by ``p.all_seeds[0]`` and the first prompt); ``grid_save_to_dirs`` decides the subfolder."""
    settings = legacy_settings(settings, date_subfolder)
    values = values or FilenameValues()
    call = SaveListenerCall(listeners, subject)
    path = save_named(
        grid, folder, GRID_BASENAME, values, infotext, file_format, settings, now, grid=True, listeners=call
    )
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
