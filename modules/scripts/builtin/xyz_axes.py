"""X/Y/Z plot's axes: A1111's list, in A1111's order (API clients send an axis by its index), each typed, with
how a value changes the request. Axes Easel cannot act on stay in the list (so indices keep their meaning) and are
refused with a clear message when chosen. Value parsing (CSV, ``1-5``, ``1-5 (+2)``, ``1-10 [5]``) is A1111's."""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import numpy as np

from modules.postprocess.latent_upscale import LATENT_UPSCALE_MODES
from modules.processing.processing import ProcessingContext
from modules.processing.requests import GenerationRequest, Img2ImgRequest
from modules.prompts.styles import StyleDatabase
from modules.samplers import SCHEDULE_TYPES, SamplerError, resolve, sampler_names
from modules.scripts.base import ScriptError

Fields = dict[str, Any]
Apply = Callable[[Fields, Any, Sequence[Any]], None]
Choices = Callable[[ProcessingContext], list[str]]


def permutations_of(values: Sequence[str]) -> list[tuple[str, ...]]:
    return list(itertools.permutations(values))


@dataclass(frozen=True)
class Axis:
    label: str
    kind: type | Callable[..., Any]  # int, float, str or permutations_of
    apply: Apply | None = None  # None: Easel cannot act on this axis
    choices: Choices | None = None
    tab: bool | None = None  # True: img2img only, False: txt2img only, None: both
    bare_label: bool = False  # the legend shows the value alone (Sampler, Prompt S/R, Face restore)
    reason: str = "Easel does not have this setting"

    def label_for(self, value: Any) -> str:
        if self.label == "Nothing":
            return ""
        if self.kind is permutations_of:
            return ", ".join(value)
        if self.label in ("Checkpoint name", "Refiner checkpoint"):
            return PurePath(str(value)).stem
        text = str(round(value, 8)) if isinstance(value, float) else str(value)
        return text if self.bare_label else f"{self.label}: {text}"


def set_field(name: str) -> Apply:
    def apply(fields: Fields, value: Any, _values: Sequence[Any]) -> None:
        fields[name] = value

    return apply


def apply_prompt_replace(fields: Fields, value: Any, values: Sequence[Any]) -> None:
    """A1111's Prompt S/R: the first value is searched and replaced by this one in both prompts."""
    search = values[0]
    if search not in fields["prompt"] and search not in fields["negative_prompt"]:
        raise ScriptError(f"Prompt S/R did not find {search} in prompt or negative prompt.")
    fields["prompt"] = fields["prompt"].replace(search, value)
    fields["negative_prompt"] = fields["negative_prompt"].replace(search, value)


def apply_prompt_order(fields: Fields, value: Any, _values: Sequence[Any]) -> None:
    """A1111's Prompt order: the tokens, found in the prompt, are put back in this order."""
    prompt = fields["prompt"]
    found = sorted((prompt.find(token), token) for token in value)
    parts = []
    for _, token in found:
        position = prompt.find(token)
        parts.append(prompt[:position])
        prompt = prompt[position + len(token) :]
    fields["prompt"] = "".join(part + value[index] for index, part in enumerate(parts)) + prompt


def set_override(name: str, boolean: bool = False) -> Apply:
    """A1111's apply_override: the value goes to the request's ``override_settings`` (a bool axis reads "True")."""

    def apply(fields: Fields, value: Any, _values: Sequence[Any]) -> None:
        setting = str(value).strip().lower() == "true" if boolean else value
        fields["override_settings"] = {**fields.get("override_settings", {}), name: setting}

    return apply


def boolean_choices(_context: ProcessingContext) -> list[str]:
    return ["True", "False"]


def rng_choices(_context: ProcessingContext) -> list[str]:
    return ["GPU", "CPU", "NV"]


VAE_SUFFIXES = (".safetensors", ".pt", ".ckpt")


def vae_choices(context: ProcessingContext) -> list[str]:
    """A1111's VAE axis: Automatic, None and the VAE files by name (the ``sd_vae`` values)."""
    folder = context.paths.vae_dir
    files = sorted(path.name for path in folder.rglob("*") if path.suffix in VAE_SUFFIXES) if folder.is_dir() else []
    return ["Automatic", "None", *files]


def apply_denoising(fields: Fields, value: Any, _values: Sequence[Any]) -> None:
    fields["denoising_strength"] = value


def apply_styles(fields: Fields, value: Any, _values: Sequence[Any]) -> None:
    fields["styles"] = [*fields.get("styles", []), *(name for name in str(value).split(",") if name)]


def apply_face_restore(fields: Fields, value: Any, _values: Sequence[Any]) -> None:
    text = str(value).strip().lower()
    if text in ("true", "yes", "on"):
        fields["restore_faces"] = True
    elif text in ("false", "no", "off"):
        fields["restore_faces"] = False
    else:
        raise ScriptError(f"Face restore: {value!r}: use true or false (the face restorer is chosen in Settings)")


