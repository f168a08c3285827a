"""The stages where scripts act on a job: the protocol processing calls, implemented by ``modules.scripts``.

Processing knows only this protocol (scripts live above processing and call it); the script runner bound to one
job implements it and is handed to ``process`` with the request. The names and order are A1111's Script hooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from PIL import Image

from modules.backends.hooks import DenoiserHooks, ExtraNoiseListener
from modules.processing.saving import GridListener, SaveListeners

if TYPE_CHECKING:
    from modules.processing.run import GenerationRun, ProcessingResult


@dataclass
class ImageToPostprocess:
    """One finished image handed to ``postprocess_image`` (A1111's PostprocessImageArgs): replace ``image``."""

    image: Image.Image
    index: int  # the image's index in the job (all_prompts / all_seeds)


class ScriptHooks(Protocol):
    """Called by processing at each stage of a job, in A1111's order."""

    def before_process(self, run: GenerationRun) -> None:
        """Before prompts and seeds are expanded; may replace ``run.request``."""

    def process(self, run: GenerationRun) -> None:
        """After every image's prompts and seeds are known, before the first batch."""

    def before_process_batch(self, run: GenerationRun, batch_number: int) -> None:
        """Before batch ``batch_number``'s prompts are read."""

    def process_batch(self, run: GenerationRun, batch_number: int) -> None:
        """Right before batch ``batch_number`` is generated."""

    def postprocess_batch(self, run: GenerationRun, images: list[Image.Image], batch_number: int) -> None:
        """After the batch is decoded (before face restoration); the list may be changed in place."""

    def postprocess_image(self, run: GenerationRun, image: ImageToPostprocess) -> None:
        """For each finished image, before it is recorded and saved."""

    def postprocess(self, run: GenerationRun, result: ProcessingResult) -> None:
        """After the job (grid and params.txt done)."""


@dataclass
class ProcessingListeners:
    """Listeners of every job (registered once by the A1111 extension adapter): around each image save, around
    each model call of guidance, before each grid is laid out and at img2img's extra noise. Empty: nothing is
    called."""

    saving: SaveListeners = field(default_factory=SaveListeners)
    grid: list[GridListener] = field(default_factory=list)
    denoiser: DenoiserHooks = field(default_factory=DenoiserHooks)
    extra_noise: list[ExtraNoiseListener] = field(default_factory=list)
