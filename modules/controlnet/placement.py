"""Where a ControlNet or T2I-Adapter lives while it runs: the same offload policy as the UNet it feeds.

The UNet's placement is read from the UNet itself (the accelerate hooks that ``MemoryPolicy.apply`` puts there
through diffusers' ``enable_model_cpu_offload`` / ``enable_sequential_cpu_offload``), so the control models follow
whatever the model manager did, with no flag of their own:

- no offload: the model goes to the execution device and stays there (RESIDENT);
- ``--medvram`` (diffusers' model offload): on the device for the pass, back to the CPU after it, as diffusers'
  ControlNet pipelines offload their controlnet when the pipeline call ends (PASS);
- ``--lowvram`` (sequential offload) or a unit's "Low VRAM": on the device for each of its calls only, back to the
  CPU before the UNet runs, as the extension's low VRAM mode does (CALL).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

import torch

from modules.devices import execution_device

logger = logging.getLogger(__name__)

CPU = torch.device("cpu")


class Residency(Enum):
    RESIDENT = "resident"
    PASS = "pass"
    CALL = "call"


@dataclass(frozen=True)
class Placement:
    """The execution device and dtype of the UNet, and how long a control model stays on that device."""

    device: torch.device
    dtype: torch.dtype
    residency: Residency = Residency.RESIDENT

    @property
    def resting_device(self) -> torch.device:
        """Where the model waits between its calls."""
        return CPU if self.residency is Residency.CALL else self.device

    def for_unit(self, low_vram: bool) -> Placement:
        """A unit's "Low VRAM" option moves its model for each call, whatever the policy."""
        return Placement(self.device, self.dtype, Residency.CALL) if low_vram else self


def placement_of(unet: torch.nn.Module) -> Placement:
    """The UNet's placement: accelerate's hooks name the execution device (the UNet's own ``device`` is the CPU
    or ``meta`` while it is offloaded); a hook that offloads weights means sequential offload."""
    hooks = [module._hf_hook for module in unet.modules() if hasattr(module, "_hf_hook")]
    if not hooks:
        return Placement(unet.device, unet.dtype, Residency.RESIDENT)
    sequential = any(getattr(hook, "offload", False) for hook in hooks)
    residency = Residency.CALL if sequential else Residency.PASS
    return Placement(execution_device(unet), unet.dtype, residency)


def place(model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None = None) -> None:
    """Move (and cast) ``model`` when it is not there yet."""
    wanted_dtype = dtype or model.dtype
    if model.device != device or model.dtype != wanted_dtype:
        model.to(device, wanted_dtype)


@contextlib.contextmanager
def on_device_for_call(model: torch.nn.Module, placement: Placement, device: torch.device) -> Iterator[None]:
    """A CALL-resident model on ``device`` for the block and back on the CPU after it; others are left alone."""
    if placement.residency is not Residency.CALL:
        yield
        return
    model.to(device)
    try:
        yield
    finally:
        model.to(CPU)


def offload_after_pass(model: torch.nn.Module, placement: Placement) -> None:
    """PASS- and CALL-resident models go back to the CPU when the pass ends."""
    if placement.residency is not Residency.RESIDENT and model.device != CPU:
        logger.debug("controlnet offloaded residency=%s", placement.residency.value)
        model.to(CPU)
