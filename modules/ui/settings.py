"""The Settings tab: every option of modules/options.py on A1111's pages (sections), a search box, "Show all
pages", a reset button per setting; Apply persists them. Quicksettings (modules/ui/quicksettings.py) are shown at
the top of the page instead of here."""

from __future__ import annotations

import logging
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import gradio as gr
from pydantic import ValidationError

from modules.application import Application
from modules.backends.registry import backend_names
from modules.extension_settings import ExtensionSetting
from modules.options import IMAGE_FORMAT_NAMES, SAMPLER_OPTION_NAMES, Options
from modules.samplers import SCHEDULE_TYPES, sampler_names
from modules.settings_policy import FOLDER_SETTING_PREFIX, SettingsRefusedError, settings_policy
from modules.ui.messages import status_html
from modules.ui.models_tab import create_token_settings
from modules.ui.page import localization_files

logger = logging.getLogger(__name__)

# Shown elsewhere (the checkpoint dropdown of the top bar).
# hf_token has its own password field (modules/ui/models_tab.py create_token_settings).
HIDDEN_OPTIONS = frozenset({"sd_model_checkpoint", "hf_token"})

# A1111's pages (section titles and order), with Easel's own "Defaults" page; options no page lists go to "Other".
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
            "jpeg_quality",
            "webp_lossless",
            "save_init_img",
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
            "outdir_init_images",
        ),
    ),
    (
        "Saving to a directory",
        ("save_to_dirs", "grid_save_to_dirs", "directories_filename_pattern", "directories_max_prompt_words"),
    ),
    ("Upscaling", ("ESRGAN_tile", "ESRGAN_tile_overlap")),
    (
        "Face restoration",
        ("face_restoration_model", "code_former_weight", "face_restoration_visibility", "face_detector"),
    ),
    ("API", ("api_enable_requests", "api_max_body_mb")),
    ("Stable Diffusion", ("CLIP_stop_at_last_layers", "emphasis")),
    ("VAE", ("sd_vae",)),
    ("img2img", ("initial_noise_multiplier", "img2img_fix_steps")),
    (
        "Prompt editing",
        (
            "keyedit_precision_attention",
            "keyedit_precision_extra",
            "keyedit_delimiters",
            "keyedit_delimiters_whitespace",
        ),
    ),
    ("Gallery", ("return_grid", "js_modal_lightbox", "js_modal_lightbox_initially_zoomed")),
    ("User interface", ("quicksettings_list", "theme", "localization", "browser_notifications")),
    ("Infotext", ("enable_pnginfo", "save_txt")),
    (
        "Sampler parameters",
        (
            "sd_sampling_backend",
            *SAMPLER_OPTION_NAMES,
        ),
    ),
    ("Live previews", ("live_previews_enable", "show_progress_type", "show_progress_every_n_steps")),
    (
        "Compute",
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
        "Defaults",
        (
            "default_sampler",
            "default_scheduler",
            "default_steps",
            "default_cfg_scale",
            "default_width",
            "default_height",
        ),
    ),
)
SHOW_ALL_PAGES = "Show all pages"
CUSTOM_VALUES_ALLOWED = frozenset({"default_sampler", "default_scheduler", "sd_vae", "localization"})
# Shown on the page as the "Defaults" page's note.
DEFAULTS_NOTE = "Used by the controls at the next start, unless ui-config.json remembers a value."


def option_label(name: str) -> str:
    info = Options.model_fields.get(name)
    return info.description if info is not None and info.description else name


def default_value(name: str) -> Any:
    return Options.model_fields[name].get_default(call_default_factory=True)


def grouped_option_names(shown_elsewhere: Sequence[str] = ()) -> list[tuple[str, list[str]]]:
    """The sections above (less the options ``shown_elsewhere``), then the options they do not list under "Other"."""
    skipped = HIDDEN_OPTIONS | set(shown_elsewhere)
    listed = {name for _, names in SECTIONS for name in names}
    groups = [
        (title, [name for name in names if name in Options.model_fields and name not in skipped])
        for title, names in SECTIONS
    ]
    other = [name for name in Options.model_fields if name not in listed and name not in skipped]
    groups = groups + ([("Other", other)] if other else [])
    return [(title, names) for title, names in groups if names]


def extension_changes(application: Application, values: Mapping[str, Any]) -> dict[str, Any]:
    """The extension settings among ``values`` whose typed value differs from the current one (ValueError: a bad
    value)."""
    settings = application.extension_settings
    given = settings.converted({name: value for name, value in values.items() if name in settings})
    return {name: value for name, value in given.items() if settings.value(name) != value}


