"""Weight patches on a loaded model, ComfyUI-style: backup, add the deltas, restore exactly afterwards.

``patched_weights`` is a context manager: inside it the UNet / text-encoder weights carry the LoRA deltas;
on leaving (normally or through an exception) every touched tensor is copied back from its backup, so the
model is bit for bit what it was. Nothing is monkey-patched; only parameter data changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from modules.models.ldm_keys import DIFFUSERS_TO_LDM_MAPPING, unet_block_prefixes, unet_key_to_ldm
from modules.networks.lora import IgnoredKey, ModulePatch, NetworkFile, NetworkFileError

logger = logging.getLogger(__name__)

Component = Literal["unet", "te"]


@dataclass(frozen=True)
class ModuleTarget:
    """A module a patch can change: which part of the model it belongs to, its name there, the module."""

    component: Component
    name: str
    module: torch.nn.Module


@dataclass(frozen=True)
class NetworkUse:
    """One network of a prompt with its multipliers (A1111's te / unet / dyn)."""

    name: str
    network: NetworkFile
    te_multiplier: float = 1.0
    unet_multiplier: float = 1.0
    dyn: int | None = None


@dataclass
class PatchReport:
    """What a patch run did: modules changed, and keys that found no module (with reasons)."""

    patched_modules: int = 0
    text_encoder_changed: bool = False
    unmapped: dict[str, list[IgnoredKey]] = field(default_factory=dict)


def _ldm_unet_names(unet_config: Mapping[str, Any], names: Sequence[str]) -> dict[str, str]:
    """diffusers module name -> LDM module name (kohya files made from A1111 checkpoints use LDM names)."""
    fixed = {**DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"], **DIFFUSERS_TO_LDM_MAPPING["unet"]["addition_embed_type"]}
    try:
        prefixes = unet_block_prefixes(unet_config)
    except (KeyError, TypeError):
        return {}
    mapped: dict[str, str] = {}
    for name in names:
        try:
            mapped[name] = unet_key_to_ldm(f"{name}.weight", fixed, prefixes).removesuffix(".weight")
        except KeyError:
            continue
    return mapped


def _weighted_modules(root: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    for name, module in root.named_modules():
        if name and isinstance(getattr(module, "weight", None), torch.nn.Parameter):
            yield name, module


def build_module_index(unet: torch.nn.Module, text_encoders: Sequence[torch.nn.Module]) -> dict[str, ModuleTarget]:
    """kohya-style stem -> module, for every weighted module (diffusers and LDM UNet names, te/te1/te2)."""
    index: dict[str, ModuleTarget] = {}
    unet_modules = dict(_weighted_modules(unet))
    for name, module in unet_modules.items():
        index["lora_unet_" + name.replace(".", "_")] = ModuleTarget("unet", name, module)
    config = getattr(unet, "config", None)
    if config is not None:
        for name, ldm_name in _ldm_unet_names(dict(config), list(unet_modules)).items():
            index.setdefault("lora_unet_" + ldm_name.replace(".", "_"), ModuleTarget("unet", name, unet_modules[name]))
    prefixes = (("lora_te_", "lora_te1_"),) if len(text_encoders) == 1 else (("lora_te1_", "lora_te_"), ("lora_te2_",))
    for encoder, encoder_prefixes in zip(text_encoders, prefixes, strict=False):
        for name, module in _weighted_modules(encoder):
            bare = name.removeprefix("text_model.").replace(".", "_")
            target = ModuleTarget("te", name, module)
            for prefix in encoder_prefixes:
                index[prefix + bare] = target
                index[prefix + "text_model_" + bare] = target
    return index


def map_network(
    network: NetworkFile, index: Mapping[str, ModuleTarget]
) -> tuple[list[tuple[ModuleTarget, ModulePatch]], list[IgnoredKey]]:
    """Pair every patch with its module; patches with no module, or a delta of the wrong size, are unmapped."""
    mapped: list[tuple[ModuleTarget, ModulePatch]] = []
    unmapped = list(network.ignored)
    for stem, patch in network.patches.items():
        target = index.get(stem)
        if target is None:
            unmapped.append(IgnoredKey(stem, "no module of this name in the loaded model"))
            continue
        try:
            # Shapes only: the delta is computed on the meta device, which costs nothing.
            meta_patch = ModulePatch(patch.stem, patch.kind, {k: v.to("meta") for k, v in patch.tensors.items()})
            meta_patch.weight_delta(target.module.weight.shape)
        except (NetworkFileError, RuntimeError) as error:
            unmapped.append(IgnoredKey(stem, f"shape does not fit {target.name}: {error}"))
            continue
        mapped.append((target, patch))
    return mapped, unmapped


def _accumulate(
    uses: Sequence[NetworkUse], index: Mapping[str, ModuleTarget], report: PatchReport
) -> dict[str, tuple[ModuleTarget, torch.Tensor, torch.Tensor | None]]:
    """Sum the float32 deltas of every network per module (A1111 adds all networks' deltas at once)."""
    sums: dict[str, tuple[ModuleTarget, torch.Tensor, torch.Tensor | None]] = {}
    for use in uses:
        mapped, unmapped = map_network(use.network, index)
        if unmapped:
            report.unmapped[use.name] = unmapped
        for target, patch in mapped:
            multiplier = use.te_multiplier if target.component == "te" else use.unet_multiplier
            if multiplier == 0:
                continue
            weight = target.module.weight
            delta = patch.weight_delta(weight.shape, use.dyn).to(weight.device) * multiplier
            bias_delta = patch.bias_delta()
            if bias_delta is not None:
                bias_delta = bias_delta.to(weight.device) * multiplier
            key = f"{target.component}:{target.name}"
            if key in sums:
                _, previous, previous_bias = sums[key]
                delta = previous + delta
                if previous_bias is not None:
                    bias_delta = previous_bias if bias_delta is None else previous_bias + bias_delta
            sums[key] = (target, delta, bias_delta)
    return sums


@contextmanager
def patched_weights(uses: Sequence[NetworkUse], index: Mapping[str, ModuleTarget]) -> Iterator[PatchReport]:
    """Apply ``uses`` to the modules of ``index``; restore every touched tensor exactly on exit."""
    report = PatchReport()
    backups: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for target, delta, bias_delta in _accumulate(uses, index, report).values():
                _patch_tensor(target.module.weight, delta, backups)
                bias = getattr(target.module, "bias", None)
                if bias_delta is not None and isinstance(bias, torch.Tensor):
                    _patch_tensor(bias, bias_delta, backups)
                report.patched_modules += 1
                report.text_encoder_changed |= target.component == "te"
        logger.info("networks applied count=%d modules=%d", len(uses), report.patched_modules)
        yield report
    finally:
        with torch.no_grad():
            for tensor, backup in reversed(backups):
                tensor.copy_(backup)
        if backups:
            logger.info("networks removed modules=%d", report.patched_modules)


def _patch_tensor(tensor: torch.Tensor, delta: torch.Tensor, backups: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    backups.append((tensor, tensor.detach().clone()))
    tensor.copy_((tensor.float() + delta.reshape(tensor.shape)).to(tensor.dtype))
