"""The generation tabs follow the model family of the checkpoint their jobs use (the top bar's choice).

A family with its own samplers (FLUX.1 and SD 3.5: Euler; Kandinsky 2.2 and DeepFloyd IF: DDIM) lists only those in
the sampler dropdowns, and a chosen sampler that does not apply becomes the family's first; a family that keeps its
own (flow-matching) schedule offers only "Automatic" as the schedule type; a family that runs on some backends only
lists those. What a family does not take (FLUX.1's negative prompt, CLIP skip for T5 families) is said beside the
control; a job that asks for it anyway still gets the family's refusal. Going back to an SD model lists everything
again and keeps the user's choices. The functions return ``gr.update`` dicts by control name, so they are tested
without a browser."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import gradio as gr

from modules.models.families import FamilyError, ModelFamily
from modules.samplers import AUTOMATIC, SCHEDULE_TYPES, SamplerError, SamplerSupport, sampler_names, schedule_types_for
from modules.ui.handlers import USE_SAME_SAMPLER, USE_SAME_SCHEDULER

SAMPLING_FIELDS = ("sampling_backend", "sampler_name", "scheduler")
HIRES_SAMPLING_FIELDS = ("hr_sampler_name", "hr_scheduler")
# The control names a family change updates (those a tab has); the first ones are read as well as written.
FAMILY_INPUTS = (*SAMPLING_FIELDS, *HIRES_SAMPLING_FIELDS)
FAMILY_OUTPUTS = (*FAMILY_INPUTS, "negative_prompt", "clip_skip")
# An empty info / placeholder: the page drops it (None in an update would leave the last family's text in place).
NO_NOTE = ""


def safe_schedule_types(sampler: str, support: SamplerSupport | None = None) -> list[str]:
    try:
        return schedule_types_for(sampler, support)
    except SamplerError:
        return list(SCHEDULE_TYPES)


def family_backends(model_family: ModelFamily | None, available: Collection[str]) -> list[str]:
    """The sampler backends the family runs on, of those available (all of them when it runs on none: the job's
    refusal then says why)."""
    offered = [name for name in available if model_family is None or name in model_family.backends]
    return offered or list(available)


def family_samplers(model_family: ModelFamily | None, support: SamplerSupport | None) -> list[str]:
    """The samplers to list: the family's own, in its order (its first is its default), else every one the backend
    implements."""
    offered = sampler_names(support)
    if model_family is None or model_family.samplers is None:
        return offered
    return [name for name in model_family.samplers if name in offered] or offered


def family_schedules(model_family: ModelFamily | None, sampler: str, support: SamplerSupport | None) -> list[str]:
    """The schedule types of ``sampler``; only Automatic for a family whose pipeline keeps its own scheduler."""
    if model_family is not None and model_family.own_scheduler:
        return [AUTOMATIC]
    return safe_schedule_types(sampler, support)


def sampler_note(model_family: ModelFamily | None) -> str:
    if model_family is None or model_family.samplers is None:
        return NO_NOTE
    return f"{model_family.display_name} runs with {' / '.join(model_family.samplers)} only"


def schedule_note(model_family: ModelFamily | None) -> str:
    if model_family is None or not model_family.own_scheduler:
        return NO_NOTE
    return f"{model_family.display_name} keeps its own flow-matching schedule"


def kept(value: Any, choices: list[str]) -> str:
    """The current choice when it still applies, else the first one."""
    return value if value in choices else choices[0]


def sampling_updates(
    model_family: ModelFamily | None,
    backend: str | None,
    sampler: str | None,
    schedule: str | None,
    supports: Mapping[str, SamplerSupport],
) -> dict[str, Any]:
    """The sampler backend, sampler and schedule type dropdowns for the family (None: every choice)."""
    backends = family_backends(model_family, list(supports))
    backend = kept(backend, backends)
    support = supports.get(backend)
    samplers = family_samplers(model_family, support)
    sampler = kept(sampler, samplers)
    schedules = family_schedules(model_family, sampler, support)
    return {
        "sampling_backend": gr.update(choices=backends, value=backend),
        "sampler_name": gr.update(choices=samplers, value=sampler, info=sampler_note(model_family)),
        "scheduler": gr.update(choices=schedules, value=kept(schedule, schedules), info=schedule_note(model_family)),
    }


def hires_updates(
    model_family: ModelFamily | None, support: SamplerSupport | None, sampler: str | None, schedule: str | None
) -> dict[str, Any]:
    """The hires pass's sampler and schedule type dropdowns ("Use same ..." first)."""
    samplers = [USE_SAME_SAMPLER, *family_samplers(model_family, support)]
    own = model_family is not None and model_family.own_scheduler
    schedules = [USE_SAME_SCHEDULER, *([AUTOMATIC] if own else SCHEDULE_TYPES)]
    return {
        "hr_sampler_name": gr.update(choices=samplers, value=kept(sampler, samplers)),
        "hr_scheduler": gr.update(choices=schedules, value=kept(schedule, schedules)),
    }