def apply_settings(application: Application, values: Mapping[str, Any], user: str | None = None) -> str:
    """Apply the changed values for the login ``user``; returns the status html (what changed, or why nothing did)."""
    current = application.options
    changes = {
        name: value
        for name, value in values.items()
        if name in Options.model_fields and getattr(current, name) != value
    }
    try:
        extension = extension_changes(application, values)
    except ValueError as error:
        return status_html(f"Settings not applied: {error}", "error")
    if not changes and not extension:
        return status_html("Nothing changed.")
    try:
        settings_policy(application).check({**changes, **extension}, user)
        if changes:
            application.update_options(**changes)
        if extension:
            application.extension_settings.update(extension)
    except SettingsRefusedError as error:
        return status_html(f"Settings not applied: {error}", "error")
    except ValidationError as error:
        lines = [
            f"{option_label(str(item['loc'][0]) if item.get('loc') else '')}: "
            f"{str(item['msg']).removeprefix('Value error, ')} (got {item.get('input')!r})"
            for item in error.errors()
        ]
        return status_html("Settings not applied:\n" + "\n".join(lines), "error")
    except OSError as error:
        return status_html(f"Settings applied but not saved to config.json: {error}", "error")
    logger.info("settings changed keys=%s", ",".join(sorted([*changes, *extension])))
    labels = [option_label(name) for name in changes]
    labels += [application.extension_settings.settings[name].label for name in extension]
    return status_html(f"{len(labels)} setting{'s' if len(labels) != 1 else ''} changed: " + ", ".join(labels))


def vae_choices(application: Application) -> list[str]:
    """ "Automatic", "None", then the files of models/VAE by file name (A1111's ``sd_vae`` values)."""
    networks = application.networks
    files = [entry.file_name for entry in networks.registry.entries("vae")] if networks is not None else []
    return ["Automatic", "None", *files]


def localization_choices(application: Application) -> list[str]:
    return ["None", *sorted(localization_files(application.paths))]


def fixed_choices(name: str, application: Application) -> list[str] | None:
    """The choices of a setting picked from a list (None: the setting is typed in or ticked)."""
    lists = {
        "default_sampler": lambda: sampler_names(application.active_backend().sampler_support()),
        "sd_sampling_backend": lambda: ["", *backend_names()],  # empty: the --backend flag's choice
        "default_scheduler": lambda: list(SCHEDULE_TYPES),
        "samples_format": lambda: list(IMAGE_FORMAT_NAMES),
        "grid_format": lambda: list(IMAGE_FORMAT_NAMES),
        "sd_vae": lambda: vae_choices(application),
        "localization": lambda: localization_choices(application),
        "quicksettings_list": lambda: [item for item in Options.model_fields if item != "hf_token"],
    }
    if name in lists:
        return lists[name]()
    annotation = Options.model_fields[name].annotation
    if typing.get_origin(annotation) is list:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is typing.Literal:
        return [str(item) for item in typing.get_args(annotation)]
    return None


def setting_component(
    application: Application, name: str, value: Any, elem_id: str | None = None, locked: bool = False, **layout: Any
) -> gr.components.Component:
    """The control for one setting, labelled with its description (``elem_id`` defaults to ``setting_<name>``);
    ``locked``: shown read-only (a folder setting on a server that locks them)."""
    annotation = Options.model_fields[name].annotation
    label, elem_id = option_label(name), elem_id or f"setting_{name}"
    if locked:
        return gr.Textbox(
            value=str(value), label=f"{label} (locked on this server)", elem_id=elem_id, interactive=False, **layout
        )
    choices = fixed_choices(name, application)
    is_list = typing.get_origin(annotation) is list
    if choices is not None and is_list and name != "quicksettings_list":
        return gr.CheckboxGroup(choices, value=list(value), label=label, elem_id=elem_id, **layout)
    if choices is not None:
        return gr.Dropdown(
            choices,
            value=list(value) if is_list else value,
            multiselect=is_list,
            label=label,
            elem_id=elem_id,
            # a saved value whose file went away (or a sampler of the other backend) stays shown
            allow_custom_value=name in CUSTOM_VALUES_ALLOWED,
            **layout,
        )
    if annotation is bool:
        return gr.Checkbox(value=value, label=label, elem_id=elem_id, **layout)
    if annotation is int:
        return gr.Number(value=value, label=label, precision=0, elem_id=elem_id, **layout)
    if annotation is float:
        return gr.Number(value=value, label=label, elem_id=elem_id, **layout)
    return gr.Textbox(value="" if value is None else str(value), label=label, elem_id=elem_id, **layout)