def apply_size(fields: Fields, value: Any, _values: Sequence[Any]) -> None:
    width, _, height = str(value).partition("x")
    try:
        fields["width"], fields["height"] = int(width.strip()), int(height.strip())
    except ValueError as error:
        raise ScriptError(f"Size: {value!r} is not WIDTHxHEIGHT") from error


def sampler_choices(context: ProcessingContext) -> list[str]:
    return sampler_names(context.backend.sampler_support())


def checkpoint_choices(context: ProcessingContext) -> list[str]:
    return [info.title for info in context.models.registry.checkpoints()]


def refiner_choices(context: ProcessingContext) -> list[str]:
    """A1111: "None" (no refiner) and every checkpoint."""
    return ["None", *checkpoint_choices(context)]


NO_CHECKPOINT = (None, "", "None", "none")


def upscaler_choices(context: ProcessingContext) -> list[str]:
    names = list(LATENT_UPSCALE_MODES)
    if context.postprocessor is not None:
        names += [info.name for info in context.postprocessor.upscalers.upscalers() if info.supported]
    return names


def style_choices(context: ProcessingContext) -> list[str]:
    return StyleDatabase.load(context.paths.styles_file).names()


def schedule_choices(_context: ProcessingContext) -> list[str]:
    return list(SCHEDULE_TYPES)


def unsupported(label: str, kind: type = float, tab: bool | None = None, reason: str = "") -> Axis:
    return Axis(label, kind, None, tab=tab, reason=reason or "Easel does not have this setting")


# Settings Easel applies to the loaded model (Settings > Compute), not per request.
LOAD_TIME = "Easel applies this setting to the loaded model (Settings > Compute), not per job"

AXES: tuple[Axis, ...] = (
    Axis("Nothing", str, lambda fields, value, values: None),
    Axis("Seed", int, set_field("seed")),
    Axis("Var. seed", int, set_field("subseed")),
    Axis("Var. strength", float, set_field("subseed_strength")),
    Axis("Steps", int, set_field("steps")),
    Axis("Hires steps", int, set_field("hr_second_pass_steps"), tab=False),
    Axis("CFG Scale", float, set_field("cfg_scale")),
    Axis("Image CFG Scale", float, set_field("image_cfg_scale"), tab=True),
    Axis("Prompt S/R", str, apply_prompt_replace, bare_label=True),
    Axis("Prompt order", permutations_of, apply_prompt_order),
    Axis("Sampler", str, set_field("sampler_name"), choices=sampler_choices, bare_label=True),
    Axis("Hires sampler", str, set_field("hr_sampler_name"), choices=sampler_choices, tab=False),
    Axis("Checkpoint name", str, set_field("checkpoint"), choices=checkpoint_choices),
    Axis("Negative Guidance minimum sigma", float, set_override("s_min_uncond")),
    Axis("Sigma Churn", float, set_field("s_churn")),
    Axis("Sigma min", float, set_field("s_tmin")),
    Axis("Sigma max", float, set_field("s_tmax")),
    Axis("Sigma noise", float, set_field("s_noise")),
    Axis("Schedule type", str, set_field("scheduler"), choices=schedule_choices),
    Axis("Schedule min sigma", float, set_override("sigma_min")),
    Axis("Schedule max sigma", float, set_override("sigma_max")),
    Axis("Schedule rho", float, set_override("rho")),
    Axis("Beta schedule alpha", float, set_override("beta_dist_alpha")),
    Axis("Beta schedule beta", float, set_override("beta_dist_beta")),
    Axis("Eta", float, set_field("eta")),
    Axis("Clip skip", int, set_field("clip_skip")),
    Axis("Denoising", float, apply_denoising),
    Axis("Initial noise multiplier", float, set_field("initial_noise_multiplier")),
    Axis("Extra noise", float, set_override("img2img_extra_noise")),
    Axis("Hires upscaler", str, set_field("hr_upscaler"), choices=upscaler_choices, tab=False),
    unsupported("Cond. Image Mask Weight", tab=True),
    Axis("VAE", str, set_field("sd_vae"), choices=vae_choices),
    Axis("Styles", str, apply_styles, choices=style_choices),
    Axis("UniPC Order", int, set_override("uni_pc_order")),
    Axis("Face restore", str, apply_face_restore, bare_label=True),
    unsupported("Token merging ratio", reason=LOAD_TIME),
    unsupported("Token merging ratio high-res", reason=LOAD_TIME),
    Axis(
        "Always discard next-to-last sigma",
        str,
        set_override("always_discard_next_to_last_sigma", True),
        choices=boolean_choices,
    ),
    Axis("SGM noise multiplier", str, set_override("sgm_noise_multiplier", True), choices=boolean_choices),
    Axis("Refiner checkpoint", str, set_field("refiner_checkpoint"), choices=refiner_choices),
    Axis("Refiner switch at", float, set_field("refiner_switch_at")),
    Axis("RNG source", str, set_override("randn_source"), choices=rng_choices),
    unsupported("FP8 mode", str, reason=LOAD_TIME),
    Axis("Size", str, apply_size),
)


