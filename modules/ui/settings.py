"""The Settings tab: every option of modules/options.py, labelled with its description; Apply persists them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin

import gradio as gr
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from modules.application import Application
from modules.options import IMAGE_FORMAT_NAMES, Options
from modules.samplers import SCHEDULE_TYPES, SamplerSupport, sampler_names
from modules.ui.messages import status_html
from modules.ui.models_tab import create_token_settings

logger = logging.getLogger(__name__)

# Shown elsewhere (the checkpoint dropdown of the top bar).
# hf_token has its own password field (modules/ui/models_tab.py create_token_settings).
HIDDEN_OPTIONS = frozenset({"sd_model_checkpoint", "hf_token"})

SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Saving images/grids",
        (
            "samples_save",
            "samples_format",
            "samples_filename_pattern",
            "save_images_add_number",
            "save_images_replace_action",
            "grid_save",
            "grid_format",
            "grid_extended_filename",
            "return_grid",
            "jpeg_quality",
            "webp_lossless",
        ),
    ),
    (
        "Paths for saving",
        (
            "outdir_samples",
            "outdir_txt2img_samples",
            "outdir_img2img_samples",
            "outdir_extras_samples",
            "outdir_txt2img_grids",
            "outdir_img2img_grids",
        ),
    ),
    (
        "Saving to a directory",
        ("save_to_dirs", "grid_save_to_dirs", "directories_filename_pattern", "directories_max_prompt_words"),
    ),
    ("Infotext", ("enable_pnginfo", "save_txt")),
    ("Live previews", ("live_previews_enable", "show_progress_type", "show_progress_every_n_steps")),
    (
        "Compute (speed: compile, memory format and FP8 reload the checkpoint; see README)",
        (
            "compute_compile_unet",
            "compute_compile_vae",
            "compute_compile_mode",
            "compute_compile_dynamic",
            "compute_compile_warmup",
            "compute_channels_last",
            "compute_fuse_qkv",
            "compute_cudnn_benchmark",
            "compute_tf32",
            "fp8_storage",
            "token_merging_ratio",
            "deepcache_interval",
        ),
    ),
    (
        "Defaults (used by the controls at the next start, unless ui-config.json remembers a value)",
        (
            "default_sampler",
            "default_scheduler",
            "default_steps",
            "default_cfg_scale",
            "default_width",
            "default_height",
            "CLIP_stop_at_last_layers",
            "initial_noise_multiplier",
            "img2img_fix_steps",
        ),
    ),
)


def option_label(name: str) -> str:
    info = Options.model_fields.get(name)
    return info.description if info is not None and info.description else name


def grouped_option_names() -> list[tuple[str, list[str]]]:
    """The sections above, then any option they do not list (added by later versions) under "Other"."""
    listed = {name for _, names in SECTIONS for name in names}
    groups = [(title, [name for name in names if name in Options.model_fields]) for title, names in SECTIONS]
    other = [name for name in Options.model_fields if name not in listed and name not in HIDDEN_OPTIONS]
    return groups + ([("Other", other)] if other else [])


def apply_settings(application: Application, values: Mapping[str, Any]) -> str:
    """Apply the changed values; returns the status html (what changed, or why nothing did)."""
    current = application.options
    changes = {
        name: value
        for name, value in values.items()
        if name in Options.model_fields and getattr(current, name) != value
    }
    if not changes:
        return status_html("Nothing changed.")
    try:
        application.update_options(**changes)
    except ValidationError as error:
        lines = [
            f"{option_label(str(item['loc'][0]) if item.get('loc') else '')}: "
            f"{str(item['msg']).removeprefix('Value error, ')} (got {item.get('input')!r})"
            for item in error.errors()
        ]
        return status_html("Settings not applied:\n" + "\n".join(lines), "error")
    except OSError as error:
        return status_html(f"Settings applied but not saved to config.json: {error}", "error")
    logger.info("settings changed keys=%s", ",".join(sorted(changes)))
    return status_html(
        f"{len(changes)} setting{'s' if len(changes) != 1 else ''} changed: "
        + ", ".join(option_label(name) for name in changes)
    )


def setting_component(
    name: str, info: FieldInfo, value: Any, support: SamplerSupport | None = None
) -> gr.components.Component:
    label, elem_id = option_label(name), f"setting_{name}"
    if name == "default_sampler":
        return gr.Dropdown(sampler_names(support), value=value, label=label, elem_id=elem_id, allow_custom_value=True)
    if name == "default_scheduler":
        return gr.Dropdown(list(SCHEDULE_TYPES), value=value, label=label, elem_id=elem_id, allow_custom_value=True)
    if name in ("samples_format", "grid_format"):
        return gr.Dropdown(list(IMAGE_FORMAT_NAMES), value=value, label=label, elem_id=elem_id)
    if get_origin(info.annotation) is Literal:
        return gr.Dropdown(list(get_args(info.annotation)), value=value, label=label, elem_id=elem_id)
    if info.annotation is bool:
        return gr.Checkbox(value=value, label=label, elem_id=elem_id)
    if info.annotation is int:
        return gr.Number(value=value, label=label, precision=0, elem_id=elem_id)
    if info.annotation is float:
        return gr.Number(value=value, label=label, elem_id=elem_id)
    return gr.Textbox(value="" if value is None else str(value), label=label, elem_id=elem_id)


def create_settings_tab(application: Application) -> None:
    components: dict[gr.components.Component, str] = {}
    with gr.Row():
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_apply", scale=0, min_width=200)
        status = gr.HTML(elem_id="settings_status")
    for title, names in grouped_option_names():
        with gr.Accordion(title, open=True):
            for name in names:
                value = getattr(application.options, name)
                support = application.backend.sampler_support()
                components[setting_component(name, Options.model_fields[name], value, support)] = name

    def apply_values(data: dict[Any, Any]) -> str:
        return apply_settings(application, {components[component]: value for component, value in data.items()})

    apply.click(apply_values, inputs=set(components), outputs=status, show_progress="hidden", api_visibility="private")
    create_token_settings(application)
