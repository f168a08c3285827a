"""LoRA and LyCORIS files: keys grouped per target module, weight deltas computed here.

Formats read (every key either lands in a group that becomes a patch, or is reported with a reason):
- kohya-ss: ``lora_unet_*``, ``lora_te_*``, ``lora_te1_*``/``lora_te2_*`` (SDXL) with ``lora_down``/``lora_up``
  /``alpha``, LoCon conv layers and the ``lora_mid`` (Tucker) variant; UNet names in diffusers or LDM layout;
- diffusers / PEFT: ``unet.*.lora_A/lora_B``, ``*.lora.down/up``, ``*.lora_linear_layer.*`` and the old
  attention-processor layout ``*.processor.to_q_lora.down.weight``;
- LyCORIS LoHa (``hada_*``), LoKr (``lokr_*``) and full/diff weights (``diff``, ``diff_b``).

Written by hand: diffusers' ``load_lora_weights`` rejects LoHa and LoKr and drops keys it cannot map, so the
deltas are computed here the way LyCORIS and ComfyUI define them, and applied by ``patcher.py``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import torch

from modules.models.safe_load import load_state_dict

logger = logging.getLogger(__name__)

# (key suffix, role), longest suffixes first so that ".lora_A.default.weight" wins over shorter ones.
ROLE_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".lora_linear_layer.down.weight", "lora_down"),
    (".lora_linear_layer.up.weight", "lora_up"),
    (".lora_A.default.weight", "lora_down"),
    (".lora_B.default.weight", "lora_up"),
    (".lora_down.weight", "lora_down"),
    (".lora_up.weight", "lora_up"),
    (".lora_mid.weight", "lora_mid"),
    (".lora.down.weight", "lora_down"),
    (".lora.up.weight", "lora_up"),
    (".lora_A.weight", "lora_down"),
    (".lora_B.weight", "lora_up"),
    (".alpha", "alpha"),
    *((f".hada_{name}", f"hada_{name}") for name in ("w1_a", "w1_b", "w2_a", "w2_b", "t1", "t2")),
    *((f".lokr_{name}", f"lokr_{name}") for name in ("w1", "w1_a", "w1_b", "w2", "w2_a", "w2_b", "t2")),
    (".diff_b", "diff_b"),
    (".diff", "diff"),
    (".dora_scale", "dora_scale"),
    (".on_input", "ia3_on_input"),
)
OLD_DIFFUSERS_KEY = re.compile(
    r"^(?P<stem>.*?)\.(?:processor\.)?(?P<layer>to_q|to_k|to_v|to_out)_lora\.(?P<end>down|up)\.weight$"
)
# Dotted prefixes (diffusers / PEFT) -> kohya prefixes. Keys without a known prefix are UNet keys (old diffusers).
DOTTED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("text_encoder_2.", "lora_te2_"),
    ("text_encoder.", "lora_te_"),
    ("unet.", "lora_unet_"),
    ("base_model.model.", "lora_unet_"),
)
KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")


class NetworkKind(StrEnum):
    LORA = "lora"
    LOHA = "loha"
    LOKR = "lokr"
    FULL = "full"


class NetworkFileError(ValueError):
    """A LoRA/LyCORIS file that cannot be read; the message is for the user."""


@dataclass(frozen=True)
class IgnoredKey:
    """A key of a file that changes nothing, and why (shown to the user)."""

    key: str
    reason: str


@dataclass(frozen=True)
class ModulePatch:
    """The tensors of one target module (kohya-style ``stem``), by role, with the network kind."""

    stem: str
    kind: NetworkKind
    tensors: Mapping[str, torch.Tensor]
    alpha: float | None = None

    @property
    def rank(self) -> int | None:
        for role in ("lora_down", "hada_w1_b", "lokr_w1_b", "lokr_w2_b"):
            if role in self.tensors:
                return int(self.tensors[role].shape[0])
        return None

    @property
    def scale(self) -> float:
        """alpha / rank (1 when the file has no alpha or the kind has no rank)."""
        rank = self.rank
        return self.alpha / rank if self.alpha is not None and rank else 1.0

    def weight_delta(self, weight_shape: torch.Size | tuple[int, ...], dyn: int | None = None) -> torch.Tensor:
        """The change of the module's weight at multiplier 1 (alpha / rank applied), shaped like the weight."""
        tensors = {role: tensor.float() for role, tensor in self.tensors.items()}
        if self.kind is NetworkKind.LORA:
            delta = lora_delta(tensors, dyn)
        elif self.kind is NetworkKind.LOHA:
            delta = loha_delta(tensors)
        elif self.kind is NetworkKind.LOKR:
            delta = lokr_delta(tensors)
        else:
            delta = tensors["diff"]
        if delta.numel() != torch.Size(weight_shape).numel():
            raise NetworkFileError(
                f"{self.stem}: delta of shape {tuple(delta.shape)} does not fit a weight of shape {tuple(weight_shape)}"
            )
        return delta.reshape(weight_shape) * self.scale

    def bias_delta(self) -> torch.Tensor | None:
        bias = self.tensors.get("diff_b")
        return bias.float() if bias is not None else None


