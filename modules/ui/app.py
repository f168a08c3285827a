"""The Gradio app: top bar (checkpoint), the tabs, the "send to" links between them, and launching."""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from typing import Any

import gradio as gr
from PIL import Image

from modules.application import Application
from modules.models.errors import ModelError
from modules.prompts.styles import StyleDatabase
from modules.ui import checkpoints, handlers
from modules.ui.common import GenerationTab, UiContext, fill_controls
from modules.ui.extra_networks import create_extra_networks_tab
from modules.ui.extras import create_extras_tab
from modules.ui.img2img import create_img2img_tab, create_inpaint_tab
from modules.ui.models_tab import create_models_tab
from modules.ui.png_info import PngInfoTab, create_png_info_tab
from modules.ui.prompt_tools import with_pasted_styles
from modules.ui.settings import create_settings_tab
from modules.ui.txt2img import create_txt2img_tab
from modules.ui.ui_config import UiConfig

logger = logging.getLogger(__name__)

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
    *handlers.HIRES_FIELDS,
    *handlers.REFINER_FIELDS,
    "image_cfg_scale",
)
CSS = """
.easel-status { padding: 0.4em 0.6em; border-radius: 6px; font-size: 0.9em; white-space: pre-wrap; }
.easel-error { background: #fde8e8; color: #8a1c1c; border: 1px solid #f5b5b5; }
.easel-note { background: #fff6db; color: #6b4e00; border: 1px solid #f0d890; }
.easel-info { background: var(--block-background-fill); }
#exposure_warning { padding: 0.4em 0.8em; border-radius: 6px; font-weight: 600; }
#exposure_warning { background: #fde8e8; color: #8a1c1c; border: 1px solid #f5b5b5; }
#checkpoint_row { align-items: end; }
"""


def kept_choice(application: Application, selected: str | None) -> str | None:
    """The dropdown's own choice (its title refreshed: it gains a hash once loaded), not whatever another client
    (an API override) loaded since; the loaded or start checkpoint when nothing valid is selected."""
    if selected:
        try:
            return application.registry.find(selected).title
        except ModelError:
            logger.info("selected checkpoint gone title=%s", selected)
    return checkpoints.current_title(application)


def exposure_banner(warnings: Sequence[str]) -> None:
    """A visible banner for --listen without logins (modules.server.exposure_warnings gives the texts)."""
    if warnings:
        lines = "<br>".join(f"⚠ {html.escape(warning)}" for warning in warnings)
        gr.HTML(f"<div>{lines}</div>", elem_id="exposure_warning")


def build_top_bar(application: Application) -> gr.Dropdown:
    """The checkpoint dropdown; its value goes with every generation request of this browser session."""
    with gr.Row(elem_id="checkpoint_row"):
        dropdown = gr.Dropdown(
            checkpoints.checkpoint_titles(application),
            label="Stable Diffusion checkpoint",
            value=checkpoints.current_title(application),
            elem_id="setting_sd_model_checkpoint",
            scale=4,
            allow_custom_value=False,
        )
        refresh = gr.Button("Refresh", elem_id="refresh_checkpoints", scale=0, min_width=90, size="lg")
        gr.Column(scale=6)
    message = gr.Markdown(checkpoints.missing_checkpoint_message(application), elem_id="checkpoint_message")

    def switch(title: str) -> tuple[Any, str]:
        outcome = checkpoints.switch_checkpoint(application, title)
        if outcome.error:
            gr.Warning(outcome.error)
        choices = checkpoints.checkpoint_titles(application)
        return gr.update(choices=choices, value=outcome.title), outcome.error

    def refresh_list(selected: str | None) -> tuple[Any, str]:
        application.registry.refresh()
        titles = checkpoints.checkpoint_titles(application)
        return (
            gr.update(choices=titles, value=kept_choice(application, selected)),
            checkpoints.missing_checkpoint_message(application),
        )

    def list_titles(selected: str | None) -> Any:
        # titles gain their hash once a checkpoint is loaded (A1111's "name [hash]")
        return gr.update(choices=checkpoints.checkpoint_titles(application), value=kept_choice(application, selected))

    dropdown.focus(list_titles, inputs=dropdown, outputs=dropdown, show_progress="hidden", api_visibility="private")
    dropdown.input(switch, inputs=dropdown, outputs=[dropdown, message], api_visibility="private")
    refresh.click(refresh_list, inputs=dropdown, outputs=[dropdown, message], api_visibility="private")
    return dropdown


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
    return [target.controls.components[name] for name in SENT_FIELDS if name in target.controls.components]


