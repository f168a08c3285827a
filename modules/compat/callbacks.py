"""A1111's callbacks at the places A1111 calls them: each is one listener on the Easel object that owns that stage (the
model manager, the saving functions, the grid layout, the guidance of both backends, the extra noise, PNG Info, the
restart, the UI's token counter), registered once when extensions are attached. A listener runs the extensions'
callbacks of its kind (each isolated: one that raises is logged and the others run) with A1111's parameter objects."""

from __future__ import annotations

from typing import Any

from modules.application import Application, TokenCountInput
from modules.backends.hooks import AfterCFGParams, DenoisedParams, DenoiserParams, ExtraNoiseParams
from modules.compat.a1111 import script_callbacks, shared
from modules.compat.a1111.processing import processing_for
from modules.compat.adapter import view_of
from modules.models.manager import LoadedModel
from modules.processing.requests import GenerationRequest
from modules.processing.run import GenerationRun
from modules.processing.saving import GridLayout, ImageSaveEvent


def model_loaded(model: LoadedModel) -> None:
    """``on_model_loaded(sd_model)`` after each checkpoint becomes the loaded one."""
    script_callbacks.run_callbacks("model_loaded", shared.model_view(model))


def image_params(event: ImageSaveEvent) -> script_callbacks.ImageSaveParams:
    subject = event.subject
    if isinstance(subject, GenerationRun):
        p = view_of(subject)
    elif isinstance(subject, GenerationRequest):  # a script's grid or image: a p of the request it was made for
        p = processing_for(subject)
    else:
        p = subject
    return script_callbacks.ImageSaveParams(event.image, p, event.filename, event.pnginfo)


def before_image_saved(event: ImageSaveEvent) -> None:
    """``on_before_image_saved(params)``: the callbacks may replace the image, the file name and the pnginfo."""
    params = image_params(event)
    script_callbacks.run_callbacks("before_image_saved", params)
    event.image, event.filename, event.pnginfo = params.image, str(params.filename), dict(params.pnginfo)


def image_saved(event: ImageSaveEvent) -> None:
    script_callbacks.run_callbacks("image_saved", image_params(event))


def cfg_denoiser(params: DenoiserParams) -> None:
    script_callbacks.run_callbacks("cfg_denoiser", params)


def cfg_denoised(params: DenoisedParams) -> None:
    script_callbacks.run_callbacks("cfg_denoised", params)


def cfg_after_cfg(params: AfterCFGParams) -> None:
    script_callbacks.run_callbacks("cfg_after_cfg", params)


def image_grid(layout: GridLayout) -> None:
    """``on_image_grid(params)`` before a grid is laid out: the callbacks may change ``imgs``, ``cols`` and ``rows``."""
    script_callbacks.run_callbacks("image_grid", layout)


def extra_noise(params: ExtraNoiseParams) -> None:
    """``on_extra_noise(params)`` before img2img's extra noise is added: the callbacks may replace ``noise``."""
    script_callbacks.run_callbacks("extra_noise", params)


def before_token_counter(query: TokenCountInput) -> None:
    """``on_before_token_counter(params)`` before the UI's token counter counts: the callbacks may change the
    prompt, steps, styles and is_positive, and the counter counts what they leave."""
    script_callbacks.run_callbacks("before_token_counter", query)


def guidance_wanted() -> bool:
    """Whether a guidance callback is registered now (extensions may add them in a hook and remove them later)."""
    return any(script_callbacks.registered(kind) for kind in ("cfg_denoiser", "cfg_denoised", "cfg_after_cfg"))


def infotext_pasted(infotext: str, parameters: dict[str, Any]) -> None:
    script_callbacks.infotext_pasted_callback(infotext, parameters)


def connect(application: Application) -> None:
    """Register the listeners (once per application)."""
    application.models.manager.loaded_listeners.append(model_loaded)
    listeners = application.service.context.listeners
    listeners.saving.before.append(before_image_saved)
    listeners.saving.after.append(image_saved)
    listeners.grid.append(image_grid)
    listeners.extra_noise.append(extra_noise)
    denoiser = listeners.denoiser
    denoiser.before.append(cfg_denoiser)
    denoiser.denoised.append(cfg_denoised)
    denoiser.after_cfg.append(cfg_after_cfg)
    denoiser.wanted = guidance_wanted
    application.infotext_pasted.append(infotext_pasted)
    application.before_restart.append(script_callbacks.script_unloaded_callback)
    application.before_token_counter.append(before_token_counter)