def axes_for(is_img2img: bool) -> list[Axis]:
    """The axes of a tab, A1111's filtering: img2img drops txt2img-only axes and the other way round."""
    return [axis for axis in AXES if axis.tab is None or axis.tab == is_img2img]


# A1111's value syntax: "1-5" (inclusive), "1-5 (+2)" (step), "1-10 [5]" (count, evenly spaced).
RANGE = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
RANGE_FLOAT = re.compile(r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\(([+-]\d+(?:.\d*)?)\s*\))?\s*")
RANGE_COUNT = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\[(\d+)\s*])?\s*")
RANGE_COUNT_FLOAT = re.compile(r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\[(\d+(?:.\d*)?)\s*])?\s*")


def csv_values(text: str) -> list[str]:
    """Comma-separated values with CSV quoting ("a, b", c), each stripped."""
    return [value.strip() for row in csv.reader(io.StringIO(text), skipinitialspace=True) for value in row]


def values_to_csv(values: Sequence[str]) -> str:
    """A list as one CSV line (A1111 writes the dropdown's values into the infotext this way)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue()


def expand_int(value: str) -> list[Any]:
    step_match, count_match = RANGE.fullmatch(value), RANGE_COUNT.fullmatch(value)
    if step_match is not None:
        start, end = int(step_match.group(1).replace(" ", "")), int(step_match.group(2).replace(" ", ""))
        step = int(step_match.group(3)) if step_match.group(3) is not None else 1
        return list(range(start, end + 1, step))
    if count_match is not None:
        start, end = int(count_match.group(1).replace(" ", "")), int(count_match.group(2).replace(" ", ""))
        count = int(count_match.group(3)) if count_match.group(3) is not None else 1
        return [int(number) for number in np.linspace(start, end, count).tolist()]
    return [value]


def expand_float(value: str) -> list[Any]:
    step_match, count_match = RANGE_FLOAT.fullmatch(value), RANGE_COUNT_FLOAT.fullmatch(value)
    if step_match is not None:
        start, end = float(step_match.group(1).replace(" ", "")), float(step_match.group(2).replace(" ", ""))
        step = float(step_match.group(3)) if step_match.group(3) is not None else 1.0
        return np.arange(start, end + step, step).tolist()
    if count_match is not None:
        start, end = float(count_match.group(1).replace(" ", "")), float(count_match.group(2).replace(" ", ""))
        count = int(float(count_match.group(3))) if count_match.group(3) is not None else 1
        return np.linspace(start, end, count).tolist()
    return [value]


def parse_values(axis: Axis, text: str, dropdown: Sequence[str], csv_mode: bool) -> list[Any]:
    """An axis's values, typed; the dropdown's list for axes with choices unless ``csv_mode``."""
    if axis.label == "Nothing":
        return [0]
    raw = list(dropdown) if axis.choices is not None and not csv_mode else csv_values(text)
    if axis.kind is int:
        raw = [number for value in raw if value.strip() for number in expand_int(value)]
    elif axis.kind is float:
        raw = [number for value in raw if value.strip() for number in expand_float(value)]
    elif axis.kind is permutations_of:
        return permutations_of(raw)
    try:
        return [axis.kind(value) for value in raw]
    except ValueError as error:
        raise ScriptError(f"{axis.label}: {error}") from error


def confirm(axis: Axis, values: Sequence[Any], request: GenerationRequest, context: ProcessingContext) -> None:
    """Check every value before the first image (A1111's ``confirm``): unknown names fail the job at once."""
    if axis.apply is None:
        raise ScriptError(f"X/Y/Z plot axis {axis.label!r} is not supported: {axis.reason}")
    if not values:
        raise ScriptError(f"{axis.label}: no values given")
    if axis.label in ("Sampler", "Hires sampler"):
        for value in values:
            try:
                resolve(value, "Automatic", context.backend.sampler_support())
            except SamplerError as error:
                raise ScriptError(f"Unknown sampler: {value}") from error
    elif axis.label in ("Checkpoint name", "Refiner checkpoint"):
        known = checkpoint_choices(context)
        for value in values:
            if axis.label == "Refiner checkpoint" and value in NO_CHECKPOINT:
                continue
            try:
                context.models.registry.find(value)
            except Exception as error:
                raise ScriptError(f"Unknown checkpoint: {value} (known: {', '.join(known)})") from error
    elif axis.label == "Initial noise multiplier" and not isinstance(request, Img2ImgRequest):
        raise ScriptError("Initial noise multiplier applies to img2img only")
    elif axis.label == "Prompt S/R":
        search = values[0]
        if search not in request.prompt and search not in request.negative_prompt:
            raise ScriptError(f"Prompt S/R did not find {search} in prompt or negative prompt.")
