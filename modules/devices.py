"""Device choice and the one memory policy every loaded pipeline goes through."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

import torch

logger = logging.getLogger(__name__)


class MemoryPreset(StrEnum):
    NONE = "none"
    MEDVRAM = "medvram"
    LOWVRAM = "lowvram"


class Attention(StrEnum):
    SDP = "sdp"
    XFORMERS = "xformers"
    SPLIT = "split"


@dataclass(frozen=True)
class MemoryPolicy:
    """Decides device, dtypes, offload and attention from the flags, in one place."""

    device: torch.device
    dtype: torch.dtype
    vae_dtype: torch.dtype
    preset: MemoryPreset = MemoryPreset.NONE
    attention: Attention = Attention.SDP
    medvram_sdxl: bool = False  # A1111's --medvram-sdxl: the medvram preset for SDXL models only

    @classmethod
    def from_flags(
        cls,
        use_cpu: list[str],
        device_id: int | None,
        precision: str,
        no_half: bool,
        no_half_vae: bool,
        medvram: bool,
        lowvram: bool,
        attention: Attention = Attention.SDP,
        medvram_sdxl: bool = False,
    ) -> MemoryPolicy:
        device = choose_device(use_cpu, device_id)
        half = device.type == "cuda" and precision != "full" and not no_half
        dtype = torch.float16 if half else torch.float32
        vae_dtype = torch.float32 if no_half_vae else dtype
        preset = MemoryPreset.LOWVRAM if lowvram else MemoryPreset.MEDVRAM if medvram else MemoryPreset.NONE
        return cls(
            device=device,
            dtype=dtype,
            vae_dtype=vae_dtype,
            preset=preset,
            attention=attention,
            medvram_sdxl=medvram_sdxl,
        )

    @classmethod
    def cpu(cls) -> MemoryPolicy:
        return cls(device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32)

    @property
    def has_accelerator(self) -> bool:
        return self.device.type != "cpu"

    def preset_for(self, pipeline) -> MemoryPreset:
        """The preset of one pipeline: ``--medvram-sdxl`` turns medvram on for SDXL-family UNets only."""
        unet = getattr(pipeline, "unet", None)
        is_sdxl = unet is not None and unet.config.get("addition_embed_type") == "text_time"
        if self.preset is MemoryPreset.NONE and self.medvram_sdxl and is_sdxl:
            return MemoryPreset.MEDVRAM
        return self.preset

    def apply(self, pipeline, cpu_components: tuple[str, ...] = ()) -> None:
        """Move a freshly loaded pipeline to its device and apply the offload and attention choices.

        ``cpu_components`` (the text encoders of a family with T5, under --medvram / --lowvram) stay in CPU RAM,
        outside the offload hooks: they are taken off the pipeline while diffusers installs its hooks and put back
        after, and the caller encodes prompts on the CPU with them."""
        if self.vae_dtype != self.dtype and getattr(pipeline, "vae", None) is not None:
            pipeline.vae.to(dtype=self.vae_dtype)
        preset = self.preset_for(pipeline)
        if preset is not MemoryPreset.NONE and not self.has_accelerator:
            logger.info("memory preset=%s changes nothing on the CPU", preset.value)
        if self.has_accelerator and preset is not MemoryPreset.NONE:
            offload(pipeline, preset, self.device, cpu_components)
        else:
            pipeline.to(self.device)
        if self.device.type == "cpu":
            align_cpu_weights(pipeline)
        self._apply_attention(pipeline)

    def _apply_attention(self, pipeline) -> None:
        if self.attention is Attention.XFORMERS:
            try:
                pipeline.enable_xformers_memory_efficient_attention()
            except (ImportError, ValueError, RuntimeError, OSError) as error:
                # diffusers raises ValueError without CUDA, ModuleNotFoundError when xformers is not installed.
                logger.warning("xformers cannot load error=%s; falling back to PyTorch SDPA attention", error)
        elif self.attention is Attention.SPLIT:
            pipeline.enable_attention_slicing()

    def describe(self) -> str:
        return (
            f"device={self.device} dtype={str(self.dtype).removeprefix('torch.')} "
            f"preset={self.preset.value} attention={self.attention.value}"
        )


def offload(pipeline, preset: MemoryPreset, device: torch.device, cpu_components: tuple[str, ...] = ()) -> None:
    """diffusers' model offload (--medvram) or sequential offload (--lowvram) onto ``device``, with
    ``cpu_components`` left in CPU RAM outside the hooks: taken off the pipeline while diffusers installs its hooks
    (it hooks every component it holds), then registered again."""
    held = {name: getattr(pipeline, name) for name in cpu_components if getattr(pipeline, name, None) is not None}
    pipeline.register_modules(**dict.fromkeys(held))
    vae = getattr(pipeline, "vae", None)  # pixel-space (IF) and MoVQ (Kandinsky) pipelines have none
    if preset is MemoryPreset.MEDVRAM:
        pipeline.enable_model_cpu_offload(device=device)
        if vae is not None:
            vae.enable_slicing()
    else:
        pipeline.enable_sequential_cpu_offload(device=device)
        if vae is not None:
            vae.enable_tiling()
    pipeline.register_modules(**held)
    if held:
        logger.info("kept on the cpu components=%s preset=%s", ",".join(held), preset.value)


CPU_ALIGNMENT = 64  # bytes: PyTorch's CPU allocator starts every new tensor on a 64-byte boundary


def align_cpu_weights(pipeline) -> None:
    """Copies the CPU weights that do not start on a 64-byte boundary into fresh memory.

    Weights memory-mapped from a safetensors file start wherever the file puts them, and CPU matmul kernels round
    differently for data that is not aligned: the same weights from a single file and from a diffusers folder
    gave images one level apart. Aligned, a model computes the same whatever file it came from."""
    copied = 0
    for component in pipeline.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for tensor in (*component.parameters(), *component.buffers()):
            if tensor.device.type == "cpu" and tensor.data_ptr() % CPU_ALIGNMENT:
                tensor.data = tensor.data.clone()
                copied += 1
    logger.debug("cpu weights aligned copied=%d", copied)


def execution_device(module: torch.nn.Module) -> torch.device:
    """The device ``module`` computes on: under ``--medvram`` / ``--lowvram`` (accelerate's offload hooks) its
    weights wait on the CPU or ``meta`` and the hooks name the device; otherwise its parameters' device."""
    for part in module.modules():
        device = getattr(getattr(part, "_hf_hook", None), "execution_device", None)
        if device is not None:
            device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
            return torch.device("cpu") if device.type == "cpu" else device  # "cpu:0" is the CPU
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def choose_device(use_cpu: list[str], device_id: int | None) -> torch.device:
    """CUDA when present unless ``--use-cpu all``; MPS on Apple machines; else the CPU."""
    if "all" in use_cpu or "sd" in use_cpu:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", device_id or 0)
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
