"""An A1111 script class as an Easel Script: one A1111 instance per tab (as A1111 makes them), its Gradio
controls read as neutral controls (for the API's positional arguments, /script-info and Easel's UI), and each hook
called with A1111's signature on a ``p`` that views the job's run."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import gradio as gr
from PIL import Image

from modules.compat.a1111 import scripts as a1111_scripts
from modules.compat.a1111.processing import CURRENT_JOB, Processed, processing_for, remember_request
from modules.processing.hooks import ImageToPostprocess
from modules.processing.requests import Img2ImgRequest
from modules.processing.run import GenerationRun, ProcessingResult
from modules.scripts import controls as neutral
from modules.scripts.base import Script, ScriptArgs, ScriptJob, Visibility

logger = logging.getLogger(__name__)

VIEW_KEY = "a1111_p"


def view_of(run: GenerationRun) -> Any:
    """The job's ``p`` (one per run, kept in the run, so attributes an extension sets stay for the later hooks)."""
    remember_request(run.request)
    view = run.script_state.get(VIEW_KEY)
    if view is None:
        view = run.script_state[VIEW_KEY] = processing_for(run.request, run=run, job=getattr(CURRENT_JOB, "job", None))
    elif view._run is not run:  # the run was resolved again after before_process changed the request
        object.__setattr__(view, "_run", run)
        object.__setattr__(view, "_request", run.request)
    return view


def choices_of(component: Any) -> list[str]:
    return [str(choice[0] if isinstance(choice, tuple | list) else choice) for choice in (component.choices or [])]


def control_of(component: Any, index: int) -> neutral.Control:
    """A Gradio component as a neutral control named ``arg<index>`` (A1111 slots are positional)."""
    name = f"arg{index}"
    label = str(getattr(component, "label", "") or "")
    value = getattr(component, "value", None)
    if isinstance(component, gr.Checkbox):
        return neutral.Checkbox(name, label, bool(value))
    if isinstance(component, gr.Slider):
        return neutral.Slider(
            name, label, value, minimum=component.minimum, maximum=component.maximum, step=component.step
        )
    if isinstance(component, gr.Number):
        return neutral.Number(
            name,
            label,
            value,
            minimum=component.minimum,
            maximum=component.maximum,
            step=getattr(component, "step", 1) or 1,
        )
    if isinstance(component, gr.CheckboxGroup):
        return neutral.Dropdown(name, label, list(value or []), choices=choices_of(component), multiselect=True)
    if isinstance(component, gr.Radio | gr.Dropdown):
        by_index = getattr(component, "type", "value") == "index"
        multiselect = bool(getattr(component, "multiselect", False))
        kind = neutral.Radio if isinstance(component, gr.Radio) else neutral.Dropdown
        return kind(name, label, value, choices=choices_of(component), by_index=by_index, multiselect=multiselect)
    if isinstance(component, gr.Textbox | gr.Code):
        return neutral.Textbox(name, label, "" if value is None else str(value), lines=getattr(component, "lines", 1))
    if isinstance(component, gr.HTML | gr.Markdown):
        return neutral.Info(name, label or str(value or ""))
    return neutral.Control(name, label, value)


def infotext_keys(inner: Any) -> dict[int, str]:
    """A1111's ``infotext_fields`` ((component, infotext key) pairs) by component: the key a control is written to
    and read back from (pasting, the API's ``infotext``). Keys given as functions of the parsed infotext are left
    out (Easel reads a value by its key)."""
    keys = {}
    for entry in getattr(inner, "infotext_fields", None) or []:
        if isinstance(entry, tuple | list) and len(entry) == 2 and isinstance(entry[1], str):
            keys[id(entry[0])] = entry[1]
    return keys


