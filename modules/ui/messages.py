"""Text the UI shows: errors as readable sentences (never tracebacks), progress lines, notes."""

from __future__ import annotations

import html
from types import MappingProxyType

from pydantic import ValidationError

from modules.models.errors import ModelError
from modules.processing.job import JobProgress
from modules.processing.processing import ProcessingError
from modules.processing.saving import ImageSaveError
from modules.samplers import SamplerError

# Request field -> the label the user sees next to the control.
FIELD_LABELS = MappingProxyType(
    {
        "prompt": "Prompt",
        "negative_prompt": "Negative prompt",
        "steps": "Sampling steps",
        "sampler_name": "Sampling method",
        "scheduler": "Schedule type",
        "cfg_scale": "CFG Scale",
        "width": "Width",
        "height": "Height",
        "seed": "Seed",
        "batch_size": "Batch size",
        "n_iter": "Batch count",
        "clip_skip": "Clip skip",
        "denoising_strength": "Denoising strength",
        "resize_mode": "Resize mode",
        "mask_blur": "Mask blur",
        "inpainting_fill": "Masked content",
        "inpaint_full_res_padding": "Only masked padding, pixels",
        "init_image": "Image",
        "mask": "Mask",
    }
)


class InputError(ValueError):
    """Something missing or inconsistent in what the user entered; the message says what to do."""


def validation_message(error: ValidationError) -> str:
    """One line per problem: "Width: must be a multiple of 8 (got 100); try 96"."""
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item.get("loc", ())) or "value"
        label = FIELD_LABELS.get(field, field)
        message = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
        got = item.get("input")
        shown = isinstance(got, int | float | str) and len(repr(got)) < 80  # never echo a pasted novel
        suffix = f" (got {got!r})" if "got" not in message and shown else ""
        if not item.get("loc"):  # a check of the whole request (caps on size and count) names its fields itself
            lines.append(message)
            continue
        lines.append(f"{label}: {message}{suffix}")
    return "\n".join(lines)


def error_message(error: BaseException) -> str:
    """A message for the user: the validation details, or the sentence our own errors carry."""
    if isinstance(error, ValidationError):
        return validation_message(error)
    if isinstance(error, InputError | ProcessingError | ModelError | SamplerError | ImageSaveError):
        return str(error)
    if isinstance(error, MemoryError):
        return "Out of memory: try a smaller size or batch."
    return f"{type(error).__name__}: {error}"


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, rest = divmod(seconds, 60)
    return f"{minutes}m {rest:02d}s" if minutes else f"{rest}s"


def progress_text(progress: JobProgress | None, queue_position: int) -> str:
    """ "In queue: 2 jobs ahead", "Starting...", or "Image 1/2, step 3/20 - 15% - ETA 4s"."""
    if queue_position > 0:
        ahead = queue_position - 1
        return f"In queue: {ahead} job{'s' if ahead != 1 else ''} ahead" if ahead else "In queue: next"
    if progress is None or progress.sampling_steps == 0:
        return "Starting (loading the model when needed)..."
    text = progress.textinfo or (
        f"Image {progress.job_no + 1}/{max(progress.job_count, 1)}, step {progress.sampling_step}/"
        f"{progress.sampling_steps}"
    )
    text += f" - {progress.progress * 100:.0f}%"
    if progress.eta_seconds is not None:
        text += f" - ETA {format_seconds(progress.eta_seconds)}"
    return text


def status_html(text: str, kind: str = "info") -> str:
    """A small status block; ``kind`` is info, note or error (styled by class)."""
    if not text:
        return ""
    body = "<br>".join(html.escape(line) for line in text.splitlines())
    return f'<div class="easel-status easel-{kind}">{body}</div>'
