"""The loaded diffusers UNet as the original backend's samplers call it: ``unet(x, t, ModelConditioning)``.

Written by hand (A1111's ``sd_hijack_unet.apply_model`` and ldm's ``DiffusionWrapper`` are the facts): x and t are
cast to the UNet's dtype (an fp16 model sees t rounded to fp16, as in A1111), the UNet runs under CUDA autocast
when it is half precision, and the output comes back as float32. SDXL's added conditions (pooled text
embeddings and the size/crop ``time_ids``, per row: the SDXL refiner's aesthetic score differs between prompt and
negative rows) and an inpainting or instruct-pix2pix model's image conditioning (concatenated to x on the channel
axis like ldm's ``c_concat``) are passed on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from modules.backends.base import BackendError
from modules.backends.original.denoiser import ModelConditioning, Prediction
from modules.backends.original.schedules import ldm_alphas_cumprod
from modules.devices import execution_device
from modules.models.manager import LoadedModel

# Keys of the SDXL conditioning mapping (A1111's / sgm's names).
CROSSATTN = "crossattn"
VECTOR = "vector"
TIME_IDS = "time_ids"  # diffusers' name for sgm's size / crop / aesthetic-score conditions, one row per text row
ALPHAS_ATTACHMENT = "original_backend.alphas_cumprod"


@dataclass
class DiffusersUNet:
    """A callable over a ``UNet2DConditionModel``; ``time_ids`` (1, n) for SDXL rows that carry none of their own."""

    unet: torch.nn.Module
    time_ids: torch.Tensor | None = None

    def __post_init__(self) -> None:
        # diffusers' ModelMixin.device / .dtype walk every parameter: read them once per run, not per model call.
        self.dtype: torch.dtype = self.unet.dtype
        self.device: torch.device = execution_device(self.unet)  # not the CPU of an offloaded (--medvram) UNet
        # a wrapper that reads which rows are the negative prompt's (ControlNet's cfg injection) says so
        self.takes_row_marks: bool = bool(getattr(self.unet, "takes_row_marks", False))
        if self.time_ids is not None:
            self.time_ids = self.time_ids.to(self.device, self.dtype)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: ModelConditioning) -> torch.Tensor:
        dtype = self.dtype
        sample = x if cond.image is None else torch.cat([x, cond.image.to(x)], dim=1)
        text = cond.text
        added = None
        if isinstance(text, Mapping):
            hidden = text[CROSSATTN]
            if TIME_IDS in text:
                time_ids = text[TIME_IDS].to(self.device, dtype)
            elif self.time_ids is not None:
                time_ids = self.time_ids.expand(x.shape[0], -1)
            else:
                raise BackendError("SDXL conditioning given to a model without added conditions")
            added = {"text_embeds": text[VECTOR].to(self.device, dtype), "time_ids": time_ids}
        else:
            hidden = text
        marks = {"uncond_rows": cond.uncond} if cond.uncond is not None and self.takes_row_marks else {}
        with self._autocast():
            output = self.unet(
                sample.to(dtype),
                t.to(dtype),
                encoder_hidden_states=hidden.to(self.device, dtype),
                added_cond_kwargs=added,
                return_dict=False,
                **marks,
            )[0]
        return output.to(x.dtype)

    def _autocast(self) -> contextlib.AbstractContextManager:
        """A1111 samples under ``torch.autocast("cuda")`` for half-precision models."""
        if self.device.type == "cuda" and self.dtype in (torch.float16, torch.bfloat16):
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()


def sdxl_time_ids(width: int, height: int) -> torch.Tensor:
    """sgm's size conditioning as A1111 gives it: original size, crop (0, 0), target size, all the image's."""
    return torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)


def refiner_time_ids(width: int, height: int, aesthetic_score: float) -> torch.Tensor:
    """The SDXL refiner's conditions as A1111 gives them (``sd_models_xl.get_learned_conditioning``): original size,
    crop (0, 0) and the aesthetic score (setting ``sdxl_refiner_high_aesthetic_score`` 6.0 for the prompt,
    ``sdxl_refiner_low_aesthetic_score`` 2.5 for the negative prompt)."""
    return torch.tensor([[height, width, 0, 0, aesthetic_score]], dtype=torch.float32)


# A1111's defaults of sdxl_refiner_high_aesthetic_score / sdxl_refiner_low_aesthetic_score.
REFINER_POSITIVE_AESTHETIC_SCORE = 6.0
REFINER_NEGATIVE_AESTHETIC_SCORE = 2.5


def time_ids_of(model: LoadedModel, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(prompt rows', negative rows') added time ids of an SDXL model (None for SD 1.x / 2.x)."""
    if not is_sdxl(model):
        return None
    if model.is_refiner:
        return (
            refiner_time_ids(width, height, REFINER_POSITIVE_AESTHETIC_SCORE),
            refiner_time_ids(width, height, REFINER_NEGATIVE_AESTHETIC_SCORE),
        )
    both = sdxl_time_ids(width, height)
    return both, both


def is_sdxl(model: LoadedModel) -> bool:
    return getattr(model.pipeline, "text_encoder_2", None) is not None


def alphas_cumprod_of(model: LoadedModel) -> torch.Tensor:
    """ldm's alphas_cumprod for the model's noise schedule (float64 maths, float32 values) on the UNet's device.

    Computed from the checkpoint's scheduler config (``beta_start``, ``beta_end``, ``num_train_timesteps``, zero
    terminal SNR); kept with the model. ldm's "linear" schedule is diffusers' "scaled_linear"."""
    cached = model.attachments.get(ALPHAS_ATTACHMENT)
    if cached is not None:
        return cached
    config = model.scheduler_config
    schedule = config.get("beta_schedule", "scaled_linear")
    if schedule != "scaled_linear" or config.get("trained_betas") is not None:
        raise BackendError(f"the original backend runs ldm's noise schedule (scaled_linear), not {schedule!r}")
    alphas = ldm_alphas_cumprod(
        linear_start=float(config.get("beta_start", 0.00085)),
        linear_end=float(config.get("beta_end", 0.012)),
        timesteps=int(config.get("num_train_timesteps", 1000)),
        zero_terminal_snr=bool(config.get("rescale_betas_zero_snr", False)),
    ).to(execution_device(model.pipeline.unet))
    return model.attachments.setdefault(ALPHAS_ATTACHMENT, alphas)


def prediction_of(model: LoadedModel) -> Prediction:
    try:
        return Prediction.from_diffusers(model.scheduler_config.get("prediction_type", "epsilon"))
    except ValueError as error:
        raise BackendError(str(error)) from error
