"""The Gradio app: top bar (checkpoint), the tabs, the "send to" links between them, and launching."""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount

from modules.application import Application
from modules.extensions.registry import page_assets
from modules.processing.infotext import InfotextTooLongError
from modules.prompts.styles import StyleDatabase
from modules.ui import checkpoints, handlers
from modules.ui.common import GenerationTab, UiContext, backend_supports, fields_for_family, fill_controls
from modules.ui.extensions_tab import create_extensions_tab
from modules.ui.extra_networks import create_extra_networks_tab
from modules.ui.extras import ExtrasTab, create_extras_tab
from modules.ui.family_controls import FAMILY_INPUTS, FAMILY_OUTPUTS, clip_skip_update, family_control_updates
from modules.ui.history_tab import create_history_tab, link_to_extras
from modules.ui.img2img import create_img2img_tab, create_inpaint_tab
from modules.ui.models_tab import create_models_tab
from modules.ui.page import (
    build_options_carrier,
    options_json,
    page_css,
    page_head,
    script_files,
    send_options,
    wire_localization,
)
from modules.ui.png_info import PngInfoTab, create_png_info_tab
from modules.ui.prompt_tools import with_pasted_styles
from modules.ui.queue_panel import create_queue_tab
from modules.ui.quicksettings import build_quicksettings, wire_quicksettings
from modules.ui.settings import create_settings_tab
from modules.ui.system_info import create_system_info_tab
from modules.ui.txt2img import create_txt2img_tab
from modules.ui.ui_config import UiConfig

logger = logging.getLogger(__name__)

PasteListener = Callable[[str, dict[str, Any]], None]  # an infotext-pasted listener (A1111's on_infotext_pasted)

# Fields an infotext fills in the target tab ("send to", PNG Info).
SENT_FIELDS: tuple[str, ...] = (
    "prompt",
    "negative_prompt",
    "styles",
    "steps",
    "sampler_name",
    "scheduler",
    "cfg_scale",
    "seed",
    "width",
    "height",
    "clip_skip",
    "denoising_strength",
    "restore_faces",
    "sampling_backend",
    "seed_extra",
    *handlers.EXTRA_SEED_FIELDS,
    *handlers.HIRES_FIELDS,
    *handlers.REFINER_FIELDS,
    "image_cfg_scale",
    "override_settings",
)
# How often the top bar looks for new, removed or switched checkpoints (downloads, other clients).
FOLLOW_SECONDS = 2.0
CSS = """
.easel-status { padding: 0.4em 0.6em; border-radius: 6px; font-size: 0.9em; white-space: pre-wrap; }
.easel-error { background: #fde8e8; color: #8a1c1c; border: 1px solid #f5b5b5; }
.easel-note { background: #fff6db; color: #6b4e00; border: 1px solid #f0d890; }
.easel-info { background: var(--block-background-fill); }
#exposure_warning { padding: 0.4em 0.8em; border-radius: 6px; font-weight: 600; }
#exposure_warning { background: #fde8e8; color: #8a1c1c; border: 1px solid #f5b5b5; }
#quicksettings { align-items: end; }
"""


def kept_choice(application: Application, selected: str | None) -> str | None:
    """The dropdown's own choice (a file name), not whatever another client (an API override) loaded since; the
    loaded or start checkpoint when nothing valid is selected."""
    if selected:
        value = checkpoints.choice_value(application, selected)
        if value is not None:
            return value
        logger.info("selected checkpoint gone title=%s", selected)
    return checkpoints.choice_value(application, checkpoints.current_title(application))


def exposure_banner(warnings: Sequence[str]) -> None:
    """A visible banner for --listen without logins (modules.server.exposure_warnings gives the texts)."""
    if warnings:
        lines = "<br>".join(f"⚠ {html.escape(warning)}" for warning in warnings)
        gr.HTML(f"<div>{lines}</div>", elem_id="exposure_warning")


@dataclass
class TopBar:
    checkpoint: gr.Dropdown
    quicksettings: dict[str, gr.components.Component]


