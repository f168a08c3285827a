"""The model call as A1111 makes it: CompVis-style denoisers over a UNet callable and A1111's CFG.

Written by hand after k-diffusion's ``external.py`` and A1111's ``sd_samplers_cfg_denoiser.py`` (facts in
``../shared/A1111-SAMPLING.md`` section 4); nothing here knows diffusers. The UNet is any callable
``unet(x, t, conditioning) -> output`` where ``conditioning`` is a :class:`ModelConditioning` (the text rows
and, for inpainting models, the image-conditioning rows): the backend adapts its own UNet to it (SDXL
added conditions travel in a mapping of text tensors; ControlNet residuals can be closed over).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from modules.backends.original.schedules import DiscreteSigmas, LCMSigmas

# Text conditioning rows: one tensor (rows, tokens, dim), or a mapping of tensors whose first dimension is
# the row (e.g. SDXL's {"crossattn": (rows, tokens, dim), "vector": (rows, dim)}).
Conditioning = torch.Tensor | Mapping[str, torch.Tensor]


@dataclass
class ModelConditioning:
    """What one UNet call is conditioned on: text rows and optional image-conditioning rows (c_concat)."""

    text: Conditioning
    image: torch.Tensor | None = None
    uncond: torch.Tensor | None = None  # per row: True for a negative prompt's row (what cfg injection reads)


class GuidanceEvents(Protocol):
    """Listeners around each model call of guidance (A1111's on_cfg_* callbacks; the backend gives
    ``modules.backends.hooks.DenoiserEvents``). The parameter object ``before`` returns may carry changed values."""

    def denoiser_params(self, **fields: Any) -> Any: ...

    def before(self, params: Any) -> Any: ...

    def denoised(self, x: torch.Tensor, inner_model: Any) -> torch.Tensor: ...

    def after_cfg(self, x: torch.Tensor) -> torch.Tensor: ...


UNet = Callable[[torch.Tensor, torch.Tensor, ModelConditioning], torch.Tensor]
InnerModel = Callable[[torch.Tensor, torch.Tensor, ModelConditioning], torch.Tensor]


class Prediction(enum.StrEnum):
    """What the UNet predicts (ldm's ``parameterization``)."""

    EPSILON = "eps"
    V = "v"

    @classmethod
    def from_diffusers(cls, prediction_type: str) -> Prediction:
        """From a diffusers scheduler config's ``prediction_type`` ("epsilon" or "v_prediction")."""
        names = {"epsilon": cls.EPSILON, "v_prediction": cls.V}
        if prediction_type not in names:
            raise ValueError(f"the original backend runs eps and v models, not {prediction_type!r}")
        return names[prediction_type]


def append_dims(value: torch.Tensor, ndim: int) -> torch.Tensor:
    """``value`` with trailing singleton dimensions up to ``ndim``."""
    return value[(...,) + (None,) * (ndim - value.ndim)]


class CompVisDenoiser:
    """k-diffusion's CompVis wrapper: ``denoised = f(unet(x * c_in, sigma_to_t(sigma)))`` for eps or v models.

    eps: ``x + eps * (-sigma)``; v: ``v * c_out + x * c_skip`` with ``c_out = -sigma / sqrt(sigma^2 + 1)``
    and ``c_skip = 1 / (sigma^2 + 1)``; both scale the input by ``c_in = 1 / sqrt(sigma^2 + 1)``.
    """

    def __init__(self, unet: UNet, model_sigmas: DiscreteSigmas, prediction: Prediction = Prediction.EPSILON) -> None:
        self.unet = unet
        self.model_sigmas = model_sigmas
        self.prediction = Prediction(prediction)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: ModelConditioning) -> torch.Tensor:
        c_in = append_dims(1 / (sigma**2 + 1.0) ** 0.5, x.ndim)
        output = self.unet(x * c_in, self.model_sigmas.sigma_to_t(sigma), cond)
        if self.prediction == Prediction.V:
            c_skip = append_dims(1.0 / (sigma**2 + 1.0), x.ndim)
            c_out = append_dims(-sigma * 1.0 / (sigma**2 + 1.0) ** 0.5, x.ndim)
            return output * c_out + x * c_skip
        return x + output * append_dims(-sigma, x.ndim)


