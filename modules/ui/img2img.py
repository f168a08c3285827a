"""The img2img tab and the inpaint tab (mask painted or uploaded, with the outpaint controls)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gradio as gr

from modules.models.errors import CheckpointNotFoundError
from modules.processing.requests import Img2ImgRequest
from modules.settings_policy import SettingsPolicy, settings_policy
from modules.ui import handlers
from modules.ui.common import (
    Controls,
    GenerationTab,
    ImageMode,
    UiContext,
    add_slider,
    build_output_panel,
    build_prompt_area,
    build_sampling_controls,
    build_seed_row,
    wire_generation,
)
from modules.ui.img2img_batch import PNG_INFO_PROPS, BatchJob, build_batch_job
from modules.ui.refiner import build_refiner_controls
from modules.ui.scripts_ui import build_scripts


def add_radio(
    context: UiContext, controls: Controls, name: str, label: str, choices: tuple[str, ...], default: str
) -> gr.Radio:
    value = context.initial(controls.tab, label, default)
    return controls.add(
        name,
        gr.Radio(
            list(choices), value=value if value in choices else default, label=label, elem_id=f"{controls.tab}_{name}"
        ),
    )


SKETCH_COLOURS = ["#000000", "#ffffff", "#ff0000", "#00ff00", "#0000ff", "#ffff00", "#ff00ff", "#00ffff"]


def add_mode(controls: Controls, default: str) -> gr.State:
    """The chosen inner tab (A1111's img2img mode), sent with every request."""
    return controls.add("mode", gr.State(default), remember=False)


def follow_mode(tab: gr.Tab, mode: gr.State, label: str) -> None:
    tab.select(lambda: label, outputs=mode, show_progress="hidden", queue=False)


def upload_image(label: str, height: int, elem_id: str) -> gr.Image:
    return gr.Image(
        label=label, type="pil", image_mode=None, sources=["upload", "clipboard"], height=height, elem_id=elem_id
    )


def colour_editor(controls: Controls, name: str, label: str, elem_id: str) -> gr.ImageEditor:
    """An editor whose strokes are colours (A1111's Sketch): a colour picker with a few ready colours."""
    return controls.add(
        name,
        gr.ImageEditor(
            label=label,
            type="pil",
            sources=["upload", "clipboard"],
            height=420,
            brush=gr.Brush(colors=SKETCH_COLOURS, default_color="#ff0000", color_mode="defaults"),
            layers=False,
            format="png",
            elem_id=elem_id,
        ),
        remember=False,
    )


def build_img2img_parameters(context: UiContext, controls: Controls) -> None:
    add_radio(context, controls, "resize_mode", "Resize mode", handlers.RESIZE_MODES, handlers.RESIZE_MODES[0])
    build_sampling_controls(context, controls)
    add_slider(context, controls, "denoising_strength", "Denoising strength", 0.75, 0.0, 1.0, 0.01)


def build_batch_inputs(controls: Controls) -> None:
    """A1111's img2img Batch: server folders (relative to the data dir) and the "PNG info" options."""
    gr.Markdown(
        "Process the images of a folder on the server, each as its own job (folders relative to the data dir). "
        "Give a mask folder for an inpaint batch (one mask for all, or one per image with the same name)."
    )
    for name, label, placeholder in (
        ("batch_input_dir", "Input directory", ""),
        ("batch_output_dir", "Output directory", "Leave blank to save images to the default path."),
        ("batch_inpaint_mask_dir", "Inpaint batch mask directory (required for inpaint batch processing only)", ""),
    ):
        controls.add(name, gr.Textbox(label=label, placeholder=placeholder, elem_id=f"img2img_{name}"), remember=False)
    with gr.Accordion("PNG info", open=False):
        controls.add(
            "batch_use_png_info",
            gr.Checkbox(label="Append png info to prompts", elem_id="img2img_batch_use_png_info"),
            remember=False,
        )
        controls.add(
            "batch_png_info_props",
            gr.CheckboxGroup(list(PNG_INFO_PROPS), label="Parameters to take from png info", value=["Prompt"]),
            remember=False,
        )
        controls.add(
            "batch_png_info_dir",
            gr.Textbox(label="PNG info directory", placeholder="Leave blank to use input directory"),
            remember=False,
        )


def img2img_builder(context: UiContext, policy: SettingsPolicy) -> Any:
    """The request of the img2img tab: one image (img2img, Sketch) or the Batch tab's jobs."""
    registry = context.application.registry

    def checkpoint_for_hash(model_hash: str) -> str | None:
        try:
            return registry.find(model_hash).title
        except CheckpointNotFoundError:
            return None

    def build(values: Mapping[str, Any]) -> Img2ImgRequest | BatchJob:
        if values.get("mode") == handlers.BATCH_MODE:
            return build_batch_job(values, policy, checkpoint_for_hash)
        return handlers.build_img2img_request(values)

    return build


def create_img2img_tab(context: UiContext) -> GenerationTab:
    controls = Controls("img2img")
    policy = settings_policy(context.application)
    prompt = build_prompt_area(context, controls)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            mode = add_mode(controls, handlers.IMG2IMG_MODE)
            with gr.Tabs(elem_id="mode_img2img") as modes:
                with gr.Tab("img2img", id="img2img_img2img_tab", elem_id="img2img_img2img_tab") as plain:
                    image = controls.add("init_image", upload_image("Image", 360, "img2img_image"), remember=False)
                with gr.Tab("Sketch", id="img2img_img2img_sketch_tab", elem_id="img2img_img2img_sketch_tab") as sketch:
                    colour_editor(controls, "sketch", "Image (the painted colours become part of it)", "img2img_sketch")
                with gr.Tab(
                    "Batch", id="img2img_batch_tab", elem_id="img2img_batch_tab", visible=not policy.folders_locked
                ) as batch:
                    build_batch_inputs(controls)
            follow_mode(plain, mode, handlers.IMG2IMG_MODE)
            follow_mode(sketch, mode, handlers.SKETCH_MODE)
            follow_mode(batch, mode, handlers.BATCH_MODE)
            build_img2img_parameters(context, controls)
            # A1111's label; only instruct-pix2pix checkpoints read it (infotext "Image CFG scale"), so it shows
            # only while one is chosen (app.wire_edit_model_controls), as in A1111.
            add_slider(context, controls, "image_cfg_scale", "Image CFG Scale", 1.5, 0.0, 3.0, 0.05, visible=False)
            build_refiner_controls(context, controls)
            seed_row = build_seed_row(context, controls)
            build_scripts(controls, context.application.scripts.tab(is_img2img=True))
        panel = build_output_panel(controls.tab)
    wire_generation(context, controls, prompt, seed_row, panel, img2img_builder(context, policy))
    image_mode = ImageMode(modes, "img2img_img2img_tab", mode, handlers.IMG2IMG_MODE)
    return GenerationTab(controls=controls, panel=panel, image=image, image_mode=image_mode)


def build_mask_inputs(context: UiContext, controls: Controls) -> tuple[gr.ImageEditor, ImageMode]:
    mode = add_mode(controls, handlers.INPAINT_MODE)
    with gr.Tabs(elem_id="mode_inpaint") as modes:
        with gr.Tab("Inpaint", id="img2img_inpaint_tab", elem_id="img2img_inpaint_tab") as inpaint:
            editor = build_mask_editor(controls)
        with gr.Tab("Inpaint sketch", id="inpaint_sketch_tab", elem_id="img2img_inpaint_sketch_tab") as sketch:
            colour_editor(controls, "inpaint_sketch", "Image (paint colours where it should change)", "inpaint_sketch")
            add_slider(context, controls, "mask_alpha", "Mask transparency", 0, 0, 100, 1)
    follow_mode(inpaint, mode, handlers.INPAINT_MODE)
    follow_mode(sketch, mode, handlers.INPAINT_SKETCH_MODE)
    add_slider(context, controls, "mask_blur", "Mask blur", 4, 0, 64, 1)
    add_radio(context, controls, "mask_mode", "Mask mode", handlers.MASK_MODES, handlers.MASK_MODES[0])
    add_radio(context, controls, "inpainting_fill", "Masked content", handlers.MASKED_CONTENT, "original")
    with gr.Row():
        add_radio(context, controls, "inpaint_area", "Inpaint area", handlers.INPAINT_AREAS, handlers.INPAINT_AREAS[0])
        add_slider(context, controls, "inpaint_full_res_padding", "Only masked padding, pixels", 32, 0, 256, 4)
    return editor, ImageMode(modes, "img2img_inpaint_tab", mode, handlers.INPAINT_MODE)


def build_mask_editor(controls: Controls) -> gr.ImageEditor:
    """Inpaint: a white brush paints the mask; or a mask is uploaded."""
    editor = controls.add(
        "editor",
        gr.ImageEditor(
            label="Image (paint the area to change)",
            type="pil",
            sources=["upload", "clipboard"],
            height=420,
            brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"),
            layers=False,
            elem_id="inpaint_editor",
        ),
        remember=False,
    )
    with gr.Accordion("Upload a mask instead (white = change)", open=False):
        controls.add("mask_upload", upload_image("Mask", 240, "inpaint_mask_upload"), remember=False)
    return editor


def build_outpaint_inputs(controls: Controls) -> None:
    """Grow the canvas (not remembered: a remembered size would surprise on the next start)."""
    with (
        gr.Accordion(
            "Outpaint: grow the canvas (the new area is inpainted, the mask above is then ignored)", open=False
        ),
        gr.Row(),
    ):
        for side, label in zip(handlers.OUTPAINT_SIDES, ("left", "right", "up", "down"), strict=True):
            controls.add(
                side,
                gr.Slider(0, 512, value=0, step=8, label=f"Grow {label}, px", elem_id=f"inpaint_{side}"),
                remember=False,
            )


def create_inpaint_tab(context: UiContext) -> GenerationTab:
    controls = Controls("inpaint")
    prompt = build_prompt_area(context, controls)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            editor, image_mode = build_mask_inputs(context, controls)
            build_outpaint_inputs(controls)
            build_img2img_parameters(context, controls)
            seed_row = build_seed_row(context, controls)
            build_scripts(controls, context.application.scripts.tab(is_img2img=True))
        panel = build_output_panel(controls.tab)
    wire_generation(context, controls, prompt, seed_row, panel, handlers.build_inpaint_request)
    return GenerationTab(controls=controls, panel=panel, image=editor, image_mode=image_mode)
