"""Listeners around each model call of classifier-free guidance (A1111's ``on_cfg_denoiser``, ``on_cfg_denoised``,
``on_cfg_after_cfg``), for both backends; and around img2img's extra noise (A1111's ``on_extra_noise``).

The parameter objects have A1111's field names (``CFGDenoiserParams``, ``CFGDenoisedParams``,
``AfterCFGCallbackParams``); a listener may replace their tensors and the backend uses what it finds there. The rows
are in A1111's order: every image's cond rows, then the uncond rows. ``sampling_step`` is A1111's
``state.sampling_step``: the index of the last finished step (0 before the first one finishes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

logger = logging.getLogger(__name__)


@dataclass
class DenoiserParams:
    """Before the model call (A1111's CFGDenoiserParams)."""

    x: torch.Tensor
    image_cond: torch.Tensor | None
    sigma: torch.Tensor
    sampling_step: int
    total_sampling_steps: int
    text_cond: Any
    text_uncond: Any
    denoiser: Any = None


@dataclass
class DenoisedParams:
    """After the model call, before guidance combines the rows (A1111's CFGDenoisedParams)."""

    x: torch.Tensor
    sampling_step: int
    total_sampling_steps: int
    inner_model: Any = None


@dataclass
class AfterCFGParams:
    """After guidance (A1111's AfterCFGCallbackParams): ``x`` is the guided result, one row per image."""

    x: torch.Tensor
    sampling_step: int
    total_sampling_steps: int


@dataclass
class DenoiserHooks:
    """The listeners (registered once, by the A1111 adapter); empty lists cost nothing."""

    before: list[Callable[[DenoiserParams], None]] = field(default_factory=list)
    denoised: list[Callable[[DenoisedParams], None]] = field(default_factory=list)
    after_cfg: list[Callable[[AfterCFGParams], None]] = field(default_factory=list)
    # Whether anyone listens now (the adapter answers whether any callback is registered at this moment); None: yes.
    wanted: Callable[[], bool] | None = None

    def __bool__(self) -> bool:
        listening = bool(self.before or self.denoised or self.after_cfg)
        return listening and (self.wanted is None or self.wanted())


@dataclass
class DenoiserEvents:
    """One sampling call's view of the hooks, with its step counter (the backend's step callback advances it)."""

    hooks: DenoiserHooks
    total_steps: int
    sampling_step: int = 0

    def step_finished(self, index: int) -> None:
        self.sampling_step = index

    def before(self, params: DenoiserParams) -> DenoiserParams:
        for listener in self.hooks.before:
            listener(params)
        return params

    def denoised(self, x: torch.Tensor, inner_model: Any) -> torch.Tensor:
        params = DenoisedParams(x, self.sampling_step, self.total_steps, inner_model)
        for listener in self.hooks.denoised:
            listener(params)
        return params.x

    def after_cfg(self, x: torch.Tensor) -> torch.Tensor:
        params = AfterCFGParams(x, self.sampling_step, self.total_steps)
        for listener in self.hooks.after_cfg:
            listener(params)
        return params.x

    def denoiser_params(self, **fields: Any) -> DenoiserParams:
        return DenoiserParams(sampling_step=self.sampling_step, total_sampling_steps=self.total_steps, **fields)


@dataclass
class ExtraNoiseParams:
    """img2img's extra noise (A1111's ExtraNoiseParams): ``noise`` about to be added (times the "Extra noise"
    setting) to ``xi``, the noised init latents ``x``; a listener may replace ``noise``."""

    noise: torch.Tensor
    x: torch.Tensor
    xi: torch.Tensor


ExtraNoiseListener = Callable[[ExtraNoiseParams], None]


def extra_noise_hook(
    listeners: Sequence[ExtraNoiseListener],
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """The sampling code's extra noise hook: the listeners see (noise, x, xi) and the noise they leave is added;
    None when nobody listens."""
    if not listeners:
        return None

    def hook(noise: torch.Tensor, x: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        params = ExtraNoiseParams(noise, x, xi)
        for listener in listeners:
            listener(params)
        return params.noise

    return hook


def events_for(hooks: DenoiserHooks | None, total_steps: int) -> DenoiserEvents | None:
    """A sampling call's events, or None when nobody listens (the backends then skip every hook)."""
    return DenoiserEvents(hooks, total_steps) if hooks else None