def pasted_fields(text: str, styles: StyleDatabase | None) -> dict[str, Any]:
    """The fields an infotext sends; with a style database, the styles found in its prompts are selected."""
    fields = handlers.fields_from_infotext(text)
    if styles is not None:
        fields = with_pasted_styles(styles, fields)
    return {name: value for name, value in fields.items() if name in SENT_FIELDS}


def link_gallery(
    source: GenerationTab,
    target: GenerationTab,
    button: gr.Button,
    tabs: gr.Tabs,
    target_id: str,
    styles: StyleDatabase | None = None,
) -> None:
    """ "Send to": the selected image and its parameters go to the target tab, which is shown."""

    def send(gallery: list[Any] | None, state: dict[str, Any] | None) -> dict[Any, Any]:
        image = selected_image(gallery, state)
        if image is None:
            gr.Warning("Nothing to send: generate an image first.")
            return {}
        index = (state or {}).get("selected", 0)
        fields = pasted_fields(handlers.selected_infotext(state, index), styles)
        return {
            target.image: image_value(target, image),
            tabs: gr.Tabs(selected=target_id),
            **fill_controls(target.controls, fields),
        }

    button.click(
        send,
        inputs=[source.panel.gallery, source.panel.state],
        outputs=[target.image, tabs, *sent_outputs(target)],
        show_progress="hidden",
        api_visibility="private",
    )


def link_png_info(
    png_info: PngInfoTab,
    target: GenerationTab,
    button: gr.Button,
    tabs: gr.Tabs,
    target_id: str,
    styles: StyleDatabase | None = None,
) -> None:
    with_image = target.image is not None

    def send(image: Image.Image | None, text: str) -> dict[Any, Any]:
        fields = pasted_fields(text or "", styles)
        updates: dict[Any, Any] = {tabs: gr.Tabs(selected=target_id), **fill_controls(target.controls, fields)}
        if with_image and image is not None:
            updates[target.image] = image_value(target, image)
        return updates

    outputs = [tabs, *sent_outputs(target), *([target.image] if with_image else [])]
    button.click(
        send,
        inputs=[png_info.image, png_info.infotext],
        outputs=outputs,
        show_progress="hidden",
        api_visibility="private",
    )


def create_ui(application: Application, warnings: Sequence[str] = ()) -> gr.Blocks:
    """Build the whole UI (nothing is served yet); ``warnings`` are shown in a banner at the top."""
    context = UiContext(application=application, ui_config=UiConfig.load(application.paths.ui_config_file))
    with gr.Blocks(title="Easel", analytics_enabled=False) as blocks:
        exposure_banner(warnings)
        context.checkpoint = build_top_bar(application)
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                txt2img = create_txt2img_tab(context)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                img2img = create_img2img_tab(context)
            with gr.Tab("inpaint", id="inpaint", elem_id="tab_inpaint"):
                inpaint = create_inpaint_tab(context)
            with gr.Tab("Extras", id="extras", elem_id="tab_extras"):
                create_extras_tab(application)
            with gr.Tab("Extra Networks", id="extra_networks", elem_id="tab_extra_networks") as extra_networks_tab:
                create_extra_networks_tab(application, extra_networks_tab)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                png_info = create_png_info_tab()
            with gr.Tab("Models", id="models", elem_id="tab_models"):
                create_models_tab(application, application.downloads)
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                create_settings_tab(application)
        for source in (txt2img, img2img, inpaint):
            link_gallery(source, img2img, source.panel.send_to_img2img, tabs, "img2img", context.styles)
            link_gallery(source, inpaint, source.panel.send_to_inpaint, tabs, "inpaint", context.styles)
        link_png_info(png_info, txt2img, png_info.send_to_txt2img, tabs, "txt2img", context.styles)
        link_png_info(png_info, img2img, png_info.send_to_img2img, tabs, "img2img", context.styles)
    return blocks


def blocked_paths(application: Application) -> list[str]:
    """Files gradio must never serve, whatever a request asks (settings, logins, models)."""
    paths = application.paths
    return [str(path) for path in (paths.models_dir, paths.config_file, paths.ui_config_file, paths.cache_file)]


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
        css=CSS,
    )
    logger.info("ui mounted path=%s auth=%s", path, bool(auth))
    return blocks
