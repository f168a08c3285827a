"""The "SD VAE" setting: Automatic (a sidecar file beside the checkpoint, else built-in), None, or a chosen file.

A chosen VAE is loaded into the model's existing ``AutoencoderKL`` with ``load_state_dict`` (every task
pipeline shares that module, so img2img and inpaint see it too); the built-in weights are kept aside on the
CPU the first time and put back for "None". LDM-layout files (``encoder.down.0...``, optionally under
``first_stage_model.``) are converted with diffusers' ``convert_ldm_vae_checkpoint``; diffusers-layout files
and diffusers VAE folders load as they are.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

from modules.models.errors import ModelError
from modules.models.safe_load import load_state_dict

logger = logging.getLogger(__name__)

AUTOMATIC = "Automatic"
NONE = "None"
VAE_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")
SIDECAR_SUFFIXES = (".vae.safetensors", ".vae.pt", ".vae.ckpt")
DIFFUSERS_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


class VaeError(ValueError):
    """A VAE that cannot be used with the loaded model; the message is for the user."""


@dataclass(frozen=True)
class VaeChoice:
    """The VAE a job uses: a file or folder, or None for the checkpoint's own one."""

    path: Path | None

    @property
    def name(self) -> str | None:
        return self.path.name if self.path is not None else None


def sidecar_vae(checkpoint_path: Path) -> Path | None:
    """``<ckpt>.vae.safetensors`` (or ``.vae.pt`` / ``.vae.ckpt``) beside a checkpoint file or folder."""
    base = checkpoint_path.name
    for suffix in VAE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    for suffix in SIDECAR_SUFFIXES:
        candidate = checkpoint_path.with_name(base + suffix)
        if candidate.is_file():
            return candidate
    return None


def resolve_vae(setting: str, checkpoint_path: Path, vae_files: dict[str, Path]) -> VaeChoice:
    """The VAE for a setting value: "Automatic", "None", or a file name from ``vae_files``."""
    if setting in ("", AUTOMATIC):
        return VaeChoice(sidecar_vae(checkpoint_path))
    if setting == NONE:
        return VaeChoice(None)
    found = vae_files.get(setting)
    if found is None:
        raise VaeError(f"VAE {setting!r} not found; choose one of: {', '.join(sorted(vae_files)) or 'none available'}")
    return VaeChoice(found)


def read_vae_weights(path: Path, config: dict) -> dict[str, torch.Tensor]:
    """diffusers-layout AutoencoderKL weights from a VAE file or a diffusers VAE folder."""
    if path.is_dir():
        folder = path / "vae" if (path / "vae").is_dir() else path
        weights = next((folder / name for name in DIFFUSERS_WEIGHT_NAMES if (folder / name).is_file()), None)
        if weights is None:
            raise VaeError(f"{path.name}: no diffusion_pytorch_model weights in the folder")
        return load_state_dict(weights)
    state_dict = load_state_dict(path)
    if any(key.startswith(("first_stage_model.", "encoder.down.", "vae.")) for key in state_dict):
        return convert_ldm_vae_checkpoint(state_dict, config)
    return state_dict


class VaeSwitcher:
    """Puts the chosen VAE weights into each model's VAE; remembers per pipeline what is loaded."""

    def __init__(self) -> None:
        self._builtin: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, torch.Tensor]] = weakref.WeakKeyDictionary()
        self._current: weakref.WeakKeyDictionary[torch.nn.Module, Path | None] = weakref.WeakKeyDictionary()

    def current(self, vae: torch.nn.Module) -> Path | None:
        return self._current.get(vae)

    def apply(self, vae: torch.nn.Module, choice: VaeChoice) -> None:
        """Load ``choice`` into ``vae`` unless it is already there (the next job does not pay again)."""
        if self._current.get(vae) == choice.path:  # absent means built-in, which is None too
            return
        try:
            weights = self._builtin.get(vae) if choice.path is None else read_vae_weights(choice.path, dict(vae.config))
        except ModelError as error:
            raise VaeError(str(error)) from error
        if vae not in self._builtin:
            self._builtin[vae] = {key: value.detach().to("cpu", copy=True) for key, value in vae.state_dict().items()}
        try:
            vae.load_state_dict(weights, strict=True)
        except RuntimeError as error:
            vae.load_state_dict(self._builtin[vae], strict=True)
            self._current[vae] = None
            message = str(error).splitlines()[0]
            raise VaeError(f"VAE {choice.name} does not fit this model's VAE: {message}") from error
        self._current[vae] = choice.path
        logger.info("vae applied name=%s", choice.name or "built-in")
