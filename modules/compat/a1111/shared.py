"""A1111's ``modules.shared`` (with ``shared_cmd_options``, ``shared_state``, ``options``): ``opts`` (Easel's
settings plus the ones extensions add with ``add_option``), ``cmd_opts`` (the parsed flags, with those extensions
add in preload.py), ``state`` (the running job: interrupted, skipped, job_count ...), ``sd_model`` (the loaded
model's basic attributes), ``OptionInfo``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from modules.compat.a1111.processing import current_request
from modules.compat.runtime import application, runtime
from modules.extension_settings import ExtensionSetting, choices_of

logger = logging.getLogger("extensions")


class OptionInfo:
    """A setting an extension adds (A1111's signature; the UI widget arguments are kept, not used)."""

    def __init__(
        self,
        default: Any = None,
        label: str = "",
        component: Any = None,
        component_args: Any = None,
        onchange: Callable[[], None] | None = None,
        section: tuple[str, str] | None = None,
        refresh: Callable[[], None] | None = None,
        comment_before: str = "",
        comment_after: str = "",
        infotext: str | None = None,
        restrict_api: bool = False,
        category_id: str | None = None,
    ) -> None:
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.refresh = refresh
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api
        self.category_id = category_id
        self.do_not_save = False

    def info(self, text: str) -> OptionInfo:
        self.comment_after += f"<span class='info'>({text})</span>"
        return self

    def html(self, text: str) -> OptionInfo:
        self.comment_after += text
        return self

    def link(self, label: str, url: str) -> OptionInfo:
        self.comment_before += f"[<a href='{url}' target='_blank'>{label}</a>]"
        return self

    def needs_reload_ui(self) -> OptionInfo:
        return self

    def needs_restart(self) -> OptionInfo:
        return self


def options_section(section: tuple[str, str], options: dict[str, OptionInfo]) -> dict[str, OptionInfo]:
    for info in options.values():
        info.section = section
    return options


class Options:
    """``shared.opts``: Easel's settings by their A1111 names, then the extensions' settings (a running job sees its
    request's overrides of them, as A1111 applies ``override_settings`` for the job)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        app = application()
        if name in type(app.options).model_fields:
            return getattr(app.options, name)
        if name in app.extension_settings:
            return app.extension_settings.value(name, job_overrides())
        raise AttributeError(f"Easel's A1111 compatibility layer has no setting opts.{name}")

    def __setattr__(self, name: str, value: Any) -> None:
        self.set(name, value)

    @property
    def data(self) -> dict[str, Any]:
        state = runtime()
        if state.application is None:
            return {key: info.default for key, info in state.option_infos.items()}
        return {**state.application.extension_settings.data(), **state.application.options.model_dump()}

    @property
    def data_labels(self) -> dict[str, OptionInfo]:
        return dict(runtime().option_infos)

    def add_option(self, key: str, info: OptionInfo) -> None:
        state = runtime()
        state.option_infos[key] = info
        application().extension_settings.add(setting_of(key, info))
        if info.onchange is not None:
            state.onchange.setdefault(key, []).append(info.onchange)

    def add_option_section(self, section: tuple[str, str]) -> None:  # A1111 1.x API, kept for old extensions
        return None

    def set(self, key: str, value: Any, is_api: bool = False, run_callbacks: bool = True) -> bool:
        state = runtime()
        app = application()
        if key in type(app.options).model_fields:
            app.update_options(**{key: value})
        elif key in app.extension_settings:
            app.extension_settings.update({key: value})
        else:
            raise AttributeError(f"Easel's A1111 compatibility layer has no setting opts.{key}")
        if run_callbacks:
            for callback in state.onchange.get(key, []):
                callback()
        return True

    def get_default(self, key: str) -> Any:
        info = runtime().option_infos.get(key)
        return info.default if info is not None else None

    def onchange(self, key: str, func: Callable[[], None], call: bool = True) -> None:
        runtime().onchange.setdefault(key, []).append(func)
        if call:
            func()

    def save(self, filename: str | None = None) -> None:
        return None  # every change is saved when it is made


def job_overrides() -> dict[str, Any]:
    """The running job's per-request values of extension settings (its ``override_settings``)."""
    request = current_request()
    return dict(request.extension_settings) if request is not None else {}


def component_arguments(info: OptionInfo) -> dict[str, Any]:
    arguments = info.component_args() if callable(info.component_args) else info.component_args
    return dict(arguments) if isinstance(arguments, dict) else {}


COMPONENT_KINDS = {
    "Checkbox": "checkbox",
    "Slider": "slider",
    "Number": "number",
    "Dropdown": "dropdown",
    "Radio": "radio",
    "CheckboxGroup": "multiselect",
}


def setting_of(key: str, info: OptionInfo) -> ExtensionSetting:
    """An OptionInfo as Easel's neutral description: the Gradio component class and its arguments give the kind,
    choices and range; without a component, the default's type does (A1111 makes a checkbox for a bool, a number
    for a number, else a textbox)."""
    arguments = component_arguments(info)
    name = getattr(info.component, "__name__", "") if info.component is not None else ""
    if name in COMPONENT_KINDS:
        kind = "multiselect" if arguments.get("multiselect") else COMPONENT_KINDS[name]
    elif isinstance(info.default, bool):
        kind = "checkbox"
    elif isinstance(info.default, int | float):
        kind = "number"
    else:
        kind = "text"
    section = info.section[1] if info.section and len(info.section) > 1 and info.section[1] else "Extensions"
    return ExtensionSetting(
        key=key,
        default=info.default,
        label=str(info.label or key),
        section=str(section),
        kind=kind,
        choices=choices_of(arguments.get("choices")),
        minimum=arguments.get("minimum"),
        maximum=arguments.get("maximum"),
        step=arguments.get("step"),
        infotext=info.infotext,
    )


class CommandLineOptions:
    """``shared.cmd_opts``: the parsed flags (A1111's names, extensions' preload.py flags included)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return getattr(runtime().args, name)
        except AttributeError:
            raise AttributeError(f"Easel's A1111 compatibility layer has no flag cmd_opts.{name}") from None


class State:
    """``shared.state``: the job that runs now (interrupt and skip act on it)."""

    job = ""
    textinfo = ""
    time_start = 0.0
    server_start = 0.0
    stopping_generation = False

    def _current(self) -> Any:
        state = runtime()
        if state.application is None:
            return None
        job = state.application.service.current()
        return job.control if job is not None else None

    @property
    def interrupted(self) -> bool:
        control = self._current()
        return bool(control and control.interrupted)

    @property
    def skipped(self) -> bool:
        control = self._current()
        return bool(control and control.skipped)

    def _progress(self) -> Any:
        control = self._current()
        return control.snapshot() if control is not None else None

    @property
    def job_count(self) -> int:
        progress = self._progress()
        return progress.job_count if progress else 0

    @property
    def job_no(self) -> int:
        progress = self._progress()
        return progress.job_no if progress else 0

    @property
    def sampling_step(self) -> int:
        progress = self._progress()
        return progress.sampling_step if progress else 0

    @property
    def sampling_steps(self) -> int:
        progress = self._progress()
        return progress.sampling_steps if progress else 0

    def interrupt(self) -> None:
        control = self._current()
        if control is not None:
            control.interrupt()

    def skip(self) -> None:
        control = self._current()
        if control is not None:
            control.skip()

    def begin(self, job: str = "(unknown)") -> None:
        self.job = job

    def end(self) -> None:
        self.job = ""

    def nextjob(self) -> None:
        return None

    def assign_current_image(self, image: Any) -> None:
        return None

    def set_current_image(self) -> None:
        return None


opts = Options()
cmd_opts = CommandLineOptions()
state = State()


def loaded_model() -> Any:
    """``shared.sd_model``: the loaded checkpoint's basic attributes (None when none is loaded)."""
    model = application().models.current
    return None if model is None else model_view(model)


def model_view(model: Any) -> Any:
    """A loaded model's basic attributes as A1111's ``sd_model`` has them (``on_model_loaded`` gets this too)."""
    info = SimpleNamespace(
        title=model.info.title,
        name=model.info.name,
        model_name=model.info.name,
        filename=str(model.info.path),
        hash=model.short_hash,
        shorthash=model.short_hash,
        sha256=model.sha256,
    )
    is_sdxl = "XL" in type(model.pipeline).__name__
    encoder = getattr(model.pipeline, "text_encoder", None)
    is_sd2 = not is_sdxl and getattr(getattr(encoder, "config", None), "hidden_size", 768) == 1024
    return SimpleNamespace(
        sd_checkpoint_info=info,
        sd_model_checkpoint=str(model.info.path),
        sd_model_hash=model.short_hash,
        is_sdxl=is_sdxl,
        is_sd2=is_sd2,
        is_sd1=not is_sdxl and not is_sd2,
        is_sd3=False,
    )


def __getattr__(name: str) -> Any:
    if name == "sd_model":
        return loaded_model()
    if name == "demo":
        return None
    raise AttributeError(f"Easel's A1111 compatibility layer has no modules.shared.{name}")