def build_top_bar(application: Application) -> TopBar:
    """The checkpoint dropdown (its value goes with every generation request of this browser session) and the
    quicksettings."""
    with gr.Row(elem_id="quicksettings"):
        dropdown = gr.Dropdown(
            checkpoints.checkpoint_choices(application),
            label="Stable Diffusion checkpoint",
            value=kept_choice(application, None),
            elem_id="setting_sd_model_checkpoint",
            scale=4,
            allow_custom_value=False,
        )
        refresh = gr.Button("Refresh", elem_id="refresh_checkpoints", scale=0, min_width=90, size="lg")
        quick = build_quicksettings(application)
        gr.Column(scale=max(1, 6 - 2 * len(quick)))
    message = gr.Markdown(checkpoints.missing_checkpoint_message(application), elem_id="checkpoint_message")
    seen = gr.State(checkpoints.checkpoint_state(application))

    def listed(selected: str | None) -> Any:
        return gr.update(choices=checkpoints.checkpoint_choices(application), value=kept_choice(application, selected))

    def switch(value: str) -> tuple[Any, str]:
        outcome = checkpoints.switch_checkpoint(application, value)
        if outcome.error:
            gr.Warning(outcome.error)
        return listed(outcome.title), outcome.error

    def refresh_list(selected: str | None) -> tuple[Any, str]:
        application.registry.refresh()
        return listed(selected), checkpoints.missing_checkpoint_message(application)

    def follow(selected: str | None, last: str) -> tuple[Any, Any, Any]:
        """A download, a rescan or another client changed the checkpoints: the bar shows it without Refresh."""
        state = checkpoints.checkpoint_state(application)
        if state == last:
            return gr.skip(), gr.skip(), gr.skip()
        return listed(selected), checkpoints.missing_checkpoint_message(application), state

    quiet: dict[str, Any] = {"show_progress": "hidden", "api_visibility": "private"}
    dropdown.focus(listed, inputs=dropdown, outputs=dropdown, **quiet)
    dropdown.input(switch, inputs=dropdown, outputs=[dropdown, message], trigger_mode="always_last", **quiet)
    refresh.click(refresh_list, inputs=dropdown, outputs=[dropdown, message], api_visibility="private")
    gr.Timer(FOLLOW_SECONDS).tick(follow, inputs=[dropdown, seen], outputs=[dropdown, message, seen], **quiet)
    return TopBar(dropdown, quick)


def selected_image(gallery: Sequence[Any] | None, state: dict[str, Any] | None) -> Image.Image | None:
    """The selected gallery image (gradio gives (image, caption) pairs)."""
    if not gallery:
        return None
    index = (state or {}).get("selected", 0)
    item = gallery[index] if 0 <= index < len(gallery) else gallery[0]
    return item[0] if isinstance(item, tuple | list) else item


def image_value(target: GenerationTab, image: Image.Image | None) -> Any:
    """The value for the target's image input: a plain image, or an editor value with no painted layer."""
    if image is None or isinstance(target.image, gr.Image):
        return image
    return {"background": image, "layers": [], "composite": image}


def sent_outputs(target: GenerationTab) -> list[Any]:
    """The controls a pasted infotext may fill: the request fields, and the scripts' controls."""
    components = target.controls.components
    scripts = [component for name, component in components.items() if name.startswith("script")]
    return [components[name] for name in SENT_FIELDS if name in components] + scripts


def pasted_script_fields(target: GenerationTab, text: str) -> dict[str, Any]:
    paste = target.controls.paste_scripts
    return paste(text) if paste is not None and text else {}


def pasted_fields(text: str, styles: StyleDatabase | None, listeners: Sequence[PasteListener] = ()) -> dict[str, Any]:
    """The fields an infotext sends (after the infotext-pasted listeners); with a style database, the styles found
    in its prompts are selected."""
    try:
        fields = handlers.fields_from_infotext(text, listeners)
    except InfotextTooLongError as error:
        gr.Warning(f"Nothing sent: {error}.")
        return {}
    if styles is not None:
        fields = with_pasted_styles(styles, fields)
    return {name: value for name, value in fields.items() if name in SENT_FIELDS}


def chosen_checkpoint(target: GenerationTab) -> list[gr.components.Component]:
    """The top bar's checkpoint as an input of the target tab's events (its family limits what a paste sets)."""
    checkpoint = target.controls.components.get("checkpoint")
    return [checkpoint] if checkpoint is not None else []


