"""Widgets every generation tab shares: prompt area, sampling controls, seed row, output panel, and their wiring."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from modules.application import Application
from modules.processing.infotext import override_pairs
from modules.processing.requests import Img2ImgRequest, Txt2ImgRequest
from modules.prompts.styles import StyleDatabase
from modules.samplers import SamplerSupport, sampler_names
from modules.scripts.runner import BoundScripts
from modules.ui import handlers
from modules.ui.extra_networks import build_tab_networks
from modules.ui.family_controls import applicable_fields, safe_schedule_types, sampling_updates
from modules.ui.img2img_batch import BatchJob, stream_batch
from modules.ui.messages import error_message, status_html
from modules.ui.prompt_tools import TokenCounter, with_pasted_styles
from modules.ui.prompt_widgets import (
    QUICK,
    PromptTools,
    build_counter,
    build_style_editor,
    build_styles_dropdown,
    wire_prompt_tools,
)
from modules.ui.ui_config import UiConfig, ui_key

logger = logging.getLogger(__name__)

RequestBuilder = Callable[[Mapping[str, Any]], Txt2ImgRequest | Img2ImgRequest | BatchJob]


@dataclass
class UiContext:
    """What the tabs need: the application, the remembered control values, styles and the token counter.

    ``checkpoint`` is the top bar's dropdown: its value goes into every generation request, so the UI uses the
    checkpoint it shows even when an API request loaded another one meanwhile."""

    application: Application
    ui_config: UiConfig
    checkpoint: gr.Dropdown | None = None
    styles: StyleDatabase = field(init=False)
    token_counter: TokenCounter = field(init=False)

    def __post_init__(self) -> None:
        paths = self.application.paths
        self.styles = StyleDatabase.load(paths.styles_file)
        tokenizer_dir = paths.configs_dir / "sd15" / "tokenizer"
        self.token_counter = TokenCounter(self.application.models, tokenizer_dir, self.application.before_token_counter)

    def initial(self, tab: str, label: str, default: object) -> object:
        return self.ui_config.get(ui_key(tab, label), default)


@dataclass
class Controls:
    """A tab's input controls by request-field name; the labelled ones are remembered in ui-config.json."""

    tab: str
    components: dict[str, gr.components.Component] = field(default_factory=dict)
    remembered: dict[str, str] = field(default_factory=dict)
    bind_scripts: Callable[[Mapping[str, Any]], BoundScripts] | None = None  # the tab's scripts (scripts_ui)
    paste_scripts: Callable[[str], dict[str, Any]] | None = None  # an infotext's script values (scripts_ui)
    current_settings: Callable[[], Mapping[str, Any]] | None = None  # the settings now (for "Override settings")

    def add(self, name: str, component: gr.components.Component, remember: bool = True) -> Any:
        self.components[name] = component
        if remember and component.label:
            self.remembered[name] = str(component.label)
        return component

    def values(self, data: Mapping[gr.components.Component, Any]) -> dict[str, Any]:
        return {name: data[component] for name, component in self.components.items() if component in data}

    def remembered_values(self, values: Mapping[str, Any]) -> dict[str, object]:
        return {ui_key(self.tab, label): values[name] for name, label in self.remembered.items() if name in values}

    def inputs(self) -> set[gr.components.Component]:
        return set(self.components.values())


def owner_of(request: gr.Request | None) -> str:
    """The job owner: the login name when --gradio-auth is on, else "" (everyone shares one queue)."""
    return (getattr(request, "username", None) or "") if request is not None else ""


# --- layout -----------------------------------------------------------------------------------------------------


@dataclass
class PromptArea:
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button
    tools: PromptTools
    paste: gr.Button
    clear: gr.Button


def tool_button(label: str, elem_id: str) -> gr.Button:
    """A small button of the prompt area's tool row (↙ paste, 🗑️ clear, 🎴 extra networks)."""
    return gr.Button(label, elem_id=elem_id, size="sm", min_width=40, elem_classes=["tool"])


