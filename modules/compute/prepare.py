"""Applies the compute settings to a freshly loaded pipeline, through supported APIs only: diffusers'
``fuse_qkv_projections``, ``enable_layerwise_casting`` and ``set_attn_processor``, ``nn.Module.to(memory_format)``
and ``nn.Module.compile``. Process-wide switches (TF32, cudnn benchmark) are set by ``apply_backend_flags``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from modules.compute.settings import ComputeSettings
from modules.compute.token_merging import TokenMerging

logger = logging.getLogger(__name__)

FP8_STORAGE_DTYPE = torch.float8_e4m3fn
WarmupProgress = Callable[[str], None]


@dataclass
class WarmupRecord:
    width: int
    height: int
    batch_size: int
    seconds: float


@dataclass
class ComputeState:
    """What was applied to one loaded model: shown in System info, read by the backends."""

    settings: ComputeSettings
    is_xl: bool
    applied: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # option -> why it was not applied
    warmups: list[WarmupRecord] = field(default_factory=list)
    token_merging: TokenMerging | None = field(default=None, repr=False)

    @property
    def infotext(self) -> dict[str, str | float | int]:
        keys = self.settings.infotext(self.is_xl)
        if "token merging" not in self.applied:
            keys.pop("Token merging ratio", None)
        if "fp8 weight" not in self.applied:
            keys.pop("FP8 weight", None)
        return keys

    @property
    def deepcache_interval(self) -> int:
        return self.settings.deepcache_interval

    @property
    def warmup_seconds(self) -> float:
        return sum(record.seconds for record in self.warmups)

    def set_token_merging(self, unet: torch.nn.Module, ratio: float) -> None:
        """Install, change or remove the token-merging processors (no reload needed)."""
        if self.token_merging is not None:
            self.token_merging.remove()
            self.token_merging = None
            self.applied = [name for name in self.applied if name != "token merging"]
        if ratio > 0:
            self.token_merging = TokenMerging(unet, ratio)
            self.applied.append("token merging")


def apply_backend_flags(settings: ComputeSettings) -> None:
    """TF32 matmuls/convolutions and cudnn's autotuner: process-wide switches of PyTorch (no effect on the CPU)."""
    torch.backends.cuda.matmul.allow_tf32 = settings.tf32
    torch.backends.cudnn.allow_tf32 = settings.tf32
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark


def prepare_pipeline(pipeline: Any, settings: ComputeSettings, is_xl: bool) -> ComputeState:
    """Fuse, change the memory format, store in FP8, merge tokens, compile: in that order (compile last)."""
    state = ComputeState(settings=settings, is_xl=is_xl)
    unet, vae = getattr(pipeline, "unet", None), getattr(pipeline, "vae", None)
    if unet is None:
        return _prepare_transformer_model(settings, state)
    if settings.fuse_qkv:
        _fuse_qkv(unet, vae, state)
    if settings.channels_last:
        unet.to(memory_format=torch.channels_last)
        if vae is not None:
            vae.to(memory_format=torch.channels_last)
        state.applied.append("channels_last")
    if settings.fp8_applies(is_xl):
        _store_fp8(unet, state)
    state.set_token_merging(unet, settings.token_merging_ratio)
    if settings.compile_unet:
        unet.compile(mode=settings.compile_mode, dynamic=settings.compile_dynamic)
        state.applied.append("compile unet")
    if settings.compile_vae and vae is not None:
        vae.decoder.compile(mode=settings.compile_mode, dynamic=settings.compile_dynamic)
        state.applied.append("compile vae")
    logger.info("compute prepared applied=%s skipped=%s", ",".join(state.applied) or "-", state.skipped or "-")
    return state


def _prepare_transformer_model(settings: ComputeSettings, state: ComputeState) -> ComputeState:
    """The compute settings are written for UNets (token merging, DeepCache, FP8 storage, compile of the UNet):
    on a transformer family (FLUX.1, SD 3.5) they are reported as skipped, not applied."""
    unet_settings = {
        "fuse_qkv": settings.fuse_qkv,
        "channels_last": settings.channels_last,
        "fp8": settings.fp8_applies(state.is_xl),
        "token merging": settings.token_merging_ratio > 0,
        "compile": settings.compiles,
    }
    for name, wanted in unet_settings.items():
        if wanted:
            state.skipped[name] = "applies to UNet models only, not to transformer families"
    logger.info("compute prepared applied=- skipped=%s", state.skipped or "-")
    return state


def _fuse_qkv(unet: torch.nn.Module, vae: torch.nn.Module | None, state: ComputeState) -> None:
    try:
        unet.fuse_qkv_projections()
        if vae is not None:
            vae.fuse_qkv_projections()
    except (ValueError, AttributeError) as error:
        state.skipped["fused qkv"] = str(error)
        logger.warning("fused QKV projections unavailable error=%s", error)
        return
    state.applied.append("fused qkv")


def _store_fp8(unet: torch.nn.Module, state: ComputeState) -> None:
    """Weights stored as float8_e4m3fn, each layer cast up to the model's dtype while it runs (A1111's FP8 weight)."""
    try:
        unet.enable_layerwise_casting(storage_dtype=FP8_STORAGE_DTYPE, compute_dtype=unet.dtype)
    except (ValueError, RuntimeError, TypeError) as error:
        state.skipped["fp8 weight"] = str(error)
        logger.warning("FP8 weight storage unavailable error=%s", error)
        return
    state.applied.append("fp8 weight")


def warm_up(
    pipeline: Any,
    state: ComputeState,
    sizes: Sequence[tuple[int, int]],
    batch_sizes: Sequence[int] = (1,),
    progress: WarmupProgress | None = None,
) -> list[WarmupRecord]:
    """Run a 2-step generation per size and batch size, so that compilation (and CUDA graph recording) happens at
    load time; each shape is logged and reported to ``progress`` as it starts and ends."""
    records = []
    shapes = [(width, height, batch) for width, height in sizes for batch in batch_sizes]
    for index, (width, height, batch) in enumerate(shapes, start=1):
        message = f"compile warm-up {index}/{len(shapes)}: {width}x{height} batch {batch}"
        logger.info("%s", message)
        if progress is not None:
            progress(message)
        started = time.perf_counter()
        with torch.inference_mode():
            pipeline(
                prompt=[""] * batch,
                num_inference_steps=2,
                width=width,
                height=height,
                guidance_scale=7.0,
                output_type="pil" if "compile vae" in state.applied else "latent",
            )
        record = WarmupRecord(width, height, batch, time.perf_counter() - started)
        logger.info("compile warm-up done size=%dx%d batch=%d seconds=%.2f", width, height, batch, record.seconds)
        records.append(record)
    state.warmups.extend(records)
    return records