def link_gallery(
    application: Application,
    source: GenerationTab,
    target: GenerationTab,
    button: gr.Button,
    tabs: gr.Tabs,
    target_id: str,
    styles: StyleDatabase | None = None,
    listeners: Sequence[PasteListener] = (),
) -> None:
    """ "Send to": the selected image and its parameters go to the target tab, which is shown."""

    def send(gallery: list[Any] | None, state: dict[str, Any] | None, checkpoint: str | None = None) -> dict[Any, Any]:
        image = selected_image(gallery, state)
        if image is None:
            gr.Warning("Nothing to send: generate an image first.")
            return {}
        index = (state or {}).get("selected", 0)
        text = handlers.selected_infotext(state, index)
        fields = {**pasted_fields(text, styles, listeners), **pasted_script_fields(target, text)}
        return {
            **target.image_updates(image_value(target, image)),
            tabs: gr.Tabs(selected=target_id),
            **fill_controls(target.controls, fields_for_family(application, checkpoint, fields)),
        }

    button.click(
        send,
        inputs=[source.panel.gallery, source.panel.state, *chosen_checkpoint(target)],
        outputs=[*target.image_outputs(), tabs, *sent_outputs(target)],
        show_progress="hidden",
        api_visibility="private",
    )


def link_extras(source: GenerationTab, extras: ExtrasTab, tabs: gr.Tabs) -> None:
    """ "Send to extras": the selected image goes to Extras > Single Image (A1111 sends no parameters there)."""

    def send(gallery: list[Any] | None, state: dict[str, Any] | None) -> dict[Any, Any]:
        image = selected_image(gallery, state)
        if image is None:
            gr.Warning("Nothing to send: generate an image first.")
            return {}
        return {**extras.receive(image), tabs: gr.Tabs(selected="extras")}

    source.panel.send_to_extras.click(
        send,
        inputs=[source.panel.gallery, source.panel.state],
        outputs=[*extras.receivers(), tabs],
        show_progress="hidden",
        api_visibility="private",
    )


def link_png_info(
    application: Application,
    png_info: PngInfoTab,
    target: GenerationTab,
    button: gr.Button,
    tabs: gr.Tabs,
    target_id: str,
    styles: StyleDatabase | None = None,
    listeners: Sequence[PasteListener] = (),
) -> None:
    with_image = target.image is not None

    def send(image: Image.Image | None, text: str, checkpoint: str | None = None) -> dict[Any, Any]:
        fields = {**pasted_fields(text or "", styles, listeners), **pasted_script_fields(target, text or "")}
        fields = fields_for_family(application, checkpoint, fields)
        updates: dict[Any, Any] = {tabs: gr.Tabs(selected=target_id), **fill_controls(target.controls, fields)}
        if with_image and image is not None:
            updates |= target.image_updates(image_value(target, image))
        return updates

    outputs = [tabs, *sent_outputs(target), *(target.image_outputs() if with_image else [])]
    button.click(
        send,
        inputs=[png_info.image, png_info.infotext, *chosen_checkpoint(target)],
        outputs=outputs,
        show_progress="hidden",
        api_visibility="private",
    )


def collect_extension_tabs(application: Application) -> list[tuple[gr.Blocks, str, str]]:
    """Extensions' own tabs (A1111's on_ui_tabs: built before the main page, rendered inside it)."""
    tabs = []
    for provider in application.ui_tab_providers:
        try:
            tabs += [(blocks, str(title), str(elem_id)) for blocks, title, elem_id, *_ in provider()]
        except Exception:  # an extension's own code: its tab is left out, the UI starts
            logger.exception("extension tabs failed")
    return tabs


def render_extension_tabs(extension_tabs: list[tuple[gr.Blocks, str, str]]) -> None:
    for extension_blocks, title, elem_id in extension_tabs:
        with gr.Tab(title, id=elem_id, elem_id=f"tab_{elem_id}"):
            extension_blocks.render()