def build_prompt_area(context: UiContext, controls: Controls) -> PromptArea:
    tab = controls.tab
    with gr.Row(equal_height=False):
        with gr.Column(scale=6):
            prompt = controls.add(
                "prompt",
                gr.Textbox(value=context.initial(tab, "Prompt", ""), label="Prompt", lines=3, elem_id=f"{tab}_prompt"),
            )
            prompt_counter = build_counter(context, f"{tab}_token_counter", prompt.value)
            negative = controls.add(
                "negative_prompt",
                gr.Textbox(
                    value=context.initial(tab, "Negative prompt", ""),
                    label="Negative prompt",
                    lines=2,
                    elem_id=f"{tab}_neg_prompt",
                ),
            )
            negative_counter = build_counter(context, f"{tab}_negative_token_counter", negative.value)
        with gr.Column(scale=1, min_width=180):
            generate = gr.Button("Generate", variant="primary", elem_id=f"{tab}_generate", size="lg")
            with gr.Row():
                interrupt = gr.Button("Interrupt", elem_id=f"{tab}_interrupt", size="sm", variant="stop")
                skip = gr.Button("Skip", elem_id=f"{tab}_skip", size="sm")
            with gr.Row(elem_id=f"{tab}_tools"):
                paste = tool_button("↙", f"{tab}_paste")
                clear = tool_button("🗑️", f"{tab}_clear_prompt")
                networks = tool_button("🎴", f"{tab}_extra_networks")
            styles, apply, refresh = build_styles_dropdown(context, controls)
    build_tab_networks(context.application, tab, networks)
    editor = build_style_editor(context, tab)
    tools = PromptTools(prompt_counter, negative_counter, styles, apply, refresh, editor)
    return PromptArea(generate=generate, interrupt=interrupt, skip=skip, tools=tools, paste=paste, clear=clear)


def backend_supports(application: Application) -> dict[str, SamplerSupport]:
    """Each backend's samplers, by backend name (the default one alone when the application lists none)."""
    backends = application.backends or {application.backend.name: application.backend}
    return {name: backend.sampler_support() for name, backend in backends.items()}


def sampler_choices_for_backend(
    context: UiContext,
    supports: Mapping[str, SamplerSupport],
    backend: str,
    sampler: str,
    schedule: str,
    checkpoint: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sampler and schedule dropdowns for the chosen backend and the checkpoint's family (a sampler that does
    not apply becomes the first one offered)."""
    model_family = context.application.checkpoint_family(checkpoint)
    updates = sampling_updates(model_family, backend, sampler, schedule, supports)
    return updates["sampler_name"], updates["scheduler"]


def schedule_choices_for_sampler(
    context: UiContext,
    supports: Mapping[str, SamplerSupport],
    sampler: str,
    schedule: str,
    backend: str,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    model_family = context.application.checkpoint_family(checkpoint)
    return sampling_updates(model_family, backend, sampler, schedule, supports)["scheduler"]


def fields_for_family(application: Application, checkpoint: str | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Pasted infotext fields less the sampler / backend the checkpoint's family does not run, whose refusal is
    shown as a warning (the control keeps its value)."""
    taken, messages = applicable_fields(application.checkpoint_family(checkpoint), fields)
    for message in dict.fromkeys(messages):
        gr.Warning(f"Not pasted: {message}")
    return taken