class A1111Script(Script):
    """Easel's view of one A1111 script class."""

    def __init__(self, script_class: type, source: str) -> None:
        self.source = source
        self.controls: dict[bool, list[neutral.Control]] = {}
        self.instances = {flag: self._instance(script_class, flag, source) for flag in (False, True)}

    @staticmethod
    def _instance(script_class: type, is_img2img: bool, source: str) -> Any:
        instance = script_class()
        instance.filename = source
        instance.is_img2img, instance.is_txt2img = is_img2img, not is_img2img
        instance.tabname = "img2img" if is_img2img else "txt2img"
        return instance

    def inner(self, is_img2img: bool) -> Any:
        return self.instances[is_img2img]

    def title(self) -> str:
        return str(self.instances[False].title())

    def show(self, is_img2img: bool) -> Visibility:
        shown = self.inner(is_img2img).show(is_img2img)
        if shown is a1111_scripts.AlwaysVisible:
            self.inner(is_img2img).alwayson = True
            return Visibility.ALWAYS_ON
        return Visibility.SELECTABLE if shown else Visibility.HIDDEN

    def ui(self, is_img2img: bool) -> Sequence[neutral.Control]:
        if is_img2img not in self.controls:
            with gr.Blocks():  # read_controls of many scripts shares one Blocks (making a Blocks costs ~0.5 s)
                self.read_controls(is_img2img)
        return self.controls[is_img2img]

    def read_controls(self, is_img2img: bool) -> None:
        """Call the A1111 ``ui()`` (inside a Blocks context) and keep its components as neutral controls; Easel's
        UI builds its own widgets from them."""
        inner = self.inner(is_img2img)
        components = inner.ui(is_img2img) or []
        if isinstance(components, dict):
            components = list(components.values())
        keys = infotext_keys(inner)
        self.controls[is_img2img] = [
            dataclasses.replace(control_of(component, index), infotext=keys.get(id(component)))
            for index, component in enumerate(components)
        ]

    own_ui = True

    def build_ui(self, is_img2img: bool) -> list[Any] | None:
        """A1111's ``ui()`` called again inside the page, as A1111 builds it: its rows, accordions and its own
        ``.change`` / ``.click`` events stay; the returned components are the script's arguments (the same count and
        order as the controls read at start). A ``ui()`` that raises or returns another count gives None (Easel's
        widgets are used)."""
        try:
            components = self.inner(is_img2img).ui(is_img2img) or []
        except Exception:  # the extension's own code
            logger.exception("extension script ui failed in the page script=%s", self.source)
            return None
        if isinstance(components, dict):
            components = list(components.values())
        if len(components) != len(self.controls.get(is_img2img, [])):
            logger.warning("extension script ui changed its controls script=%s; using Easel's widgets", self.source)
            return None
        return list(components)

    def positional(self, run_or_img2img: GenerationRun | bool, args: ScriptArgs) -> list[Any]:
        return [args[f"arg{index}"] for index in range(len(args))]

    @staticmethod
    def tab_of(run: GenerationRun) -> bool:
        return isinstance(run.request, Img2ImgRequest)

    def before_process(self, run: GenerationRun, args: ScriptArgs) -> None:
        self.inner(self.tab_of(run)).before_process(view_of(run), *self.positional(run, args))

    def process(self, run: GenerationRun, args: ScriptArgs) -> None:
        self.inner(self.tab_of(run)).process(view_of(run), *self.positional(run, args))

    def before_process_batch(self, run: GenerationRun, args: ScriptArgs, batch_number: int) -> None:
        batch = run.batch_slice(batch_number)
        self.inner(self.tab_of(run)).before_process_batch(
            view_of(run),
            *self.positional(run, args),
            batch_number=batch_number,
            prompts=run.all_prompts[batch],
            seeds=run.all_seeds[batch],
            subseeds=run.all_subseeds[batch],
        )

    def process_batch(self, run: GenerationRun, args: ScriptArgs, batch_number: int) -> None:
        batch = run.batch_slice(batch_number)
        self.inner(self.tab_of(run)).process_batch(
            view_of(run),
            *self.positional(run, args),
            batch_number=batch_number,
            prompts=run.all_prompts[batch],
            seeds=run.all_seeds[batch],
            subseeds=run.all_subseeds[batch],
        )

    def postprocess_batch(
        self, run: GenerationRun, args: ScriptArgs, images: list[Image.Image], batch_number: int
    ) -> None:
        inner, p, positional = self.inner(self.tab_of(run)), view_of(run), self.positional(run, args)
        inner.postprocess_batch(p, *positional, images=images, batch_number=batch_number)
        holder = a1111_scripts.PostprocessBatchListArgs(list(images))
        inner.postprocess_batch_list(p, holder, *positional, batch_number=batch_number)
        images[:] = holder.images

    def postprocess_image(self, run: GenerationRun, args: ScriptArgs, image: ImageToPostprocess) -> None:
        holder = a1111_scripts.PostprocessImageArgs(image.image)
        self.inner(self.tab_of(run)).postprocess_image(view_of(run), holder, *self.positional(run, args))
        image.image = holder.image

    def postprocess(self, run: GenerationRun, args: ScriptArgs, result: ProcessingResult) -> None:
        p = view_of(run)
        processed = Processed.from_result(p, result)
        self.inner(self.tab_of(run)).postprocess(p, processed, *self.positional(run, args))
        result.images[:] = processed.images

    def run(self, job: ScriptJob, args: ScriptArgs) -> ProcessingResult:
        p = processing_for(job.request, job=job)
        previous = getattr(CURRENT_JOB, "job", None)
        CURRENT_JOB.job = job
        try:
            processed = self.inner(job.is_img2img).run(p, *self.positional(job.is_img2img, args))
        finally:
            CURRENT_JOB.job = previous
        if processed is None:
            return job.process(p._request)
        if not isinstance(processed, Processed):
            raise TypeError(f"{self.title()}.run returned {type(processed).__name__}, not Processed")
        return processed.to_result()


def read_all_controls(scripts: Sequence[A1111Script]) -> None:
    """Every script's controls for both tabs, in one Blocks context (as A1111 builds every script's UI at start);
    a ``ui()`` that raises leaves that script without controls and is logged."""
    if not scripts:
        return
    with gr.Blocks():
        for script in scripts:
            for is_img2img in (False, True):
                try:
                    if script.show(is_img2img) is not Visibility.HIDDEN:
                        script.read_controls(is_img2img)
                except Exception:  # the extension's own code
                    logger.exception("extension script ui failed script=%s img2img=%s", script.source, is_img2img)
                    script.controls[is_img2img] = []
