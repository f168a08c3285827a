"""A1111's "Refiner" accordion (txt2img and img2img): a switch, the refiner checkpoint and "Switch at"."""

from __future__ import annotations

from typing import Any

import gradio as gr

from modules.ui import checkpoints
from modules.ui.common import Controls, UiContext, add_checkbox, add_slider

NO_REFINER = "None"


def refiner_choices(context: UiContext) -> list[str]:
    return [NO_REFINER, *checkpoints.checkpoint_titles(context.application)]


def build_refiner_controls(context: UiContext, controls: Controls) -> None:
    """The switch, then the accordion with the checkpoint and the fraction of steps the base model runs."""
    enable = add_checkbox(context, controls, "refiner_enabled", "Refiner", False)
    with gr.Accordion("Refiner", open=bool(enable.value), elem_id=f"{controls.tab}_refiner") as accordion, gr.Row():
        # Not remembered in ui-config.json: its key would be the hires fix's ("<tab>/Checkpoint/value").
        checkpoint = controls.add(
            "refiner_checkpoint",
            gr.Dropdown(
                refiner_choices(context),
                value=NO_REFINER,
                label="Checkpoint",
                allow_custom_value=True,  # a pasted infotext may name a checkpoint not installed here
                elem_id=f"{controls.tab}_refiner_checkpoint",
            ),
            remember=False,
        )
        add_slider(context, controls, "refiner_switch_at", "Switch at", 0.8, 0.01, 1.0, 0.01)

    def list_checkpoints(current: str) -> Any:
        return gr.update(choices=refiner_choices(context), value=current)

    def open_when_enabled(enabled: bool) -> Any:
        return gr.update(open=True) if enabled else gr.update()

    enable.change(open_when_enabled, inputs=enable, outputs=accordion, show_progress="hidden", queue=False)
    checkpoint.focus(list_checkpoints, inputs=checkpoint, outputs=checkpoint, show_progress="hidden", queue=False)