def build_sampling_controls(context: UiContext, controls: Controls) -> None:
    """Sampler backend, sampler, schedule type, steps, size, batch, CFG, restore faces (the seed row is separate)."""
    tab, options = controls.tab, context.application.options
    supports = backend_supports(context.application)
    active = context.application.active_backend().name
    support = supports.get(active)
    offered = sampler_names(support)  # what the chosen backend implements
    sampler = str(context.initial(tab, "Sampling method", options.default_sampler))
    sampler = sampler if sampler in offered else offered[0]
    with gr.Row():
        controls.add(
            "sampling_backend",
            gr.Dropdown(
                list(supports),
                value=active,
                label="Sampler backend",
                info="original: A1111's samplers and noise; diffusers: its schedulers",
                elem_id=f"{tab}_sampling_backend",
                scale=0,
                min_width=140,
            ),
        )
        controls.add(
            "sampler_name",
            gr.Dropdown(offered, value=sampler, label="Sampling method", elem_id=f"{tab}_sampling"),
        )
        schedules = safe_schedule_types(sampler, support)
        schedule = str(context.initial(tab, "Schedule type", options.default_scheduler))
        controls.add(
            "scheduler",
            gr.Dropdown(
                schedules,
                value=schedule if schedule in schedules else schedules[0],
                label="Schedule type",
                elem_id=f"{tab}_scheduler",
            ),
        )
    add_slider(context, controls, "steps", "Sampling steps", options.default_steps, 1, 150, 1)
    with gr.Row():
        add_slider(context, controls, "width", "Width", options.default_width, 64, 2048, 8)
        add_slider(context, controls, "height", "Height", options.default_height, 64, 2048, 8)
    with gr.Row():
        add_slider(context, controls, "n_iter", "Batch count", 1, 1, 100, 1)
        add_slider(context, controls, "batch_size", "Batch size", 1, 1, 8, 1)
    add_slider(context, controls, "cfg_scale", "CFG Scale", options.default_cfg_scale, 1.0, 30.0, 0.5)
    add_checkbox(context, controls, "restore_faces", "Restore faces", False)
    build_override_settings(context, controls)
    components = controls.components
    # the top bar's checkpoint (absent in a page without it): its family limits the choices
    checkpoint = [context.checkpoint] if context.checkpoint is not None else []
    components["sampler_name"].change(
        functools.partial(schedule_choices_for_sampler, context, supports),
        inputs=[components["sampler_name"], components["scheduler"], components["sampling_backend"], *checkpoint],
        outputs=components["scheduler"],
        show_progress="hidden",
        queue=False,
    )
    components["sampling_backend"].change(
        functools.partial(sampler_choices_for_backend, context, supports),
        inputs=[components["sampling_backend"], components["sampler_name"], components["scheduler"], *checkpoint],
        outputs=[components["sampler_name"], components["scheduler"]],
        show_progress="hidden",
        queue=False,
    )


def build_override_settings(context: UiContext, controls: Controls) -> None:
    """A1111's "Override settings": hidden until a pasted infotext names sampler settings (ENSD, RNG, Eta ...)
    that differ from the current ones; the entries left in it apply to the jobs of this tab only."""
    controls.add(
        "override_settings",
        gr.Dropdown(
            [],
            value=[],
            multiselect=True,
            label="Override settings",
            info="from the pasted infotext; for this tab's jobs only (remove an entry to use the setting)",
            visible=False,
            elem_id=f"{controls.tab}_override_settings",
        ),
        remember=False,
    )
    controls.current_settings = lambda: context.application.options.model_dump()


def add_slider(
    context: UiContext,
    controls: Controls,
    name: str,
    label: str,
    default: float,
    minimum: float,
    maximum: float,
    step: float,
    visible: bool = True,
) -> gr.Slider:
    value = context.initial(controls.tab, label, default)
    slider = gr.Slider(minimum, maximum, value=value, step=step, label=label, elem_id=f"{controls.tab}_{name}")
    slider.visible = visible
    return controls.add(name, slider)


def add_checkbox(context: UiContext, controls: Controls, name: str, label: str, default: bool) -> gr.Checkbox:
    value = bool(context.initial(controls.tab, label, default))
    return controls.add(name, gr.Checkbox(value=value, label=label, elem_id=f"{controls.tab}_{name}"))


@dataclass
class SeedRow:
    random: gr.Button
    reuse: gr.Button
    random_subseed: gr.Button
    reuse_subseed: gr.Button


