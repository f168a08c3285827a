"""Quicksettings: the settings named by ``quicksettings_list`` shown in the top bar beside the checkpoint
dropdown (A1111); a change is applied and saved at once, and the next job uses it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gradio as gr
from pydantic import ValidationError

from modules.application import Application
from modules.options import Options
from modules.ui.settings import HIDDEN_OPTIONS, option_label, setting_component

logger = logging.getLogger(__name__)

# The checkpoint is always in the top bar (its own dropdown; the generation requests carry its value).
CHECKPOINT = "sd_model_checkpoint"


def quicksetting_names(application: Application) -> list[str]:
    """The listed settings this version knows, in the listed order (unknown names are logged and skipped)."""
    names: list[str] = []
    for name in application.options.quicksettings_list:
        if name == CHECKPOINT or name in names:
            continue
        if name not in Options.model_fields or name in HIDDEN_OPTIONS:
            logger.warning("quicksetting unknown name=%s", name)
            continue
        names.append(name)
    return names


def apply_quicksetting(application: Application, name: str, value: Any) -> tuple[Any, str]:
    """Save one setting; returns the value now in force (the old one when refused) and the error, if any."""
    try:
        application.update_options(**{name: value})
    except ValidationError as error:
        message = "; ".join(str(item["msg"]).removeprefix("Value error, ") for item in error.errors())
        return getattr(application.options, name), f"{option_label(name)} not changed: {message}"
    except OSError as error:
        return getattr(application.options, name), f"{option_label(name)} applied but not saved: {error}"
    logger.info("quicksetting changed name=%s", name)
    return getattr(application.options, name), ""


def build_quicksettings(application: Application) -> dict[str, gr.components.Component]:
    """The controls (call inside the top bar's row); wire them with ``wire_quicksettings``."""
    return {
        name: setting_component(application, name, getattr(application.options, name), scale=2, min_width=160)
        for name in quicksetting_names(application)
    }


def wire_quicksettings(
    application: Application,
    components: dict[str, gr.components.Component],
    carrier: gr.Textbox,
    options_text: Callable[[], str],
) -> list[Any]:
    """Each control saves its setting when the user changes it, then writes the settings JSON into ``carrier``.
    Returns the events, so that the page can pass the new settings on to its scripts."""
    events = []
    for name, component in components.items():

        def change(value: Any, name: str = name) -> tuple[Any, str]:
            kept, error = apply_quicksetting(application, name, value)
            if error:
                gr.Warning(error)
            return kept, options_text()

        events.append(
            component.input(
                change, inputs=component, outputs=[component, carrier], show_progress="hidden", api_visibility="private"
            )
        )
    return events
