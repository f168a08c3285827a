"""The Script base class (A1111's ``scripts.Script``, typed) and what a selectable script's ``run`` receives."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from PIL import Image

from modules.processing import saving
from modules.processing.filenames import FilenameValues
from modules.processing.hooks import ImageToPostprocess, ScriptHooks
from modules.processing.job import JobControl
from modules.processing.processing import ProcessingContext, process, task_output_folder
from modules.processing.requests import GenerationRequest, Img2ImgRequest
from modules.processing.run import MAX_RANDOM_SEED, GenerationRun, ProcessingResult
from modules.scripts.controls import Control

ScriptArgs = Mapping[str, Any]


class Visibility(Enum):
    """A1111's ``show()`` answers: False (hidden), True (in the Script dropdown), AlwaysVisible (always on)."""

    HIDDEN = "hidden"
    SELECTABLE = "selectable"
    ALWAYS_ON = "always_on"


class ScriptError(Exception):
    """A script cannot run with these arguments; the message is shown to the user."""


@dataclass
class ScriptJob:
    """What a selectable script's ``run`` works with: the job's request, ``process`` (always-on scripts still act
    on every request it runs), the settings and folders, and the job control (interrupt, progress)."""

    request: GenerationRequest
    context: ProcessingContext
    control: JobControl
    user: str | None = None
    hooks: ScriptHooks | None = None

    @property
    def is_img2img(self) -> bool:
        return isinstance(self.request, Img2ImgRequest)

    def process(self, request: GenerationRequest) -> ProcessingResult:
        """Generate ``request`` as a normal job would (the always-on scripts' hooks included)."""
        return process(request, self.context, self.control, self.user, self.hooks)

    def save_grid(self, grid: Image.Image, infotext: str, request: GenerationRequest) -> Path | None:
        """Save a script's grid to the grids folder when the ``grid_save`` setting is on (A1111 does this even
        through the API)."""
        options = self.context.options
        if not options.grid_save:
            return None
        return saving.save_grid(
            grid,
            task_output_folder(self.context, request.task, grid=True),
            infotext,
            file_format=options.grid_format,
            settings=saving.SavingSettings.from_options(options),
            listeners=self.context.listeners.saving,
            subject=request,
        )

    def save_sample(self, image: Image.Image, infotext: str, request: GenerationRequest, seed: int) -> Path:
        """Save an image a script made (not one processing saved) to the samples folder."""
        options = self.context.options
        return saving.save_image(
            image,
            task_output_folder(self.context, request.task, grid=False),
            seed,
            infotext,
            file_format=options.samples_format,
            values=FilenameValues(seed=seed, prompt=request.prompt, negative_prompt=request.negative_prompt),
            settings=saving.SavingSettings.from_options(options),
            listeners=self.context.listeners.saving,
            subject=request,
        )


def merge_results(results: Sequence[ProcessingResult]) -> ProcessingResult:
    """Several jobs' results as one (scripts that run processing more than once)."""
    merged = ProcessingResult()
    for result in results:
        merged.images += result.images
        merged.infotexts += result.infotexts
        merged.seeds += result.seeds
        merged.subseeds += result.subseeds
        merged.prompts += result.prompts
        merged.negative_prompts += result.negative_prompts
        merged.saved_paths += result.saved_paths
        merged.notes += [note for note in result.notes if note not in merged.notes]
        merged.interrupted = merged.interrupted or result.interrupted
    merged.parameters = results[0].parameters if results else {}
    return merged


def fixed_seed(request: GenerationRequest) -> GenerationRequest:
    """A1111's ``fix_seed``: a random seed (-1) is drawn once, so every image of the script uses it."""
    updates = {name: random.randrange(MAX_RANDOM_SEED) for name in ("seed", "subseed") if getattr(request, name) == -1}
    return request.model_copy(update=updates) if updates else request


def updated(request: GenerationRequest, **fields: Any) -> GenerationRequest:
    """A copy of the request with changed fields, validated (a bad value raises ValidationError)."""
    return type(request).model_validate({**dict(request), **fields})


class Script:
    """Subclass it, give ``title`` and ``show``, describe the controls in ``ui`` and act in the hooks.

    Every hook receives the job's run object (A1111's ``p``) and the script's arguments by control name. A
    selectable script replaces processing with ``run``; an always-on script acts through the hooks on every job.
    """

    source: str = "built-in"  # the file (or extension) the script comes from, for logs and /script-info

    def title(self) -> str:
        raise NotImplementedError

    def show(self, is_img2img: bool) -> Visibility:
        return Visibility.SELECTABLE

    def ui(self, is_img2img: bool) -> Sequence[Control]:
        return ()

    def run(self, job: ScriptJob, args: ScriptArgs) -> ProcessingResult:
        raise NotImplementedError(f"{self.title()} is not a selectable script")

    # True: the script lays out its own UI (``build_ui``); the page puts it in a plain group, not an accordion
    own_ui = False

    def build_ui(self, is_img2img: bool) -> list[Any] | None:
        """The script's own UI components, made in the page's UI context with their layout and events, one per
        control of ``ui()`` in the same order; None: the UI builds widgets from the controls (Easel's scripts)."""
        return None

    def dynamic_choices(self, is_img2img: bool, control: str, source_value: Any) -> list[str] | None:
        """The choices of dropdown ``control`` (one with ``choices_from``) when its source control holds
        ``source_value``; None hides it (the values are typed instead)."""
        return None

    def before_process(self, run: GenerationRun, args: ScriptArgs) -> None:
        pass

    def process(self, run: GenerationRun, args: ScriptArgs) -> None:
        pass

    def before_process_batch(self, run: GenerationRun, args: ScriptArgs, batch_number: int) -> None:
        pass

    def process_batch(self, run: GenerationRun, args: ScriptArgs, batch_number: int) -> None:
        pass

    def postprocess_batch(
        self, run: GenerationRun, args: ScriptArgs, images: list[Image.Image], batch_number: int
    ) -> None:
        pass

    def postprocess_image(self, run: GenerationRun, args: ScriptArgs, image: ImageToPostprocess) -> None:
        pass

    def postprocess(self, run: GenerationRun, args: ScriptArgs, result: ProcessingResult) -> None:
        pass

    @property
    def api_name(self) -> str:
        """A1111's script name in the API: the title in lower case."""
        return self.title().lower()