def build_seed_row(context: UiContext, controls: Controls) -> SeedRow:
    tab = controls.tab
    with gr.Row(equal_height=True):
        controls.add(
            "seed",
            gr.Number(
                value=context.initial(tab, "Seed", -1), label="Seed", precision=0, elem_id=f"{tab}_seed", scale=4
            ),
        )
        random = gr.Button("Random", elem_id=f"{tab}_random_seed", size="sm", scale=0, min_width=80)
        reuse = gr.Button("Reuse", elem_id=f"{tab}_reuse_seed", size="sm", scale=0, min_width=80)
        extra = controls.add(
            "seed_extra",
            gr.Checkbox(value=False, label="Extra", elem_id=f"{tab}_subseed_show", scale=0, min_width=80),
        )
    random_subseed, reuse_subseed = build_extra_seed_row(context, controls, extra)
    add_slider(
        context, controls, "clip_skip", "Clip skip", context.application.options.CLIP_stop_at_last_layers, 1, 12, 1
    )
    return SeedRow(random=random, reuse=reuse, random_subseed=random_subseed, reuse_subseed=reuse_subseed)


def build_extra_seed_row(context: UiContext, controls: Controls, extra: gr.Checkbox) -> tuple[gr.Button, gr.Button]:
    """A1111's "Extra" seed controls: variation seed (dice, reuse), its strength, resize seed from width/height."""
    tab = controls.tab
    with gr.Group(visible=False, elem_id=f"{tab}_seed_extras") as group:
        with gr.Row(equal_height=True):
            controls.add(
                "subseed",
                gr.Number(value=-1, label="Variation seed", precision=0, elem_id=f"{tab}_subseed", scale=4),
            )
            random = gr.Button("Random", elem_id=f"{tab}_random_subseed", size="sm", scale=0, min_width=80)
            reuse = gr.Button("Reuse", elem_id=f"{tab}_reuse_subseed", size="sm", scale=0, min_width=80)
            add_slider(context, controls, "subseed_strength", "Variation strength", 0.0, 0.0, 1.0, 0.01)
        with gr.Row():
            add_slider(context, controls, "seed_resize_from_w", "Resize seed from width", 0, 0, 2048, 8)
            add_slider(context, controls, "seed_resize_from_h", "Resize seed from height", 0, 0, 2048, 8)
    extra.change(lambda shown: gr.update(visible=bool(shown)), inputs=extra, outputs=group, queue=False)
    return random, reuse


@dataclass
class OutputPanel:
    """Preview, gallery, send buttons, status and the selected image's infotext."""

    tab: str
    preview: gr.Image
    gallery: gr.Gallery
    status: gr.HTML
    infotext: gr.Textbox
    state: gr.State
    send_to_img2img: gr.Button
    send_to_inpaint: gr.Button
    send_to_extras: gr.Button

    def outputs(self) -> list[gr.components.Component]:
        return [self.preview, self.gallery, self.status, self.infotext, self.state]


def build_output_panel(tab: str) -> OutputPanel:
    with gr.Column(scale=1):
        preview = gr.Image(
            label="Preview", visible=False, interactive=False, elem_id=f"{tab}_preview", height=360, format="jpeg"
        )
        gallery = gr.Gallery(
            label="Output",
            show_label=False,
            elem_id=f"{tab}_gallery",
            columns=4,
            height=420,
            format="png",
            type="pil",
            interactive=False,
            object_fit="contain",
            preview=True,
        )
        with gr.Row():
            send_to_img2img = gr.Button("Send to img2img", size="sm", elem_id=f"{tab}_send_to_img2img")
            send_to_inpaint = gr.Button("Send to inpaint", size="sm", elem_id=f"{tab}_send_to_inpaint")
            send_to_extras = gr.Button("Send to extras", size="sm", elem_id=f"{tab}_send_to_extras")
        status = gr.HTML(elem_id=f"{tab}_status")
        infotext = gr.Textbox(label="Generation info", lines=4, interactive=False, elem_id=f"{tab}_infotext")
        state = gr.State({})
    return OutputPanel(
        tab=tab,
        preview=preview,
        gallery=gallery,
        status=status,
        infotext=infotext,
        state=state,
        send_to_img2img=send_to_img2img,
        send_to_inpaint=send_to_inpaint,
        send_to_extras=send_to_extras,
    )


