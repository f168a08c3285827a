"""A1111's ``modules.script_callbacks``: extensions register callbacks by these names.

Called by Easel (``CALLED``; the wiring is ``modules.compat.callbacks``): ``on_app_started`` (after the server app is
built), ``on_ui_settings`` (when extensions are loaded, so their settings exist for the API and the scripts),
``on_ui_tabs`` (each returned tab is added to the UI), ``on_before_ui``, ``on_model_loaded`` (each checkpoint that
becomes the loaded one), ``on_before_image_saved`` / ``on_image_saved`` (every image and grid saved, Extras' too),
``on_cfg_denoiser`` / ``on_cfg_denoised`` / ``on_cfg_after_cfg`` (each model call of guidance, both backends),
``on_extra_noise`` (the original backend's img2img extra noise; a replaced ``noise`` is added), ``on_image_grid``
(before each grid is laid out: a job's, Loopback's, ``images.image_grid``; a changed ``imgs`` / ``cols`` / ``rows`` is
drawn), ``on_infotext_pasted`` (PNG Info, API and UI), ``on_script_unloaded`` (before Apply and restart),
``on_before_token_counter`` (the UI's token counters; the changed prompt and steps are counted). The others are accepted
so extensions load, and are not called: README lists them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modules.application import TokenCountInput
from modules.backends.hooks import AfterCFGParams, DenoisedParams, DenoiserParams
from modules.backends.hooks import ExtraNoiseParams as ExtraNoiseParams  # (noise, x, xi): a replaced noise is added
from modules.compat.runtime import runtime
from modules.processing.saving import GridLayout

logger = logging.getLogger("extensions")

CALLBACK_NAMES = (
    "app_started",
    "model_loaded",
    "ui_tabs",
    "ui_train_tabs",
    "ui_settings",
    "before_image_saved",
    "image_saved",
    "extra_noise",
    "cfg_denoiser",
    "cfg_denoised",
    "cfg_after_cfg",
    "before_component",
    "after_component",
    "image_grid",
    "infotext_pasted",
    "script_unloaded",
    "before_ui",
    "on_reload",
    "list_optimizers",
    "list_unets",
    "before_token_counter",
)
CALLED = (
    "app_started",
    "ui_settings",
    "ui_tabs",
    "before_ui",
    "model_loaded",
    "before_image_saved",
    "image_saved",
    "cfg_denoiser",
    "cfg_denoised",
    "cfg_after_cfg",
    "image_grid",
    "extra_noise",
    "before_token_counter",
    "infotext_pasted",
    "script_unloaded",
)


@dataclass
class ImageSaveParams:
    image: Any
    p: Any
    filename: str
    pnginfo: dict[str, Any]


# The guidance, extra noise, grid and token counter parameter objects are Easel's own (A1111's field names and
# positional order), so what a callback changes is what Easel uses.
CFGDenoiserParams = DenoiserParams
CFGDenoisedParams = DenoisedParams
AfterCFGCallbackParams = AfterCFGParams
ImageGridLoopParams = GridLayout
BeforeTokenCounterParams = TokenCountInput


@dataclass
class UiTrainTabParams:
    txt2img_preview_params: Any = None


def clear_callbacks() -> None:
    """Forget every registered callback (A1111 does this before it loads the scripts again)."""
    runtime().callbacks.clear()


def add_callback(kind: str, callback: Callable[..., Any], name: str | None = None) -> None:
    origin = runtime().loading_file or getattr(callback, "__module__", "") or "unknown"
    runtime().callbacks.setdefault(kind, []).append((callback, name or origin))


def registered(kind: str) -> list[tuple[Callable[..., Any], str]]:
    return list(runtime().callbacks.get(kind, []))


def run_callbacks(kind: str, *arguments: Any) -> list[Any]:
    """Call every callback of ``kind``; one that raises is logged with its origin and the others still run."""
    results = []
    for callback, origin in registered(kind):
        try:
            results.append(callback(*arguments))
        except Exception:
            logger.exception("extension callback failed kind=%s origin=%s", kind, origin)
    return results


def _make_register(kind: str) -> Callable[..., None]:
    def register(callback: Callable[..., Any], *, name: str | None = None) -> None:
        add_callback(kind, callback, name)

    register.__name__ = f"on_{kind}"
    register.__doc__ = f"Register a callback for {kind} (A1111's on_{kind})."
    return register


on_app_started = _make_register("app_started")
on_model_loaded = _make_register("model_loaded")
on_ui_tabs = _make_register("ui_tabs")
on_ui_train_tabs = _make_register("ui_train_tabs")
on_ui_settings = _make_register("ui_settings")
on_before_image_saved = _make_register("before_image_saved")
on_image_saved = _make_register("image_saved")
on_extra_noise = _make_register("extra_noise")
on_cfg_denoiser = _make_register("cfg_denoiser")
on_cfg_denoised = _make_register("cfg_denoised")
on_cfg_after_cfg = _make_register("cfg_after_cfg")
on_before_component = _make_register("before_component")
on_after_component = _make_register("after_component")
on_image_grid = _make_register("image_grid")
on_infotext_pasted = _make_register("infotext_pasted")
on_script_unloaded = _make_register("script_unloaded")
on_before_ui = _make_register("before_ui")
on_before_reload = _make_register("on_reload")
on_list_optimizers = _make_register("list_optimizers")
on_list_unets = _make_register("list_unets")
on_before_token_counter = _make_register("before_token_counter")


def remove_current_script_callbacks() -> None:
    origin = runtime().loading_file
    for kind, entries in runtime().callbacks.items():
        runtime().callbacks[kind] = [(callback, name) for callback, name in entries if name != origin]


def remove_callbacks_for_function(callback_func: Callable[..., Any]) -> None:
    for kind, entries in runtime().callbacks.items():
        runtime().callbacks[kind] = [(callback, name) for callback, name in entries if callback != callback_func]


def app_started_callback(demo: Any, app: Any) -> None:
    run_callbacks("app_started", demo, app)


def ui_settings_callback() -> None:
    run_callbacks("ui_settings")


def ui_tabs_callback() -> list[Any]:
    tabs = []
    for result in run_callbacks("ui_tabs"):
        tabs += list(result or [])
    return tabs


def before_ui_callback() -> None:
    run_callbacks("before_ui")


def infotext_pasted_callback(infotext: str, params: dict[str, Any]) -> None:
    run_callbacks("infotext_pasted", infotext, params)


def script_unloaded_callback() -> None:
    run_callbacks("script_unloaded")
