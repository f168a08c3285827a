"""The base of Easel's UNet wrappers (DeepCache, AND prompts, denoiser callbacks, ControlNet residuals): a module
that holds the UNet and answers for it what diffusers' pipelines read from their ``unet`` (config, dtype, device,
add_embedding), so a wrapper can stand in a request's pipeline view."""

from __future__ import annotations

from typing import Any

import torch


class WrappedUNet(torch.nn.Module):
    """Holds ``unet``; subclasses define ``forward``."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    @property
    def config(self) -> Any:
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def add_embedding(self) -> torch.nn.Module:
        return self.unet.add_embedding