def negative_prompt_update(model_family: ModelFamily | None) -> dict[str, Any]:
    if model_family is None or model_family.takes_negative_prompt:
        return gr.update(placeholder=NO_NOTE, info=NO_NOTE)
    text = f"{model_family.display_name} takes no negative prompt (its guidance is distilled)"
    return gr.update(placeholder=text, info=f"{text}: leave it empty")


def clip_skip_update(model_family: ModelFamily | None) -> dict[str, Any]:
    if model_family is None or model_family.takes_clip_skip:
        return gr.update(info=NO_NOTE)
    name = model_family.display_name
    return gr.update(info=f"CLIP skip does not apply to {name} (its pipeline encodes the prompt): keep it at 1")


def family_control_updates(
    model_family: ModelFamily | None,
    values: Mapping[str, Any],
    names: Collection[str],
    supports: Mapping[str, SamplerSupport],
) -> dict[str, Any]:
    """Updates by control name for the tab's controls in ``names``; ``values`` holds the current values of the
    sampling ones (FAMILY_INPUTS). The user's width and height are never touched."""
    updates: dict[str, Any] = {}
    backend = values.get("sampling_backend")
    if all(name in names for name in SAMPLING_FIELDS):
        updates |= sampling_updates(
            model_family, backend, values.get("sampler_name"), values.get("scheduler"), supports
        )
        backend = updates["sampling_backend"]["value"]
    if all(name in names for name in HIRES_SAMPLING_FIELDS):
        support = supports.get(backend) if backend else None
        updates |= hires_updates(model_family, support, values.get("hr_sampler_name"), values.get("hr_scheduler"))
    if "negative_prompt" in names:
        updates["negative_prompt"] = negative_prompt_update(model_family)
    if "clip_skip" in names:
        updates["clip_skip"] = clip_skip_update(model_family)
    return updates


def applicable_fields(model_family: ModelFamily | None, fields: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The pasted infotext fields the family can take, and the family's refusal for each sampler or backend left
    out (its control keeps its value, as A1111's paste does with an unknown sampler; the refused sampler's schedule
    type is left out with it). A schedule type is left out without a message where the family keeps its own
    schedule (it could not act)."""
    taken = dict(fields)
    if model_family is None:
        return taken, []
    messages = []
    backend = taken.get("sampling_backend")
    if backend and backend not in model_family.backends:
        taken.pop("sampling_backend")
        messages.append(refusal(model_family.check_backend, backend))
    for name, schedule_name in (("sampler_name", "scheduler"), ("hr_sampler_name", "hr_scheduler")):
        sampler = taken.get(name)
        if sampler and sampler != USE_SAME_SAMPLER and model_family.samplers and sampler not in model_family.samplers:
            taken.pop(name)
            taken.pop(schedule_name, None)  # the refused sampler's schedule type goes with it
            messages.append(refusal(model_family.check_sampler, sampler))
    if model_family.own_scheduler:
        for name in ("scheduler", "hr_scheduler"):
            if taken.get(name) not in (None, AUTOMATIC, USE_SAME_SCHEDULER):
                taken.pop(name)
    return taken, messages


def refusal(check: Any, value: str) -> str:
    """The family's own message for ``value`` (its check raises FamilyError)."""
    try:
        check(value)
    except FamilyError as error:
        return str(error)
    return ""
