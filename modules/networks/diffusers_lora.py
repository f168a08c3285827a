"""LoRA for the families whose LoRA diffusers' own loaders read (FLUX.1, Stable Diffusion 3.5, DeepFloyd IF).

``loaded_loras(pipeline, uses)`` is a context manager for one pass: each file is read safely, handed to the
pipeline's ``load_lora_weights`` (diffusers converts the kohya, BFL / ComfyUI and XLabs layouts of FLUX.1 LoRA
and the kohya layout of SD 3.5 LoRA to its own, through peft) under an adapter name of this pass, weighted
with ``set_adapters`` (the tag's ``te`` multiplier on the text encoders, ``unet`` on the denoiser), and on exit,
exceptions included, ``unload_lora_weights`` takes every LoRA layer out again, so the next pass runs the
unchanged model. Nothing is written by hand here: the conversions and the layers are diffusers' and peft's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules.models.safe_load import load_state_dict

logger = logging.getLogger(__name__)

ADAPTER_PREFIX = "easel_"
NOTE_LENGTH = 300


def shorten(message: str) -> str:
    """diffusers' messages list every key: one line, cut to ``NOTE_LENGTH`` characters for a note."""
    flat = " ".join(message.split())
    return flat if len(flat) <= NOTE_LENGTH else flat[: NOTE_LENGTH - 3] + "..."


@dataclass(frozen=True)
class DiffusersLoraUse:
    """One ``<lora:name:te:unet>`` tag for a diffusers-loaded family."""

    name: str
    path: Path
    te_multiplier: float = 1.0
    unet_multiplier: float = 1.0


@dataclass
class DiffusersLoraReport:
    """The tags that were applied, and why the others were not."""

    applied: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def component_weights(pipeline: Any, adapter: str, use: DiffusersLoraUse, denoiser: str) -> dict[str, float]:
    """The tag's multipliers per pipeline component that holds this adapter (denoiser: ``unet``; others: ``te``)."""
    holders = [component for component, names in pipeline.get_list_adapters().items() if adapter in names]
    return {component: use.unet_multiplier if component == denoiser else use.te_multiplier for component in holders}


@contextmanager
def loaded_loras(pipeline: Any, uses: Sequence[DiffusersLoraUse], denoiser: str) -> Iterator[DiffusersLoraReport]:
    """``uses`` loaded into ``pipeline`` (its denoiser component named ``denoiser``) for the scope; removed on exit."""
    report = DiffusersLoraReport()
    if not uses:
        yield report
        return
    if not hasattr(pipeline, "load_lora_weights"):
        report.notes.append(f"LoRA is not available for {type(pipeline).__name__} (diffusers has no LoRA loader)")
        yield report
        return
    adapters: list[tuple[str, DiffusersLoraUse]] = []
    try:
        for index, use in enumerate(uses):
            adapter = f"{ADAPTER_PREFIX}{index}"
            try:
                pipeline.load_lora_weights(load_state_dict(use.path), adapter_name=adapter)
            except Exception as error:  # a file diffusers cannot map to this family: a note, not a failed job
                logger.warning("lora not loaded name=%s error=%s", use.name, error)
                report.notes.append(f"LoRA {use.name} not applied: {shorten(str(error))}")
                continue
            if not any(adapter in names for names in pipeline.get_list_adapters().values()):
                report.notes.append(f"LoRA {use.name} not applied: none of its keys fit {type(pipeline).__name__}")
                continue
            adapters.append((adapter, use))
        if adapters:
            weights = [component_weights(pipeline, adapter, use, denoiser) for adapter, use in adapters]
            pipeline.set_adapters([adapter for adapter, _ in adapters], adapter_weights=weights)
            report.applied = [use.name for _, use in adapters]
            logger.info("diffusers lora applied names=%s", ",".join(report.applied))
        yield report
    finally:
        # Also after a failed load, which may have left some layers in place.
        pipeline.unload_lora_weights()
