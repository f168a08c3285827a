"""The img2img tab and the inpaint tab (mask painted or uploaded, with the outpaint controls)."""

from __future__ import annotations

import gradio as gr

from modules.ui import handlers
from modules.ui.common import (
    Controls,
    GenerationTab,
    UiContext,
    add_slider,
    build_output_panel,
    build_prompt_area,
    build_sampling_controls,
    build_seed_row,
    wire_generation,
)
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


def build_img2img_parameters(context: UiContext, controls: Controls) -> None:
    add_radio(context, controls, "resize_mode", "Resize mode", handlers.RESIZE_MODES, handlers.RESIZE_MODES[0])
    build_sampling_controls(context, controls)
    add_slider(context, controls, "denoising_strength", "Denoising strength", 0.75, 0.0, 1.0, 0.01)


def create_img2img_tab(context: UiContext) -> GenerationTab:
    controls = Controls("img2img")
    prompt = build_prompt_area(context, controls)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            image = controls.add(
                "init_image",
                gr.Image(
                    label="Image",
                    type="pil",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    height=360,
                    elem_id="img2img_image",
                ),
                remember=False,
            )
            build_img2img_parameters(context, controls)
            # A1111's label; only instruct-pix2pix checkpoints read it (infotext "Image CFG scale").
            add_slider(context, controls, "image_cfg_scale", "Image CFG Scale", 1.5, 0.0, 3.0, 0.05)
            build_refiner_controls(context, controls)
            seed_row = build_seed_row(context, controls)
            build_scripts(controls, context.application.scripts.tab(is_img2img=True))
        panel = build_output_panel(controls.tab)
    wire_generation(context, controls, prompt, seed_row, panel, handlers.build_img2img_request)
    return GenerationTab(controls=controls, panel=panel, image=image)


def build_mask_inputs(context: UiContext, controls: Controls) -> gr.ImageEditor:
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
        controls.add(
            "mask_upload",
            gr.Image(
                label="Mask",
                type="pil",
                image_mode=None,
                sources=["upload", "clipboard"],
                height=240,
                elem_id="inpaint_mask_upload",
            ),
            remember=False,
        )
    add_slider(context, controls, "mask_blur", "Mask blur", 4, 0, 64, 1)
    add_radio(context, controls, "mask_mode", "Mask mode", handlers.MASK_MODES, handlers.MASK_MODES[0])
    add_radio(context, controls, "inpainting_fill", "Masked content", handlers.MASKED_CONTENT, "original")
    with gr.Row():
        add_radio(context, controls, "inpaint_area", "Inpaint area", handlers.INPAINT_AREAS, handlers.INPAINT_AREAS[0])
        add_slider(context, controls, "inpaint_full_res_padding", "Only masked padding, pixels", 32, 0, 256, 4)
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
            editor = build_mask_inputs(context, controls)
            build_outpaint_inputs(controls)
            build_img2img_parameters(context, controls)
            seed_row = build_seed_row(context, controls)
            build_scripts(controls, context.application.scripts.tab(is_img2img=True))
        panel = build_output_panel(controls.tab)
    wire_generation(context, controls, prompt, seed_row, panel, handlers.build_inpaint_request)
    return GenerationTab(controls=controls, panel=panel, image=editor)