class LCMDenoiser:
    """A1111's LCM wrapper: an eps denoiser on the 50-step LCM table, then LCM's boundary scalings."""

    def __init__(self, unet: UNet, model_sigmas: LCMSigmas) -> None:
        self.unet = unet
        self.model_sigmas = model_sigmas

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: ModelConditioning) -> torch.Tensor:
        c_in = append_dims(1 / (sigma**2 + 1.0) ** 0.5, x.ndim)
        timestep = self.model_sigmas.sigma_to_t(sigma)
        eps = self.unet(x * c_in, timestep, cond)
        denoised = x + eps * append_dims(-sigma, x.ndim)
        sigma_data = 0.5
        scaled_timestep = append_dims(timestep, x.ndim) * 10.0
        c_skip = sigma_data**2 / (scaled_timestep**2 + sigma_data**2)
        c_out = scaled_timestep / (scaled_timestep**2 + sigma_data**2) ** 0.5
        return c_out * denoised + c_skip * x


class TimestepsDenoiser:
    """The model call of A1111's DDIM / PLMS / UniPC: the UNet at timestep ``t`` as eps (v converted)."""

    def __init__(self, unet: UNet, alphas_cumprod: torch.Tensor, prediction: Prediction = Prediction.EPSILON) -> None:
        self.unet = unet
        self.alphas_cumprod = alphas_cumprod
        self.prediction = Prediction(prediction)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: ModelConditioning) -> torch.Tensor:
        output = self.unet(x, t, cond)
        if self.prediction == Prediction.V:
            index = t.to(torch.int)
            sqrt_alpha = torch.sqrt(self.alphas_cumprod)[index, None, None, None]
            sqrt_one_minus_alpha = torch.sqrt(1 - self.alphas_cumprod)[index, None, None, None]
            return sqrt_alpha * output + sqrt_one_minus_alpha * x
        return output


# ---------------------------------------------------------------------------------------------------
# Classifier-free guidance


@dataclass
class MultiCond:
    """The prompt side of one step: all cond rows plus, per image, its (row, weight) pairs (AND prompts).

    A plain batch of B prompts is ``MultiCond(rows, [[(0, 1.0)], [(1, 1.0)], ...])``.
    """

    rows: Conditioning
    weights: list[list[tuple[int, float]]]

    @classmethod
    def single(cls, rows: Conditioning) -> MultiCond:
        """One row per image, weight 1."""
        return cls(rows, [[(index, 1.0)] for index in range(row_count(rows))])


CondSource = MultiCond | Callable[[int], MultiCond]
UncondSource = Conditioning | Callable[[int], Conditioning]


def row_count(cond: Conditioning) -> int:
    if isinstance(cond, torch.Tensor):
        return cond.shape[0]
    return next(iter(cond.values())).shape[0]


def token_length(cond: Conditioning) -> int:
    """The token axis length: ``shape[1]`` of the tensor, or of the first 3-D tensor of a mapping."""
    if isinstance(cond, torch.Tensor):
        return cond.shape[1]
    return next(value.shape[1] for value in cond.values() if value.ndim == 3)


def cat_conds(conds: Sequence[Conditioning]) -> Conditioning:
    if isinstance(conds[0], torch.Tensor):
        return torch.cat(list(conds))
    return {key: torch.cat([cond[key] for cond in conds]) for key in conds[0]}


def slice_cond(cond: Conditioning, start: int, stop: int) -> Conditioning:
    if isinstance(cond, torch.Tensor):
        return cond[start:stop]
    return {key: value[start:stop] for key, value in cond.items()}


