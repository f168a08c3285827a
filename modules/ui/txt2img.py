"""The txt2img tab."""

from __future__ import annotations

import gradio as gr

from modules.ui import handlers
from modules.ui.common import (
    Controls,
    GenerationTab,
    UiContext,
    build_output_panel,
    build_prompt_area,
    build_sampling_controls,
    build_seed_row,
    wire_generation,
)


def create_txt2img_tab(context: UiContext) -> GenerationTab:
    controls = Controls("txt2img")
    prompt = build_prompt_area(context, controls)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            build_sampling_controls(context, controls)
            seed_row = build_seed_row(context, controls)
        panel = build_output_panel(controls.tab)
    wire_generation(context, controls, prompt, seed_row, panel, handlers.build_txt2img_request)
    return GenerationTab(controls=controls, panel=panel)