@dataclass
class GenerationTab:
    """A generation tab's controls and outputs, for the "send to" wiring between tabs."""

    controls: Controls
    panel: OutputPanel
    image: gr.components.Component | None = None
    image_mode: ImageMode | None = None

    def image_updates(self, value: Any) -> dict[Any, Any]:
        """A sent image goes into ``image``; with inner mode tabs, the tab holding it is chosen too."""
        updates: dict[Any, Any] = {self.image: value}
        if self.image_mode is not None:
            updates |= self.image_mode.choose()
        return updates

    def image_outputs(self) -> list[Any]:
        return [self.image, *(self.image_mode.outputs() if self.image_mode is not None else [])]


@dataclass
class ImageMode:
    """The inner tab (and mode) of a tab's image input, chosen when an image is sent there."""

    tabs: gr.Tabs
    tab_id: str
    state: gr.State
    mode: str

    def choose(self) -> dict[Any, Any]:
        return {self.tabs: gr.Tabs(selected=self.tab_id), self.state: self.mode}

    def outputs(self) -> list[Any]:
        return [self.tabs, self.state]


# --- wiring -------------------------------------------------------------------------------------------------------


def run_generation(
    context: UiContext,
    controls: Controls,
    build_request: RequestBuilder,
    values: Mapping[str, Any],
    owner: str,
    panel: OutputPanel,
) -> Iterator[dict[Any, Any]]:
    """Build and submit the request, then stream progress and previews; errors end as a message."""
    try:
        request = build_request(values)
    except Exception as error:  # the UI boundary: every failure becomes a message, the server keeps serving
        if not isinstance(error, ValueError):
            logger.exception("request not built tab=%s", controls.tab)
        yield {panel.status: status_html(error_message(error), "error")}
        return
    context.ui_config.update(controls.remembered_values(values))
    yield {panel.status: status_html("Submitting..."), panel.preview: gr.update(visible=True, value=None)}
    application = context.application
    scripts = controls.bind_scripts(values) if controls.bind_scripts is not None else None
    if isinstance(request, BatchJob):
        updates = stream_batch(application.service, request, owner, application.options)
    else:
        updates = handlers.stream_job(application.service, request, owner, scripts=scripts)
    for update in updates:
        if update.error is not None:
            yield {panel.status: status_html(update.error, "error"), panel.preview: gr.update(visible=False)}
        elif update.result is not None:
            gallery = handlers.gallery_from_result(update.result, context.application.options.return_grid)
            kind = "note" if update.result.notes or update.result.interrupted else "info"
            yield {
                panel.gallery: gallery.images,
                panel.state: gallery.state(),
                panel.infotext: gallery.infotexts[0] if gallery.infotexts else "",
                panel.status: status_html(handlers.result_summary(update.result), kind),
                panel.preview: gr.update(visible=False, value=None),
            }
        else:
            progress: dict[Any, Any] = {panel.status: status_html(update.progress)}
            if update.preview is not None:
                progress[panel.preview] = update.preview
            yield progress


