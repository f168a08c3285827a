"""Start-up of the model side: the download manager and the default model at first start.

webui.py calls ``prepare_models(application)`` once the application exists (before the UI starts).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from huggingface_hub import constants

from modules.hub.client import HubClient
from modules.hub.downloads import DownloadJob, DownloadManager
from modules.hub.errors import HubError

if TYPE_CHECKING:
    from modules.application import Application

logger = logging.getLogger(__name__)

DEFAULT_MODEL_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def create_download_manager(application: Application, endpoint: str | None = None) -> DownloadManager:
    """Downloads with the Settings token (read at each request) that refresh the checkpoint list when done."""
    client = HubClient(endpoint, token_provider=lambda: application.options.hf_token or None)
    return DownloadManager(client, application.paths, on_complete=lambda job: application.registry.refresh())


def prepare_models(
    application: Application, downloads: DownloadManager | None = None, offline: bool | None = None
) -> DownloadManager:
    """Start the default model download in the background when it is needed."""
    downloads = downloads or create_download_manager(application)
    threading.Thread(
        target=start_default_model, args=(application, downloads, offline), name="easel-default-model", daemon=True
    ).start()
    return downloads


def start_default_model(
    application: Application, downloads: DownloadManager, offline: bool | None = None
) -> DownloadJob | None:
    """Download SD 1.5 (diffusers, safetensors, fp16) when no checkpoint exists, unless told not to or offline."""
    if application.registry.checkpoints():
        return None
    folders = ", ".join(str(folder) for folder in application.paths.checkpoint_dirs)
    if getattr(application.args, "no_download_sd_model", False):
        logger.info("no checkpoint and --no-download-sd-model: put a model into %s or use the Models tab", folders)
        return None
    if constants.is_offline_mode() if offline is None else offline:
        logger.warning(
            "no checkpoint and offline (HF_HUB_OFFLINE=1): the default model is not downloaded; "
            "put a checkpoint into %s and press Refresh",
            folders,
        )
        return None
    try:
        job = downloads.start_pipeline(DEFAULT_MODEL_REPO, fp16=True)
    except HubError as error:
        logger.warning(
            "no checkpoint and the default model %s cannot be downloaded: %s; put a checkpoint into %s or use "
            "the Models tab",
            DEFAULT_MODEL_REPO,
            error,
            folders,
        )
        return None
    logger.info("no checkpoint: downloading the default model repo=%s id=%s", DEFAULT_MODEL_REPO, job.id)
    return job