def create_ui(application: Application, warnings: Sequence[str] = ()) -> gr.Blocks:
    """Build the whole UI (nothing is served yet); ``warnings`` are shown in a banner at the top."""
    context = UiContext(application=application, ui_config=UiConfig.load(application.paths.ui_config_file))
    extension_tabs = collect_extension_tabs(application)
    with gr.Blocks(title="Easel", analytics_enabled=False) as blocks:
        exposure_banner(warnings)
        top_bar = build_top_bar(application)
        context.checkpoint = top_bar.checkpoint
        carrier = build_options_carrier(application.options)
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                txt2img = create_txt2img_tab(context)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                img2img = create_img2img_tab(context)
            with gr.Tab("inpaint", id="inpaint", elem_id="tab_inpaint"):
                inpaint = create_inpaint_tab(context)
            with gr.Tab("Extras", id="extras", elem_id="tab_extras"):
                extras = create_extras_tab(application)
            with gr.Tab("Extra Networks", id="extra_networks", elem_id="tab_extra_networks") as extra_networks_tab:
                create_extra_networks_tab(application, extra_networks_tab)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                png_info = create_png_info_tab()
            with gr.Tab("Models", id="models", elem_id="tab_models"):
                create_models_tab(application, application.downloads)
            with gr.Tab("History", id="history", elem_id="tab_history"):
                history = create_history_tab(application)
            with gr.Tab("Queue", id="queue", elem_id="tab_queue"):
                create_queue_tab(application)
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                apply_settings = create_settings_tab(application, list(top_bar.quicksettings))
            with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions"):
                create_extensions_tab(application)
            render_extension_tabs(extension_tabs)
            with gr.Tab("System info", id="system_info", elem_id="tab_system_info"):
                create_system_info_tab(application)
        pasted = application.infotext_pasted
        for source in (txt2img, img2img, inpaint):
            link_gallery(
                application, source, img2img, source.panel.send_to_img2img, tabs, "img2img", context.styles, pasted
            )
            link_gallery(
                application, source, inpaint, source.panel.send_to_inpaint, tabs, "inpaint", context.styles, pasted
            )
            link_extras(source, extras, tabs)
        link_png_info(application, png_info, txt2img, png_info.send_to_txt2img, tabs, "txt2img", context.styles, pasted)
        link_png_info(application, png_info, img2img, png_info.send_to_img2img, tabs, "img2img", context.styles, pasted)
        for target, tab_id in ((txt2img, "txt2img"), (img2img, "img2img")):
            button = getattr(history.png_info, f"send_to_{tab_id}")
            link_png_info(application, history.png_info, target, button, tabs, tab_id, context.styles, pasted)
        link_to_extras(blocks, history, tabs)
        wire_page_options(application, blocks, top_bar, carrier, apply_settings, (txt2img, img2img, inpaint))
        wire_edit_model_controls(application, blocks, top_bar, img2img)
        wire_family_controls(application, blocks, top_bar, (txt2img, img2img, inpaint))
        wire_localization(blocks, application.paths, application.options)
    return blocks


def wire_edit_model_controls(application: Application, blocks: gr.Blocks, top_bar: TopBar, tab: GenerationTab) -> None:
    """A1111: the Image CFG Scale slider shows while an instruct-pix2pix checkpoint is chosen (page load, switch)."""
    slider = tab.controls.components.get("image_cfg_scale")
    if slider is None:
        return

    def visibility(selected: str | None) -> Any:
        return gr.update(visible=checkpoints.edit_model_chosen(application, selected))

    for event in (blocks.load, top_bar.checkpoint.change):
        event(visibility, inputs=top_bar.checkpoint, outputs=slider, show_progress="hidden", api_visibility="private")


def wire_family_controls(
    application: Application, blocks: gr.Blocks, top_bar: TopBar, tabs: Sequence[GenerationTab]
) -> None:
    """The tabs' sampler, schedule type, negative prompt and CLIP skip controls follow the model family of the top
    bar's checkpoint (the one their jobs use): at page load and whenever its value changes (a switch, or the bar
    following a model another client loaded while nothing was chosen)."""
    supports = backend_supports(application)
    quick: dict[str, Any] = {"show_progress": "hidden", "api_visibility": "private"}
    clip_skip = top_bar.quicksettings.get("CLIP_stop_at_last_layers")
    if clip_skip is not None:  # the Clip skip quicksetting says it too

        def clip_skip_note(checkpoint: str | None) -> Any:
            return clip_skip_update(application.checkpoint_family(checkpoint))

        gr.on([blocks.load, top_bar.checkpoint.change], clip_skip_note, top_bar.checkpoint, clip_skip, **quick)
    for tab in tabs:
        components = tab.controls.components
        inputs = [name for name in FAMILY_INPUTS if name in components]
        outputs = [name for name in FAMILY_OUTPUTS if name in components]

        def follow_family(
            checkpoint: str | None, *values: Any, inputs: list[str] = inputs, outputs: list[str] = outputs
        ) -> list[Any]:
            model_family = application.checkpoint_family(checkpoint)
            updates = family_control_updates(model_family, dict(zip(inputs, values, strict=True)), outputs, supports)
            return [updates.get(name, gr.skip()) for name in outputs]

        gr.on(
            [blocks.load, top_bar.checkpoint.change],
            follow_family,
            inputs=[top_bar.checkpoint, *(components[name] for name in inputs)],
            outputs=[components[name] for name in outputs],
            **quick,
        )