def wire_generation(
    context: UiContext,
    controls: Controls,
    prompt: PromptArea,
    seed_row: SeedRow,
    panel: OutputPanel,
    build_request: RequestBuilder,
) -> None:
    service = context.application.service
    if context.checkpoint is not None:
        controls.add("checkpoint", context.checkpoint, remember=False)

    def generate(data: dict[Any, Any], request: gr.Request) -> Iterator[dict[Any, Any]]:
        yield from run_generation(context, controls, build_request, controls.values(data), owner_of(request), panel)

    def interrupt(request: gr.Request) -> None:
        service.interrupt(owner_of(request))

    def skip(request: gr.Request) -> None:
        service.skip(owner_of(request))

    def select_image(state: dict[str, Any], event: gr.SelectData) -> tuple[str, dict[str, Any]]:
        index = event.index if isinstance(event.index, int) else 0
        return handlers.selected_infotext(state, index), {**(state or {}), "selected": index}

    started = prompt.generate.click(
        generate,
        inputs=controls.inputs(),
        outputs=panel.outputs(),
        show_progress="hidden",
        concurrency_limit=None,
        api_visibility="private",
    )
    # the page's scripts (javascript/jobs.js) learn that the job ended: generate forever, notifications
    started.then(None, js=f"() => {{ easelJobEnded('{controls.tab}'); }}", queue=False)
    prompt.interrupt.click(interrupt, show_progress="hidden", concurrency_limit=None, api_visibility="private")
    prompt.skip.click(skip, show_progress="hidden", concurrency_limit=None, api_visibility="private")
    panel.gallery.select(
        select_image,
        inputs=panel.state,
        outputs=[panel.infotext, panel.state],
        show_progress="hidden",
        api_visibility="private",
    )
    wire_prompt_tools(context, controls, prompt.tools)
    wire_paste_and_clear(context, controls, prompt)
    seed = controls.components["seed"]
    seed_row.random.click(lambda: -1, outputs=seed, show_progress="hidden", queue=False)
    seed_row.reuse.click(handlers.selected_seed, inputs=panel.state, outputs=seed, show_progress="hidden", queue=False)
    subseed = controls.components["subseed"]
    seed_row.random_subseed.click(lambda: -1, outputs=subseed, show_progress="hidden", queue=False)
    seed_row.reuse_subseed.click(
        handlers.selected_subseed, inputs=panel.state, outputs=subseed, show_progress="hidden", queue=False
    )


def pasted_values(context: UiContext, text: str) -> dict[str, Any]:
    """The fields of the infotext in the prompt box; an empty box reads the last job's params.txt (A1111's ↙)."""
    if not text.strip():
        try:
            text = context.application.paths.params_file.read_text(encoding="utf-8")
        except OSError:
            gr.Warning("Nothing to paste: the prompt box is empty and no job has written params.txt yet.")
            return {}
    fields = handlers.fields_from_infotext(text, context.application.infotext_pasted)
    return with_pasted_styles(context.styles, fields) if fields else fields


def wire_paste_and_clear(context: UiContext, controls: Controls, prompt: PromptArea) -> None:
    """↙ reads an infotext from the prompt box into every control it names; 🗑️ empties both prompt boxes after
    the browser's confirmation (as A1111's confirm_clear_prompt)."""
    pasted = [component for name, component in controls.components.items() if name != "checkpoint"]
    checkpoint = [controls.components["checkpoint"]] if "checkpoint" in controls.components else []

    def paste(text: str, chosen: str | None = None) -> dict[Any, Any]:
        fields = {k: v for k, v in pasted_values(context, text).items() if k != "checkpoint"}
        return fill_controls(controls, fields_for_family(context.application, chosen, fields))

    boxes = [controls.components["prompt"], controls.components["negative_prompt"]]
    # queued (unlike the other quick events): gr.Warning reaches the page from queued events only
    quick_queued = {**QUICK, "queue": True}
    prompt.paste.click(paste, inputs=[boxes[0], *checkpoint], outputs=pasted, **quick_queued)
    prompt.clear.click(
        None,
        inputs=boxes,
        outputs=boxes,
        js="(prompt, negative) => confirm('Delete prompt?') ? ['', ''] : [prompt, negative]",
        **QUICK,
    )


def fill_controls(controls: Controls, fields: Mapping[str, Any]) -> dict[Any, Any]:
    """Updates for the controls named in ``fields`` (values from an infotext). The infotext's settings fill the
    "Override settings" box with those that differ from the current settings (emptied when there are none), as
    A1111's paste does."""
    updates = {controls.components[name]: value for name, value in fields.items() if name in controls.components}
    box = controls.components.get("override_settings")
    if box is not None and controls.current_settings is not None and "prompt" in fields:
        pairs = override_pairs(fields.get("override_settings") or {}, controls.current_settings())
        updates[box] = gr.update(choices=pairs, value=pairs, visible=bool(pairs))
    return updates
