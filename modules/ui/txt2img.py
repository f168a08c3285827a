"""The txt2img tab, with A1111's "Hires. fix" controls."""

from __future__ import annotations

from typing import Any

import gradio as gr

from modules.postprocess.latent_upscale import LATENT_UPSCALE_MODES
from modules.samplers import SCHEDULE_TYPES, sampler_names
from modules.ui import checkpoints, handlers
from modules.ui.common import (
    Controls,
    GenerationTab,
    UiContext,
    add_checkbox,
    add_slider,
    build_output_panel,
    build_prompt_area,
    build_sampling_controls,
    build_seed_row,
    wire_generation,
)
from modules.ui.refiner import build_refiner_controls
from modules.ui.scripts_ui import build_scripts


def hires_upscaler_choices(context: UiContext) -> list[str]:
    """Latent modes first, then every usable image upscaler (A1111's order)."""
    upscalers = context.application.postprocessor.upscalers.upscalers()
    return [*LATENT_UPSCALE_MODES, *(info.name for info in upscalers if info.supported)]


def hires_checkpoint_choices(context: UiContext) -> list[str]:
    return [handlers.USE_SAME_CHECKPOINT, *checkpoints.checkpoint_titles(context.application)]


def add_dropdown(
    context: UiContext, controls: Controls, name: str, label: str, choices: list[str], custom: bool = False
) -> gr.Dropdown:
    """A dropdown starting at the remembered value when it is still a choice, else the first choice."""
    value = context.initial(controls.tab, label, choices[0])
    return controls.add(
        name,
        gr.Dropdown(
            choices,
            value=value if value in choices else choices[0],
            label=label,
            allow_custom_value=custom,  # a pasted infotext may name an upscaler or checkpoint not installed here
            elem_id=f"{controls.tab}_{name}",
        ),
    )


def add_textbox(context: UiContext, controls: Controls, name: str, label: str) -> gr.Textbox:
    value = context.initial(controls.tab, label, "")
    placeholder = "Leave empty to use the same prompt as in the first pass."
    return controls.add(
        name, gr.Textbox(value=value, label=label, lines=2, placeholder=placeholder, elem_id=f"{controls.tab}_{name}")
    )


def build_hires_controls(context: UiContext, controls: Controls) -> None:
    """The "Hires. fix" switch and its accordion (which opens when the switch is turned on)."""
    enable = add_checkbox(context, controls, "enable_hr", "Hires. fix", False)
    with gr.Accordion("Hires. fix", open=bool(enable.value), elem_id="txt2img_hires_fix") as accordion:
        with gr.Row():
            add_dropdown(context, controls, "hr_upscaler", "Upscaler", hires_upscaler_choices(context), custom=True)
            add_slider(context, controls, "hr_second_pass_steps", "Hires steps", 0, 0, 150, 1)
            add_slider(context, controls, "denoising_strength", "Denoising strength", 0.7, 0.0, 1.0, 0.01)
        with gr.Row():
            add_slider(context, controls, "hr_scale", "Upscale by", 2.0, 1.0, 4.0, 0.05)
            add_slider(context, controls, "hr_resize_x", "Resize width to", 0, 0, 2048, 8)
            add_slider(context, controls, "hr_resize_y", "Resize height to", 0, 0, 2048, 8)
        with gr.Row():
            checkpoint = add_dropdown(
                context, controls, "hr_checkpoint_name", "Checkpoint", hires_checkpoint_choices(context), custom=True
            )
            support = context.application.active_backend().sampler_support()
            samplers = [handlers.USE_SAME_SAMPLER, *sampler_names(support)]
            add_dropdown(context, controls, "hr_sampler_name", "Hires sampling method", samplers)
            schedules = [handlers.USE_SAME_SCHEDULER, *SCHEDULE_TYPES]
            add_dropdown(context, controls, "hr_scheduler", "Hires schedule type", schedules)
        with gr.Row():
            add_textbox(context, controls, "hr_prompt", "Hires prompt")
            add_textbox(context, controls, "hr_negative_prompt", "Hires negative prompt")

    def list_checkpoints(current: str) -> Any:
        return gr.update(choices=hires_checkpoint_choices(context), value=current)

    def open_when_enabled(enabled: bool) -> Any:
        return gr.update(open=True) if enabled else gr.update()

    enable.change(open_when_enabled, inputs=enable, outputs=accordion, show_progress="hidden", queue=False)
    checkpoint.focus(list_checkpoints, inputs=checkpoint, outputs=checkpoint, show_progress="hidden", queue=False)


def create_txt2img_tab(context: UiContext) -> GenerationTab:
    controls = Controls("txt2img")
    prompt = build_prompt_area(context, controls)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            build_sampling_controls(context, controls)
            build_hires_controls(context, controls)
            build_refiner_controls(context, controls)
            seed_row = build_seed_row(context, controls)
            build_scripts(controls, context.application.scripts.tab(is_img2img=False))
        panel = build_output_panel(controls.tab)
    wire_generation(context, controls, prompt, seed_row, panel, handlers.build_txt2img_request)
    return GenerationTab(controls=controls, panel=panel)