def wire_page_options(
    application: Application,
    blocks: gr.Blocks,
    top_bar: TopBar,
    carrier: gr.Textbox,
    apply_settings: gr.events.Dependency,
    tabs: Sequence[GenerationTab],
) -> None:
    """The page's ``opts`` follow the settings: at load, after Apply, after a quicksetting change. A CLIP skip
    quicksetting also moves the tabs' Clip skip sliders (the value their next job sends)."""

    def current() -> str:
        return options_json(application.options, application.paths.config_file)

    send_options(blocks.load(current, outputs=carrier, show_progress="hidden", api_visibility="private"), carrier)
    applied = apply_settings.then(current, outputs=carrier, show_progress="hidden", api_visibility="private")
    send_options(applied, carrier)
    events = wire_quicksettings(application, top_bar.quicksettings, carrier, current)
    for event in events:
        send_options(event, carrier)
    clip_skip = top_bar.quicksettings.get("CLIP_stop_at_last_layers")
    sliders = [tab.controls.components["clip_skip"] for tab in tabs if "clip_skip" in tab.controls.components]
    if clip_skip is not None and sliders:
        clip_skip.input(lambda value: [value] * len(sliders), inputs=clip_skip, outputs=sliders, queue=False)


def blocked_paths(application: Application) -> list[str]:
    """Files gradio must never serve, whatever a request asks (settings, logins, models)."""
    paths = application.paths
    queue = paths.queue_file  # every login's prompts and image paths (with SQLite's -wal and -shm files)
    queue_files = (queue, queue.with_name(queue.name + "-wal"), queue.with_name(queue.name + "-shm"))
    return [
        str(path)
        for path in (paths.models_dir, paths.config_file, paths.ui_config_file, paths.cache_file, *queue_files)
    ]


def mount_ui(
    app: Any,
    path: str,
    application: Application,
    auth: list[tuple[str, str]] | None = None,
    max_file_size: int | None = None,
    warnings: Sequence[str] = (),
) -> gr.Blocks:
    """Build the UI and mount it on ``app`` (a FastAPI app served by modules.server) at ``path``."""
    blocks = create_ui(application, warnings)
    blocks.queue()
    paths = application.paths
    # the loaded (enabled, working) extensions' javascript/*.js and style.css, in load order
    extension_scripts, extension_styles = page_assets(application.extensions)
    gr.mount_gradio_app(
        app,
        blocks,
        path=path,
        auth=auth or None,
        blocked_paths=blocked_paths(application),
        show_error=False,
        max_file_size=max_file_size,
        ssr_mode=False,
        mcp_server=False,
        footer_links=[],
        css=page_css(CSS, [paths.javascript_dir / "page.css", *extension_styles]),
        head=page_head(script_files(paths, extension_scripts)),
    )
    if auth:
        gradio_app = next(route.app for route in reversed(app.routes) if isinstance(route, Mount))
        gradio_app.add_middleware(GradioLoginRequired, gradio_app=gradio_app)
    logger.info("ui mounted path=%s auth=%s", path, bool(auth))
    return blocks


class GradioLoginRequired:
    """Gradio serves ``/cancel``, ``/reset`` and ``/startup-events`` without its login check; with UI logins set,
    these answer 401 unless the request carries Gradio's login cookie (as its other routes require).

    Plain ASGI middleware added to the mounted Gradio app (its supported ``add_middleware``), not a patch."""

    GUARDED = ("/gradio_api/cancel", "/gradio_api/reset", "/gradio_api/startup-events")

    def __init__(self, app: Any, gradio_app: Any) -> None:
        self.app = app
        self.gradio_app = gradio_app

    def logged_in(self, scope: dict[str, Any]) -> bool:
        cookies = Request(scope).cookies
        cookie_id = self.gradio_app.cookie_id
        token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
        return token is not None and token in self.gradio_app.tokens

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        guarded = scope["type"] == "http" and scope.get("path", "").rstrip("/").endswith(self.GUARDED)
        if guarded and not self.logged_in(scope):
            response = JSONResponse({"detail": "Not authenticated"}, status_code=401)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