def setting_row(application: Application, name: str) -> gr.components.Component:
    """The setting's control and its reset button (back to the default; Apply saves it)."""
    with gr.Row(elem_classes=["easel-setting"], elem_id=f"setting_row_{name}", equal_height=True):
        locked = settings_policy(application).folders_locked and name.startswith(FOLDER_SETTING_PREFIX)
        component = setting_component(application, name, getattr(application.options, name), locked=locked, scale=12)
        reset = gr.Button("↺", elem_id=f"setting_{name}_reset", size="sm", scale=0, min_width=40)
    reset.click(lambda: default_value(name), outputs=component, queue=False, show_progress="hidden")
    return component


def extension_setting_component(setting: ExtensionSetting, value: Any) -> gr.components.Component:
    """The control for a setting an extension added (its kind, choices and range from its OptionInfo)."""
    common: dict[str, Any] = {"label": setting.label, "elem_id": f"setting_{setting.key}", "scale": 12}
    if setting.kind == "checkbox":
        return gr.Checkbox(value=bool(value), **common)
    if setting.kind == "slider" and setting.minimum is not None and setting.maximum is not None:
        return gr.Slider(setting.minimum, setting.maximum, value=value, step=setting.step or 1, **common)
    if setting.kind in ("slider", "number"):
        return gr.Number(value=value, **common)
    if setting.kind == "radio" and setting.choices:
        return gr.Radio(list(setting.choices), value=value, **common)
    if setting.kind in ("dropdown", "multiselect") and setting.choices:
        multiselect = setting.kind == "multiselect"
        return gr.Dropdown(list(setting.choices), value=value, multiselect=multiselect, **common)
    return gr.Textbox(value="" if value is None else str(value), **common)


def extension_setting_row(application: Application, setting: ExtensionSetting) -> gr.components.Component:
    with gr.Row(elem_classes=["easel-setting"], elem_id=f"setting_row_{setting.key}", equal_height=True):
        component = extension_setting_component(setting, application.extension_settings.value(setting.key))
        reset = gr.Button("↺", elem_id=f"setting_{setting.key}_reset", size="sm", scale=0, min_width=40)
    reset.click(lambda: setting.default, outputs=component, queue=False, show_progress="hidden")
    return component


def page_elem_id(title: str) -> str:
    return "settings_page_" + "".join(char if char.isalnum() else "_" for char in title.lower())


def create_settings_tab(application: Application, quicksettings: Sequence[str] = ()) -> gr.events.Dependency:
    """The tab; returns Apply's event (what follows it sees the saved settings)."""
    components: dict[gr.components.Component, str] = {}
    with gr.Row(equal_height=True):
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_apply", scale=0, min_width=200)
        # filtered in the browser as the user types (javascript/settings.js)
        gr.Textbox(placeholder="Search...", show_label=False, elem_id="settings_search", scale=3, container=False)
        notifications = gr.Button("Request browser notifications", elem_id="request_notifications", scale=0)
    status = gr.HTML(elem_id="settings_status")
    groups = grouped_option_names(quicksettings)
    easel_titles = {title for title, _ in groups}
    extension_pages = [  # the settings extensions added, a page per section
        (title if title not in easel_titles else f"{title} (extensions)", settings)
        for title, settings in application.extension_settings.sections()
    ]
    with gr.Row():
        # pages are switched in the browser (javascript/settings.js): every setting stays on the page, so the
        # search box and "Show all pages" can show any of them
        with gr.Column(scale=1, min_width=200):
            page = gr.Radio(
                [title for title, _ in groups] + [title for title, _ in extension_pages] + [SHOW_ALL_PAGES],
                value=groups[0][0],
                show_label=False,
                elem_id="settings_page_choice",
            )
        with gr.Column(scale=5):
            for title, names in groups:
                with gr.Column(elem_classes=["easel-settings-page"], elem_id=page_elem_id(title)):
                    gr.Markdown(f"### {title}" + (f"\n{DEFAULTS_NOTE}" if title == "Defaults" else ""))
                    for name in names:
                        components[setting_row(application, name)] = name
            for title, settings in extension_pages:
                with gr.Column(elem_classes=["easel-settings-page"], elem_id=page_elem_id(title)):
                    gr.Markdown(f"### {title}")
                    for setting in settings:
                        components[extension_setting_row(application, setting)] = setting.key

    def apply_values(data: dict[Any, Any], request: gr.Request) -> str:
        values = {components[component]: value for component, value in data.items()}
        return apply_settings(application, values, request.username if request else None)

    applied = apply.click(
        apply_values, inputs=set(components), outputs=status, show_progress="hidden", api_visibility="private"
    )
    page.input(None, inputs=page, js="(title) => { easelShowSettingsPage(title); return []; }", queue=False)
    notifications.click(None, js="() => { easelRequestNotifications(); }", queue=False)
    create_token_settings(application)
    return applied
