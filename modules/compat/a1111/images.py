"""A1111's ``modules.images``: ``save_image`` (Easel's saving with its settings) and ``image_grid``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from modules.compat.runtime import application
from modules.processing import saving
from modules.processing.filenames import FilenameValues


def save_image(
    image: Image.Image,
    path: str,
    basename: str = "",
    seed: int | None = None,
    prompt: str | None = None,
    extension: str = "png",
    info: str | None = None,
    short_filename: bool = False,
    no_prompt: bool = False,
    grid: bool = False,
    pnginfo_section_name: str = "parameters",
    p: Any = None,
    existing_info: dict | None = None,
    forced_filename: str | None = None,
    suffix: str = "",
    save_to_dirs: bool | None = None,
) -> tuple[str, str | None]:
    """Save as A1111 does: under ``path`` with the file name settings; returns (file, text file or None)."""
    app = application()
    options = app.options
    listeners = app.service.context.listeners.saving  # on_before_image_saved / on_image_saved, as A1111
    settings = saving.SavingSettings.from_options(options)
    values = FilenameValues(seed=seed, prompt=prompt or "")
    folder = Path(path)
    if grid:
        written = saving.save_grid(
            image, folder, info, file_format=extension, values=values, settings=settings, listeners=listeners, subject=p
        )
    else:
        written = saving.save_image(
            image,
            folder,
            seed,
            info,
            file_format=extension,
            values=values,
            settings=settings,
            suffix=suffix,
            listeners=listeners,
            subject=p,
        )
    text = written.with_suffix(".txt")
    return str(written), str(text) if text.exists() else None


def image_grid(imgs: list[Image.Image], batch_size: int = 1, rows: int | None = None) -> Image.Image:
    """A1111's grid; ``on_image_grid`` callbacks may change its layout."""
    return saving.make_grid(imgs, rows, listeners=application().service.context.listeners.grid)
