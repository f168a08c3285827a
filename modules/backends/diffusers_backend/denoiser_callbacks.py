"""A1111's ``on_cfg_denoiser`` / ``on_cfg_denoised`` / ``on_cfg_after_cfg`` on diffusers pipelines, through a UNet
wrapper given to the request's pipeline view (composition, no patch; the pipeline's guidance step is unchanged).

What a listener sees here, and how it differs from the original backend (A1111's k-diffusion denoiser):
- ``x``: the UNet's input rows in A1111's order (cond rows, then uncond rows; diffusers keeps uncond first), i.e.
  the latents after the scheduler's ``scale_model_input``; ``sigma``: the scheduler's sigma of the step, one per
  row (the timestep where the scheduler has no sigmas). Changes to ``x``, ``text_cond`` and ``text_uncond`` are
  used; the sigma belongs to the scheduler, so a changed ``sigma`` is not. ``text_cond`` is the
  prompt embeddings (SDXL's pooled ones stay in the pipeline's added conditions); with AND prompts the composable
  wrapper encodes each part itself, so changed text there is not used. ``image_cond`` is None (an inpainting
  model's extra channels are part of ``x``).
- ``on_cfg_denoised``: the UNet's output rows (the noise or v prediction, not A1111's denoised x0).
- ``on_cfg_after_cfg``: the guided prediction ``uncond + cfg * (cond - uncond)``; a changed ``x`` is handed back to
  the pipeline so that its own guidance step yields that value (not called for instruct-pix2pix's three-way
  guidance).
Written by hand: diffusers offers no hook inside its guidance step.
"""

from __future__ import annotations

from typing import Any

import torch

from modules.backends.hooks import DenoiserEvents
from modules.compute.unet_wrapper import WrappedUNet


class DenoiserCallbackUNet(WrappedUNet):
    """Wraps the request's UNet (the model's own, DeepCache's or the AND wrapper); ``batch`` images per call."""

    def __init__(
        self, unet: torch.nn.Module, events: DenoiserEvents, batch: int, cfg_scale: float, scheduler: Any
    ) -> None:
        super().__init__(unet)
        self.events = events
        self.batch = batch
        self.cfg_scale = cfg_scale
        self.scheduler = scheduler

    def sigma_rows(self, timestep: Any, rows: int, like: torch.Tensor) -> torch.Tensor:
        sigmas = getattr(self.scheduler, "sigmas", None)
        index = getattr(self.scheduler, "step_index", None)
        value = sigmas[index] if sigmas is not None and index is not None and index < len(sigmas) else timestep
        return torch.as_tensor(value, device=like.device, dtype=torch.float32).reshape(-1)[:1].expand(rows).clone()

    def forward(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, **kwargs: Any):
        guided = sample.shape[0] == 2 * self.batch  # [uncond, cond] rows: the pipeline applies guidance
        events, batch = self.events, self.batch
        if guided:
            x, text = a1111_order(sample, batch), encoder_hidden_states[batch:]
            uncond: Any = encoder_hidden_states[:batch]
        else:
            x, text, uncond = sample, encoder_hidden_states, None
        params = events.before(
            events.denoiser_params(
                x=x,
                image_cond=None,
                sigma=self.sigma_rows(timestep, x.shape[0], x),
                text_cond=text,
                text_uncond=uncond,
                denoiser=self,
            )
        )
        if guided:
            sample = diffusers_order(params.x, batch)
            encoder_hidden_states = torch.cat([params.text_uncond, params.text_cond])
        else:
            sample, encoder_hidden_states = params.x, params.text_cond
        arguments = {**kwargs, "return_dict": False}
        output = self.unet(sample, timestep, encoder_hidden_states, **arguments)[0]
        output = self.after_model(output, guided)
        return (output,) if not kwargs.get("return_dict", True) else _Output(output)

    def after_model(self, output: torch.Tensor, guided: bool) -> torch.Tensor:
        """``on_cfg_denoised`` on the rows, then ``on_cfg_after_cfg`` on the guided prediction."""
        events, batch = self.events, self.batch
        if not guided:
            output = events.denoised(output, self.unet)
            # one row per image: no guidance (CFG scale 1); instruct-pix2pix's three-way rows are guided by the
            # pipeline in its own way, so after_cfg is not called for them
            return events.after_cfg(output) if output.shape[0] == batch else output
        rows = diffusers_order(events.denoised(a1111_order(output, batch), self.unet), batch)
        uncond, cond = rows[:batch], rows[batch:]
        combined = uncond + self.cfg_scale * (cond - uncond)
        wanted = events.after_cfg(combined)
        if wanted is not combined:  # the pipeline computes uncond + cfg * (cond' - uncond) = wanted
            cond = uncond + (wanted - uncond) / self.cfg_scale
        return torch.cat([uncond, cond])


def a1111_order(rows: torch.Tensor, batch: int) -> torch.Tensor:
    """diffusers' [uncond, cond] rows as A1111's [cond, uncond]."""
    return torch.cat([rows[batch:], rows[:batch]])


def diffusers_order(rows: torch.Tensor, batch: int) -> torch.Tensor:
    """A1111's [cond, uncond] rows as diffusers' [uncond, cond]."""
    return torch.cat([rows[-batch:], rows[:-batch]])


class _Output:
    """The ``.sample`` shape of UNet2DConditionOutput, for pipelines that read it by attribute."""

    def __init__(self, sample: torch.Tensor) -> None:
        self.sample = sample

    def __getitem__(self, index: int) -> torch.Tensor:
        return (self.sample,)[index]
