"""Known default model files (the release files A1111 lists) and their download with a progress bar."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


class ModelDownloadError(FileNotFoundError):
    """A known model file is absent and cannot be downloaded (offline, or the download failed)."""


@dataclass(frozen=True)
class KnownModel:
    """A release file: the name shown to users, the folder (under models/) and file name it lives at, its URL."""

    name: str
    folder: str
    file_name: str
    url: str
    scale: int


_REAL_ESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download"

# A1111's modules/realesrgan_model.py, esrgan_model.py, swinir and dat lists (names kept exactly).
KNOWN_UPSCALERS: tuple[KnownModel, ...] = (
    KnownModel("R-ESRGAN General 4xV3", "RealESRGAN", "realesr-general-x4v3.pth",
               f"{_REAL_ESRGAN}/v0.2.5.0/realesr-general-x4v3.pth", 4),
    KnownModel("R-ESRGAN General WDN 4xV3", "RealESRGAN", "realesr-general-wdn-x4v3.pth",
               f"{_REAL_ESRGAN}/v0.2.5.0/realesr-general-wdn-x4v3.pth", 4),
    KnownModel("R-ESRGAN AnimeVideo", "RealESRGAN", "realesr-animevideov3.pth",
               f"{_REAL_ESRGAN}/v0.2.5.0/realesr-animevideov3.pth", 4),
    KnownModel("R-ESRGAN 4x+", "RealESRGAN", "RealESRGAN_x4plus.pth",
               f"{_REAL_ESRGAN}/v0.1.0/RealESRGAN_x4plus.pth", 4),
    KnownModel("R-ESRGAN 4x+ Anime6B", "RealESRGAN", "RealESRGAN_x4plus_anime_6B.pth",
               f"{_REAL_ESRGAN}/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth", 4),
    KnownModel("R-ESRGAN 2x+", "RealESRGAN", "RealESRGAN_x2plus.pth",
               f"{_REAL_ESRGAN}/v0.2.1/RealESRGAN_x2plus.pth", 2),
    KnownModel("ESRGAN_4x", "ESRGAN", "ESRGAN_4x.pth",
               "https://github.com/cszn/KAIR/releases/download/v1.0/ESRGAN.pth", 4),
    KnownModel("SwinIR 4x", "SwinIR", "SwinIR_4x.pth",
               "https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
               "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth", 4),
    KnownModel("DAT x2", "DAT", "DAT_x2.pth",
               "https://huggingface.co/w-e-w/DAT/resolve/main/experiments/pretrained_models/DAT/DAT_x2.pth", 2),
    KnownModel("DAT x3", "DAT", "DAT_x3.pth",
               "https://huggingface.co/w-e-w/DAT/resolve/main/experiments/pretrained_models/DAT/DAT_x3.pth", 3),
    KnownModel("DAT x4", "DAT", "DAT_x4.pth",
               "https://huggingface.co/w-e-w/DAT/resolve/main/experiments/pretrained_models/DAT/DAT_x4.pth", 4),
)  # fmt: skip

KNOWN_FACE_RESTORERS: tuple[KnownModel, ...] = (
    KnownModel("GFPGAN", "GFPGAN", "GFPGANv1.4.pth",
               "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth", 1),
    KnownModel("CodeFormer", "Codeformer", "codeformer-v0.1.0.pth",
               "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth", 1),
)  # fmt: skip


def is_offline() -> bool:
    """True when the user asked for no network (HF_HUB_OFFLINE, the switch Easel's launcher sets)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def ensure_model_file(model: KnownModel, models_dir: Path) -> Path:
    """The local path of a known model, downloaded with a progress bar when absent and a network is allowed."""
    target = models_dir / model.folder / model.file_name
    if target.is_file():
        return target
    where = f"download {model.url} and save it as {target}"
    if is_offline():
        raise ModelDownloadError(f"{model.name}: {target} is missing and downloads are off (HF_HUB_OFFLINE); {where}")
    return download_file(model.url, target, hint=where)


def download_file(url: str, target: Path, hint: str = "") -> Path:
    """Download ``url`` to ``target`` (atomically, through a temporary file) with torch.hub's progress bar."""
    from torch.hub import download_url_to_file

    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("download=%s target=%s", url, target)
    try:
        download_url_to_file(url, str(target), progress=True)
    except OSError as error:  # URLError, HTTPError and socket errors are OSErrors
        raise ModelDownloadError(f"cannot download {url} ({error}); {hint or f'save it as {target}'}") from error
    return target