@dataclass(frozen=True)
class NetworkFile:
    """A parsed file: one patch per target module stem, plus every key that was not used and why."""

    path: Path
    patches: Mapping[str, ModulePatch]
    ignored: tuple[IgnoredKey, ...]

    @property
    def kinds(self) -> set[NetworkKind]:
        return {patch.kind for patch in self.patches.values()}


def lora_delta(tensors: Mapping[str, torch.Tensor], dyn: int | None = None) -> torch.Tensor:
    """up @ down (LoRA, LoCon); with ``lora_mid`` the Tucker form (as ComfyUI computes it)."""
    down, up = tensors["lora_down"], tensors["lora_up"]
    if dyn is not None and 0 < dyn < down.shape[0]:
        down, up = down[:dyn], up[:, :dyn]
    mid = tensors.get("lora_mid")
    if mid is not None:
        shape = [up.shape[1], down.shape[0], mid.shape[2], mid.shape[3]]
        down = torch.mm(down.transpose(0, 1).flatten(1), mid.transpose(0, 1).flatten(1)).reshape(shape).transpose(0, 1)
    return torch.mm(up.flatten(1), down.flatten(1))


def loha_delta(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """LoHa: (w1_a @ w1_b) * (w2_a @ w2_b), Hadamard product; Tucker cores t1/t2 for conv layers."""
    first = _hada_factor(tensors, "1")
    second = _hada_factor(tensors, "2")
    return first * second


def _hada_factor(tensors: Mapping[str, torch.Tensor], index: str) -> torch.Tensor:
    left, right = tensors[f"hada_w{index}_a"], tensors[f"hada_w{index}_b"]
    core = tensors.get(f"hada_t{index}")
    if core is not None:
        return torch.einsum("i j k l, j r, i p -> p r k l", core, right, left)
    return torch.mm(left, right.flatten(1))


def lokr_delta(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """LoKr: kron(w1, w2), each factor full or a low-rank product (w2 optionally with a Tucker core)."""
    first = tensors.get("lokr_w1")
    if first is None:
        first = torch.mm(tensors["lokr_w1_a"], tensors["lokr_w1_b"])
    second = tensors.get("lokr_w2")
    if second is None:
        core = tensors.get("lokr_t2")
        if core is not None:
            second = torch.einsum("i j k l, i p, j r -> p r k l", core, tensors["lokr_w2_a"], tensors["lokr_w2_b"])
        else:
            second = torch.mm(tensors["lokr_w2_a"], tensors["lokr_w2_b"].flatten(1))
    if second.dim() == 4:
        first = first.unsqueeze(2).unsqueeze(2)
    return torch.kron(first, second)


def split_key(key: str) -> tuple[str, str] | None:
    """(kohya-style stem, role) of a key, or None when no known suffix ends it."""
    old = OLD_DIFFUSERS_KEY.match(key)
    if old:
        layer = "to_out.0" if old["layer"] == "to_out" else old["layer"]
        return normalize_stem(f"{old['stem']}.{layer}"), f"lora_{old['end']}"
    for suffix, role in ROLE_SUFFIXES:
        if key.endswith(suffix):
            return normalize_stem(key[: -len(suffix)]), role
    return None


def normalize_stem(stem: str) -> str:
    """Any naming of a module -> the kohya form (``lora_unet_down_blocks_0_...``)."""
    if stem.startswith(KOHYA_PREFIXES):
        return stem
    for dotted, kohya in DOTTED_PREFIXES:
        if stem.startswith(dotted):
            return kohya + stem[len(dotted) :].replace(".", "_")
    return "lora_unet_" + stem.replace(".", "_")


def classify(stem: str, roles: Mapping[str, torch.Tensor]) -> NetworkKind | str:
    """The kind of a module's group, or the reason it cannot be used."""
    if "lora_down" in roles and "lora_up" in roles:
        return NetworkKind.LORA
    if all(f"hada_{name}" in roles for name in ("w1_a", "w1_b", "w2_a", "w2_b")):
        return NetworkKind.LOHA
    has_first = "lokr_w1" in roles or ("lokr_w1_a" in roles and "lokr_w1_b" in roles)
    has_second = "lokr_w2" in roles or ("lokr_w2_a" in roles and "lokr_w2_b" in roles)
    if has_first and has_second:
        return NetworkKind.LOKR
    if "diff" in roles:
        return NetworkKind.FULL
    if "ia3_on_input" in roles:
        return "IA3 networks are not supported"
    return f"incomplete group (has {', '.join(sorted(roles))})"


def parse_network(path: Path, state_dict: Mapping[str, torch.Tensor]) -> NetworkFile:
    """Group a state dict's keys per module; keys that fit no group are listed in ``ignored``."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    key_names: dict[str, list[str]] = {}
    ignored: list[IgnoredKey] = []
    for key, tensor in state_dict.items():
        parts = split_key(key)
        if parts is None:
            ignored.append(IgnoredKey(key, "unknown key (not a LoRA/LyCORIS tensor name)"))
            continue
        stem, role = parts
        groups.setdefault(stem, {})[role] = tensor
        key_names.setdefault(stem, []).append(key)
    patches: dict[str, ModulePatch] = {}
    for stem, roles in groups.items():
        kind = classify(stem, roles)
        if not isinstance(kind, NetworkKind):
            ignored.extend(IgnoredKey(key, kind) for key in key_names[stem])
            continue
        alpha = roles.pop("alpha", None)
        if "dora_scale" in roles:
            roles.pop("dora_scale")
            ignored.append(IgnoredKey(f"{stem}.dora_scale", "DoRA magnitude is not supported (plain LoRA applied)"))
        patches[stem] = ModulePatch(stem, kind, roles, float(alpha.float().item()) if alpha is not None else None)
    return NetworkFile(path=path, patches=patches, ignored=tuple(ignored))


def load_network(path: Path) -> NetworkFile:
    """Read a LoRA/LyCORIS file safely (safetensors, or weights-only torch.load) and group its keys."""
    state_dict = load_state_dict(path)
    network = parse_network(path, state_dict)
    if not network.patches:
        raise NetworkFileError(f"{path.name}: no LoRA/LyCORIS weights found ({len(network.ignored)} unknown keys)")
    logger.info(
        "network read name=%s modules=%d kinds=%s ignored=%d",
        path.stem,
        len(network.patches),
        ",".join(sorted(network.kinds)),
        len(network.ignored),
    )
    return network