def slice_rows(cond: Conditioning, rows: Sequence[int]) -> Conditioning:
    """The given rows of a conditioning, in that order."""
    if isinstance(cond, torch.Tensor):
        return cond[list(rows)]
    return {key: value[list(rows)] for key, value in cond.items()}


def _repeat_rows(values: torch.Tensor, repeats: Sequence[int], tail: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.stack([values[i] for _ in range(n)]) for i, n in enumerate(repeats)] + [tail])


@dataclass
class InpaintBlend:
    """A1111's latent mask blending: ``latent * nmask + init_latent * mask`` (mask 1 = keep the original)."""

    init_latent: torch.Tensor
    mask: torch.Tensor
    nmask: torch.Tensor

    def __call__(self, latent: torch.Tensor) -> torch.Tensor:
        return latent * self.nmask + self.init_latent * self.mask


@dataclass
class CFGDenoiser:
    """A1111's classifier-free guidance over an inner model (a denoiser returning x0, or eps for DDIM).

    Calls the inner model once on [cond rows (per AND part), then uncond rows] when the token lengths
    match (``batch_cond_uncond``), otherwise cond and uncond separately, and combines
    ``uncond + sum(weight * cond_scale * (cond_row - uncond))`` per image. ``s_min_uncond`` (NGMS) skips
    the uncond rows on every other step below that sigma (every step with ``s_min_uncond_all``);
    ``skip_early_cond`` skips them for that fraction of the first steps (needs ``total_steps``).
    ``cond`` and ``uncond`` may be callables of the step index (prompt editing).

    ``image_cfg_scale`` (instruct-pix2pix, A1111's edit model) other than None and 1.0: three rows per image,
    [cond with the image, uncond with the image, uncond with a zero image], combined as
    ``uncond0 + cond_scale * (cond - uncond_image) + image_cfg_scale * (uncond_image - uncond0)``. At None or 1.0 that
    formula is plain CFG with the image on both rows, which is what runs (AND prompts allowed), as in A1111.
    """

    inner_model: InnerModel
    cond: CondSource
    uncond: UncondSource
    cond_scale: float
    image_cond: torch.Tensor | None = None
    s_min_uncond: float = 0.0
    s_min_uncond_all: bool = False
    skip_early_cond: float = 0.0
    total_steps: int | None = None
    batch_cond_uncond: bool = True
    blend: InpaintBlend | None = None
    mask_before_denoising: bool = False
    cond_scale_multiplier: float = 1.0
    need_last_noise_uncond: bool = False
    image_cfg_scale: float | None = None
    step: int = 0
    last_noise_uncond: torch.Tensor | None = None
    infotext: dict[str, Any] = field(default_factory=dict)
    events: GuidanceEvents | None = None  # A1111's on_cfg_denoiser / on_cfg_denoised / on_cfg_after_cfg listeners

    def _skips_uncond(self, sigma: torch.Tensor) -> bool:
        if self.skip_early_cond != 0.0 and self.total_steps and self.step / self.total_steps <= self.skip_early_cond:
            self.infotext["Skip Early CFG"] = self.skip_early_cond
            return True
        if (self.step % 2 or self.s_min_uncond_all) and self.s_min_uncond > 0 and sigma[0] < self.s_min_uncond:
            self.infotext["NGMS"] = self.s_min_uncond
            if self.s_min_uncond_all:
                self.infotext["NGMS all steps"] = True
            return True
        return False

    @property
    def is_edit_model(self) -> bool:
        """A1111's ``is_edit_model``: image guidance of its own (three rows per image)."""
        return self.image_cond is not None and self.image_cfg_scale is not None and self.image_cfg_scale != 1.0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        multicond = self.cond(self.step) if callable(self.cond) else self.cond
        uncond = self.uncond(self.step) if callable(self.uncond) else self.uncond
        if self.blend is not None and self.mask_before_denoising:
            x = self.blend(x)
        if self.is_edit_model:
            denoised = self._edit_model_call(x, sigma, multicond, uncond)
        else:
            denoised = self._guided_call(x, sigma, multicond, uncond)
        if self.blend is not None and not self.mask_before_denoising:
            denoised = self.blend(denoised)
        if self.events is not None:
            denoised = self.events.after_cfg(denoised)
        self.step += 1
        return denoised

    def _guided_call(
        self, x: torch.Tensor, sigma: torch.Tensor, multicond: MultiCond, uncond: Conditioning
    ) -> torch.Tensor:
        batch_size = len(multicond.weights)
        repeats = [len(parts) for parts in multicond.weights]
        image_cond = self.image_cond
        x_in = _repeat_rows(x, repeats, x)
        sigma_in = _repeat_rows(sigma, repeats, sigma)
        image_in = None if image_cond is None else _repeat_rows(image_cond, repeats, image_cond)
        rows = multicond.rows
        if self.events is not None:  # A1111 calls on_cfg_denoiser here, before the uncond rows may be skipped
            params = self.events.before(
                self.events.denoiser_params(
                    x=x_in, image_cond=image_in, sigma=sigma_in, text_cond=rows, text_uncond=uncond, denoiser=self
                )
            )
            x_in, image_in, sigma_in = params.x, params.image_cond, params.sigma
            rows, uncond = params.text_cond, params.text_uncond
        skip_uncond = self._skips_uncond(sigma)
        if skip_uncond:
            x_in, sigma_in = x_in[:-batch_size], sigma_in[:-batch_size]
            image_in = None if image_in is None else image_in[:-batch_size]
        x_out = self._run_inner(x_in, sigma_in, image_in, rows, uncond, batch_size, skip_uncond)
        if skip_uncond:
            first_rows = [parts[0][0] for parts in multicond.weights]
            x_out = torch.cat([x_out, torch.cat([x_out[i : i + 1] for i in first_rows])])
        if self.events is not None:
            x_out = self.events.denoised(x_out, self.inner_model)
        if self.need_last_noise_uncond:
            self.last_noise_uncond = torch.clone(x_out[-batch_size:])
        scale = 1.0 if skip_uncond else self.cond_scale * self.cond_scale_multiplier
        return combine_denoised(x_out, multicond.weights, batch_size, scale)

    def _edit_model_call(
        self, x: torch.Tensor, sigma: torch.Tensor, multicond: MultiCond, uncond: Conditioning
    ) -> torch.Tensor:
        """A1111's edit-model batch [cond, uncond, uncond] x [image, image, zeros] and its combination. NGMS and
        skip-early-CFG do not apply (A1111 skips them for edit models or breaks on them)."""
        if any(len(parts) != 1 for parts in multicond.weights):
            raise ValueError("AND is not supported for InstructPix2Pix checkpoint (unless using Image CFG scale = 1.0)")
        assert self.image_cond is not None and self.image_cfg_scale is not None
        rows = [parts[0][0] for parts in multicond.weights]
        cond_rows = slice_rows(multicond.rows, rows)
        x_in = torch.cat([x, x, x])
        sigma_in = torch.cat([sigma, sigma, sigma])
        image_in = torch.cat([self.image_cond, self.image_cond, torch.zeros_like(self.image_cond)])
        parts = x.shape[0]
        marks = uncond_marks(3 * parts, parts)
        if token_length(cond_rows) == token_length(uncond):
            text = cat_conds([cond_rows, uncond, uncond])
            if self.batch_cond_uncond:
                x_out = self.inner_model(x_in, sigma_in, ModelConditioning(text, image_in, marks))
            else:
                x_out = torch.cat(
                    [
                        self.inner_model(
                            x_in[start : start + parts],
                            sigma_in[start : start + parts],
                            ModelConditioning(
                                slice_cond(text, start, start + parts),
                                image_in[start : start + parts],
                                marks[start : start + parts],
                            ),
                        )
                        for start in range(0, x_in.shape[0], parts)
                    ]
                )
        else:  # different token lengths: one call per row kind (A1111's code for this case fails)
            texts = (cond_rows, uncond, uncond)
            x_out = torch.cat(
                [
                    self.inner_model(
                        x,
                        sigma,
                        ModelConditioning(
                            text,
                            image_in[index * parts : (index + 1) * parts],
                            marks[index * parts : (index + 1) * parts],
                        ),
                    )
                    for index, text in enumerate(texts)
                ]
            )
        if self.need_last_noise_uncond:
            self.last_noise_uncond = torch.clone(x_out[-x.shape[0] :])
        out_cond, out_image_cond, out_uncond = x_out.chunk(3)
        cond_scale = self.cond_scale * self.cond_scale_multiplier
        image_scale = self.image_cfg_scale
        return out_uncond + cond_scale * (out_cond - out_image_cond) + image_scale * (out_image_cond - out_uncond)

    def _run_inner(
        self,
        x_in: torch.Tensor,
        sigma_in: torch.Tensor,
        image_in: torch.Tensor | None,
        rows: Conditioning,
        uncond: Conditioning,
        batch_size: int,
        skip_uncond: bool,
    ) -> torch.Tensor:
        marks = uncond_marks(x_in.shape[0], row_count(rows))  # the cond rows (per AND part) come first

        def conditioning(text: Conditioning, start: int, stop: int) -> ModelConditioning:
            return ModelConditioning(text, None if image_in is None else image_in[start:stop], marks[start:stop])

        if token_length(rows) == token_length(uncond) or skip_uncond:
            cond_in = rows if skip_uncond else cat_conds([rows, uncond])
            if self.batch_cond_uncond:
                return self.inner_model(x_in, sigma_in, conditioning(cond_in, 0, x_in.shape[0]))
            x_out = torch.zeros_like(x_in)
            for start in range(0, x_out.shape[0], batch_size):
                stop = start + batch_size
                x_out[start:stop] = self.inner_model(
                    x_in[start:stop], sigma_in[start:stop], conditioning(slice_cond(cond_in, start, stop), start, stop)
                )
            return x_out
        # Different token lengths (e.g. a 150-token prompt and an empty negative): separate UNet calls.
        x_out = torch.zeros_like(x_in)
        chunk = batch_size * 2 if self.batch_cond_uncond else batch_size
        cond_rows = row_count(rows)
        for start in range(0, cond_rows, chunk):
            stop = min(start + chunk, cond_rows)
            x_out[start:stop] = self.inner_model(
                x_in[start:stop], sigma_in[start:stop], conditioning(slice_cond(rows, start, stop), start, stop)
            )
        uncond_rows = row_count(uncond)
        total = x_in.shape[0]
        x_out[-uncond_rows:] = self.inner_model(
            x_in[-uncond_rows:], sigma_in[-uncond_rows:], conditioning(uncond, total - uncond_rows, total)
        )
        return x_out


def uncond_marks(total_rows: int, cond_rows: int) -> torch.Tensor:
    """Per row of a guidance batch: True for the negative prompt's rows (after the ``cond_rows`` prompt rows)."""
    return torch.arange(total_rows) >= cond_rows


def combine_denoised(
    x_out: torch.Tensor, weights: list[list[tuple[int, float]]], uncond_rows: int, cond_scale: float
) -> torch.Tensor:
    """``uncond + sum(weight * cond_scale * (x_out[row] - uncond))`` per image; uncond rows come last."""
    denoised_uncond = x_out[-uncond_rows:]
    denoised = torch.clone(denoised_uncond)
    for image, parts in enumerate(weights):
        for row, weight in parts:
            denoised[image] += (x_out[row] - denoised_uncond[image]) * (weight * cond_scale)
    return denoised
