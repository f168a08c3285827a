"""ControlNet residuals added to a UNet, for both backends, through a UNet wrapper (composition, no patch).

The wrapper runs each active unit's ControlNetModel on the UNet's own input (the latents, the timestep, the text
conditioning and SDXL's added conditions) and calls the UNet with the summed ``down_block_additional_residuals``
and ``mid_block_additional_residual``: the same values diffusers' ``StableDiffusionControlNetPipeline`` computes,
and the same injection point as the extension's UNet hook. Written by hand: diffusers' ControlNet pipelines are one
class per task and cannot be combined with Easel's own samplers, prompt schedules or inpainting pipelines.

Rules (the extension's, diffusers' where they differ on a fact only the tests can see):
- a unit acts on step i of n unless ``i / n < guidance_start`` or ``(i + 1) / n > guidance_end`` (diffusers'
  ``controlnet_keep``, so ``guidance_end`` 0 never acts); a unit of weight 0 never runs;
- "My prompt is more important" scales residual k of K by ``0.825 ** (12 - k)`` (soft injection);
- "ControlNet is more important" also gives the control to the conditional rows only (cfg injection);
- an inpainting UNet's extra input channels are not given to the ControlNet (its own ``in_channels`` are).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import T2IAdapter
from PIL import Image, ImageOps

from modules.compute.unet_wrapper import WrappedUNet
from modules.controlnet.ip_adapter import IPAdapterWeights, ip_adapters_applied
from modules.controlnet.models import family_name
from modules.controlnet.placement import Placement, offload_after_pass, on_device_for_call, place, placement_of
from modules.controlnet.units import ControlMode, HiresOption, ResizeMode

logger = logging.getLogger(__name__)

SOFT_INJECTION_BASE = 0.825
ADAPTER_SOFT_SCALES = (0.25, 0.62, 0.825, 1.0)  # the extension's soft injection for T2I-Adapters


class ControlError(ValueError):
    """A unit that cannot run with this checkpoint; the message is for the user."""


@dataclass(frozen=True)
class ControlPlan:
    """One unit ready for a backend: its model, the control map (the preprocessor's output) and settings."""

    model_name: str
    model: torch.nn.Module
    image: Image.Image
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    control_mode: ControlMode = ControlMode.BALANCED
    resize_mode: ResizeMode = ResizeMode.INNER_FIT
    hr_option: HiresOption = HiresOption.BOTH
    low_vram: bool = False
    region: Image.Image | None = None  # effective region: white where the unit acts (None: everywhere)
    image_embeds: torch.Tensor | None = None  # an IP-Adapter unit's CLIP image embeddings (1, D)

    def acts_in(self, hires_pass: bool) -> bool:
        if self.weight == 0:
            return False
        if self.hr_option is HiresOption.LOW_RES_ONLY:
            return not hires_pass
        if self.hr_option is HiresOption.HIGH_RES_ONLY:
            return hires_pass
        return True

    def keeps(self, step: int, total: int) -> bool:
        """diffusers' ``controlnet_keep``: the unit acts on this step (0-based) of ``total``."""
        return not (step / total < self.guidance_start or (step + 1) / total > self.guidance_end)


def resize_control_image(image: Image.Image, width: int, height: int, mode: ResizeMode) -> Image.Image:
    """The control map at the generation size: stretched (Just Resize), cropped to fill (Crop and Resize) or fitted
    inside and padded with black (Resize and Fill), as the extension's three modes."""
    image = image.convert("RGB")
    if image.size == (width, height):
        return image
    if mode is ResizeMode.RESIZE:
        return image.resize((width, height), Image.Resampling.LANCZOS)
    if mode is ResizeMode.INNER_FIT:
        return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
    fitted = ImageOps.contain(image, (width, height), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    canvas.paste(fitted, ((width - fitted.width) // 2, (height - fitted.height) // 2))
    return canvas


def control_tensor(image: Image.Image) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1], as diffusers' control image processor makes it (no normalisation)."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def is_adapter(model: torch.nn.Module) -> bool:
    return isinstance(model, T2IAdapter)


def is_ip_adapter(model: torch.nn.Module) -> bool:
    return isinstance(model, IPAdapterWeights)


def check_family(plan: ControlPlan, unet: torch.nn.Module, checkpoint: str) -> None:
    """An SD 1.x ControlNet with an SDXL checkpoint (or any other pair) is an error naming both."""
    if is_adapter(plan.model):
        check_adapter_family(plan, unet, checkpoint)
        return
    if is_ip_adapter(plan.model):
        if plan.model.cross_attention_dim != int(unet.config.cross_attention_dim):
            raise ControlError(
                f"IP-Adapter {plan.model_name} is for {family_name(plan.model.cross_attention_dim)}, but checkpoint "
                f"{checkpoint} is {family_name(int(unet.config.cross_attention_dim))}"
            )
        return
    control_width = int(plan.model.config.cross_attention_dim)
    unet_width = int(unet.config.cross_attention_dim)
    control_xl = plan.model.config.get("addition_embed_type") == "text_time"
    unet_xl = unet.config.get("addition_embed_type") == "text_time"
    if control_width != unet_width or control_xl != unet_xl:
        raise ControlError(
            f"ControlNet model {plan.model_name} is for {family_name(control_width)}, but checkpoint {checkpoint} is "
            f"{family_name(unet_width)}: choose a ControlNet of the checkpoint's family"
        )


def check_adapter_family(plan: ControlPlan, unet: torch.nn.Module, checkpoint: str) -> None:
    """A T2I-Adapter's feature widths must be the UNet's block widths (SDXL adapters: the ``full_adapter_xl``
    type with an SDXL UNet)."""
    count = min(len(unet.config.block_out_channels), len(plan.model.config.channels))
    blocks = list(unet.config.block_out_channels)[:count]
    channels = list(plan.model.config.channels)[:count]
    adapter_xl = plan.model.config.adapter_type == "full_adapter_xl"
    unet_xl = unet.config.get("addition_embed_type") == "text_time"
    if channels != blocks or adapter_xl != unet_xl:
        adapter_family = "SDXL" if adapter_xl else "SD 1.x / 2.x"
        raise ControlError(
            f"T2I-Adapter {plan.model_name} is for {adapter_family} (feature widths {channels}), but checkpoint "
            f"{checkpoint} is {family_name(int(unet.config.cross_attention_dim))} (block widths {blocks})"
        )


@dataclass
class ActiveControl:
    plan: ControlPlan
    hint: torch.Tensor  # (1, 3, H, W) on the ControlNet's device and dtype
    region: torch.Tensor | None = None  # (1, 1, H, W) in [0, 1]
    features: list[torch.Tensor] | None = None  # a T2I-Adapter's features (computed once per pass)
    placement: Placement | None = None  # where its model runs (the UNet's offload policy, the unit's low VRAM)


class ControlledUNet(WrappedUNet):
    """Wraps a UNet2DConditionModel; ``step`` (0-based) is advanced by the backend's step callback.

    For cfg injection the negative prompt's rows get no control. Callers that know the rows say which they are
    (``uncond_rows``: AND prompts, the original backend's guidance, including its separate cond / uncond calls);
    otherwise a batched call is read as two halves: diffusers puts the negative prompt's rows first, A1111's CFG
    denoiser last (``uncond_last``), and a call with an odd row count (no CFG) gives the control to every row."""

    takes_row_marks = True  # forward() reads ``uncond_rows``

    def __init__(
        self, unet: torch.nn.Module, controls: Sequence[ActiveControl], total_steps: int, uncond_last: bool = False
    ) -> None:
        super().__init__(unet)
        self.controls = list(controls)
        self.total_steps = max(1, total_steps)
        self.step = 0
        self.uncond_last = uncond_last
        self.calls_with_control = 0
        self.ip_processors: list[Any] = []  # the IP-Adapter attention processors of this pass (their scale)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: Any,
        encoder_hidden_states: torch.Tensor,
        uncond_rows: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        """``uncond_rows`` (per row, True for a negative prompt's row) comes from callers that know the rows (AND
        prompts, the original backend's guidance); without it an even batch is read as two halves."""
        uncond = self.uncond_of(sample, uncond_rows)
        down, mid = self.residuals(sample, timestep, encoder_hidden_states, kwargs.get("added_cond_kwargs"), uncond)
        if down is not None:
            self.calls_with_control += 1
            kwargs = {**kwargs, "down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        image_embeds = self.ip_image_embeds(sample, uncond)
        if image_embeds:
            kwargs = {
                **kwargs,
                "added_cond_kwargs": {**(kwargs.get("added_cond_kwargs") or {}), "image_embeds": image_embeds},
            }
        intrablock = self.adapter_residuals(sample, uncond)
        if intrablock is not None:
            kwargs = {**kwargs, "down_intrablock_additional_residuals": intrablock}  # a new list: the UNet pops it
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, **kwargs)

    def uncond_of(self, sample: torch.Tensor, uncond_rows: torch.Tensor | None) -> torch.Tensor | None:
        """Per row, True for a negative prompt's row; None when every row is a prompt's (no CFG)."""
        rows = sample.shape[0]
        if uncond_rows is not None:
            return uncond_rows.to(sample.device, torch.bool)
        if rows % 2:
            return None
        first_half = torch.arange(rows, device=sample.device) < rows // 2
        return ~first_half if self.uncond_last else first_half

    def ip_image_embeds(self, sample: torch.Tensor, uncond: torch.Tensor | None) -> list[torch.Tensor]:
        """Each IP-Adapter unit's image embeddings for these rows (zeros for the negative prompt's rows, as
        diffusers does); a unit outside its guidance steps acts with scale 0 on this step."""
        units = [control for control in self.controls if control.plan.image_embeds is not None]
        if not units:
            return []
        rows = sample.shape[0]
        scales = [control.plan.weight if control.plan.keeps(self.step, self.total_steps) else 0.0 for control in units]
        for processor in self.ip_processors:
            processor.scale = list(scales)
        embeds = []
        for control in units:
            embedding = control.plan.image_embeds.to(sample.device, self.unet.dtype)[:, None]  # (1, 1, D)
            rows_embeds = embedding.expand(rows, -1, -1).clone()
            if uncond is not None:
                rows_embeds[uncond] = 0
            embeds.append(rows_embeds)
        return embeds

    def adapter_residuals(self, sample: torch.Tensor, uncond: torch.Tensor | None) -> list[torch.Tensor] | None:
        """The T2I-Adapters' features of this step, summed (diffusers' ``down_intrablock_additional_residuals``)."""
        total: list[torch.Tensor] | None = None
        rows = sample.shape[0]
        for control in self.controls:
            if control.features is None or not control.plan.keeps(self.step, self.total_steps):
                continue
            plan = control.plan
            if self.only_uncond(plan, uncond):
                continue
            scales = [1.0] * len(control.features)
            if plan.control_mode is not ControlMode.BALANCED:
                scales = list(ADAPTER_SOFT_SCALES[: len(control.features)])
            mask = self.cond_mask(plan, uncond, sample)
            features = [
                self.scaled(feature.expand(rows, -1, -1, -1) * plan.weight, scale, mask, control.region)
                for feature, scale in zip(control.features, scales, strict=False)
            ]
            total = features if total is None else [a + b for a, b in zip(total, features, strict=True)]
        return total

    def residuals(
        self, sample: torch.Tensor, timestep: Any, hidden: torch.Tensor, added: dict | None, uncond: torch.Tensor | None
    ) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
        total_down: list[torch.Tensor] | None = None
        total_mid: torch.Tensor | None = None
        for control in self.controls:
            if control.features is not None or control.plan.image_embeds is not None:
                continue
            if not control.plan.keeps(self.step, self.total_steps) or self.only_uncond(control.plan, uncond):
                continue
            down, mid = self.unit_residuals(control, sample, timestep, hidden, added, uncond)
            if total_down is None:
                total_down, total_mid = down, mid
            else:
                total_down = [mine + other for mine, other in zip(total_down, down, strict=True)]
                total_mid = total_mid + mid
        return total_down, total_mid

    def unit_residuals(
        self,
        control: ActiveControl,
        sample: torch.Tensor,
        timestep: Any,
        hidden: torch.Tensor,
        added: dict | None,
        uncond: torch.Tensor | None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        model, plan = control.plan.model, control.plan
        rows = sample.shape[0]
        channels = int(model.config.in_channels)
        arguments: dict[str, Any] = {"encoder_hidden_states": hidden.to(model.dtype), "return_dict": False}
        if added:
            arguments["added_cond_kwargs"] = added
        placement = control.placement or placement_of(model)
        with on_device_for_call(model, placement, sample.device):
            down, mid = model(
                sample[:, :channels].to(model.dtype),
                timestep,
                controlnet_cond=control.hint.expand(rows, -1, -1, -1).to(sample.device),
                conditioning_scale=plan.weight,
                **arguments,
            )
        scales = self.scales(plan, len(down) + 1)
        mask = self.cond_mask(plan, uncond, sample)
        down = [
            self.scaled(residual, scale, mask, control.region) for residual, scale in zip(down, scales, strict=False)
        ]
        return down, self.scaled(mid, scales[-1], mask, control.region)

    @staticmethod
    def scales(plan: ControlPlan, count: int) -> list[float]:
        if plan.control_mode is ControlMode.BALANCED:
            return [1.0] * count
        # The extension's soft injection: 13 scales for SD (12 down + mid), the first 10 of them for SDXL.
        return [SOFT_INJECTION_BASE ** float(12 - index) for index in range(count)]

    @staticmethod
    def only_uncond(plan: ControlPlan, uncond: torch.Tensor | None) -> bool:
        """A cfg-injection unit skips a call made of negative prompt rows only (the original backend's separate
        uncond call), as the extension does."""
        return plan.control_mode is ControlMode.CONTROL and uncond is not None and bool(uncond.all())

    @staticmethod
    def cond_mask(plan: ControlPlan, uncond: torch.Tensor | None, sample: torch.Tensor) -> torch.Tensor | None:
        """cfg injection: 1 on the prompt rows, 0 on the negative prompt's (None: every row gets the control)."""
        if plan.control_mode is not ControlMode.CONTROL or uncond is None:
            return None
        return (~uncond).to(sample.dtype)[:, None, None, None]

    @staticmethod
    def scaled(
        residual: torch.Tensor, scale: float, mask: torch.Tensor | None, region: torch.Tensor | None
    ) -> torch.Tensor:
        if scale != 1.0:
            residual = residual * scale
        if mask is not None:
            residual = residual * mask.to(residual.dtype)
        if region is not None:
            size = residual.shape[-2:]
            residual = residual * torch.nn.functional.interpolate(region, size=size, mode="bilinear").to(residual)
        return residual


def activate(
    plans: Sequence[ControlPlan],
    unet: torch.nn.Module,
    checkpoint: str,
    width: int,
    height: int,
    hires_pass: bool,
) -> list[ActiveControl]:
    """The units that act in this pass, maps at the pass's size on the UNet's execution device; each model follows
    the UNet's offload policy (``placement``): moved there now, or (CALL) kept on the CPU between its calls."""
    active = []
    unet_placement = placement_of(unet)
    for plan in plans:
        check_family(plan, unet, checkpoint)
        if not plan.acts_in(hires_pass):
            continue
        model = plan.model
        if is_ip_adapter(model):
            active.append(ActiveControl(plan, torch.zeros(1), None))
            continue
        placement = unet_placement.for_unit(plan.low_vram)
        place(model, placement.resting_device, placement.dtype)
        image = resize_control_image(plan.image, width, height, plan.resize_mode)
        hint = control_tensor(image).to(placement.device, placement.dtype)
        features = None
        if is_adapter(model):
            with on_device_for_call(model, placement, placement.device):
                features = adapter_features(model, hint)
        region = region_tensor(plan, width, height, hint.device)
        active.append(ActiveControl(plan, hint, region, features, placement))
    return active


def adapter_features(adapter: torch.nn.Module, hint: torch.Tensor) -> list[torch.Tensor]:
    """A T2I-Adapter's features of the control map (one grey channel for the sketch adapters)."""
    channels = int(adapter.config.in_channels)
    with torch.inference_mode():
        return list(adapter(hint[:, :channels] if channels < hint.shape[1] else hint))


def region_tensor(plan: ControlPlan, width: int, height: int, device: torch.device) -> torch.Tensor | None:
    """The effective region mask at the pass's size, resized as the control map is."""
    if plan.region is None:
        return None
    mask = resize_control_image(plan.region.convert("L").convert("RGB"), width, height, plan.resize_mode)
    return control_tensor(mask)[:, :1].to(device)


def ip_adapters_of(controls: Sequence[ActiveControl]) -> list[IPAdapterWeights]:
    return [control.plan.model for control in controls if is_ip_adapter(control.plan.model)]


@contextlib.contextmanager
def controls_applied(pipeline: Any, unet: ControlledUNet | None) -> Iterator[None]:
    """The pass's IP-Adapters loaded into the pipeline's UNet for the block (and taken out after)."""
    adapters = ip_adapters_of(unet.controls) if unet is not None else []
    with ip_adapters_applied(pipeline, adapters) as processors:
        if unet is not None:
            unet.ip_processors = processors
        yield


def release(controls: Sequence[ActiveControl]) -> None:
    """Offloaded (``--medvram`` / ``--lowvram``) and low VRAM units go back to the CPU after the pass."""
    for control in controls:
        if control.placement is not None:
            offload_after_pass(control.plan.model, control.placement)
