"""Where a run's files are written: at once (one machine), or recorded and written later by another process.

Processing calls its context's ``saver`` for every file it writes (images, grids, params.txt, init images). The
in-process default writes at once with ``modules.processing.saving``. A remote worker (``modules/cluster``) runs the
same processing with a ``DeferredSaver``: it records each call as a ``SaveOrder`` (arguments only, picklable), and
the Easel process replays the orders with the ``FileSaver``, so files are numbered and written exactly as today, by
the one process that owns the output folders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from modules.processing import saving
from modules.processing.run import ProcessingResult


class ImageSaver(Protocol):
    def save_image(
        self, image: Image.Image, folder: Path, seed: int | None, infotext: str | None, **kw: Any
    ) -> Path: ...

    def save_grid(self, grid: Image.Image, folder: Path, infotext: str | None, **kw: Any) -> Path: ...

    def write_params(self, path: Path, infotext: str) -> None: ...

    def write_image(self, image: Image.Image, path: Path) -> None: ...


class FileSaver:
    """Writes at once (the one-machine case)."""

    def save_image(self, image: Image.Image, folder: Path, seed: int | None, infotext: str | None, **kw: Any) -> Path:
        return saving.save_image(image, folder, seed, infotext, **kw)

    def save_grid(self, grid: Image.Image, folder: Path, infotext: str | None, **kw: Any) -> Path:
        return saving.save_grid(grid, folder, infotext, **kw)

    def write_params(self, path: Path, infotext: str) -> None:
        saving.write_params_txt(path, infotext)

    def write_image(self, image: Image.Image, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        saving.write_image_atomic(image, path, None, "png")


@dataclass(frozen=True)
class SaveOrder:
    """One recorded call of an ``ImageSaver`` method."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


PENDING_NAME = "pending-save"
LOCAL_ONLY = frozenset({"listeners", "subject"})  # save arguments that cannot leave the worker's process


@dataclass
class DeferredSaver:
    """Records every call instead of writing; the returned paths are placeholders until ``replay``."""

    orders: list[SaveOrder] = field(default_factory=list)

    def _record(self, method: str, *args: Any, **kwargs: Any) -> None:
        # The image-saved listeners and their subject (the run, with its locks) stay in the process that made the
        # image: the orders cross to the Easel process as plain data, and the extensions' image-saved callbacks
        # are not called for a worker's images (scripts do not run on workers either).
        kept = {key: value for key, value in kwargs.items() if key not in LOCAL_ONLY}
        self.orders.append(SaveOrder(method, args, kept))

    def save_image(self, image: Image.Image, folder: Path, seed: int | None, infotext: str | None, **kw: Any) -> Path:
        self._record("save_image", image, folder, seed, infotext, **kw)
        return folder / PENDING_NAME

    def save_grid(self, grid: Image.Image, folder: Path, infotext: str | None, **kw: Any) -> Path:
        self._record("save_grid", grid, folder, infotext, **kw)
        return folder / PENDING_NAME

    def write_params(self, path: Path, infotext: str) -> None:
        self._record("write_params", path, infotext)

    def write_image(self, image: Image.Image, path: Path) -> None:
        self._record("write_image", image, path)


def replay(orders: list[SaveOrder], result: ProcessingResult, saver: ImageSaver | None = None) -> ProcessingResult:
    """Write what a deferred run recorded, in its order, and put the real paths into ``result``."""
    saver = saver or FileSaver()
    saved: list[Path] = []
    for order in orders:
        written = getattr(saver, order.method)(*order.args, **order.kwargs)
        if order.method == "save_image":
            saved.append(written)
        elif order.method == "save_grid":
            result.grid_path = written
    result.saved_paths = saved
    return result
