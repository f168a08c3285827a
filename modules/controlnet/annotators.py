"""Model-based ControlNet preprocessors through controlnet-aux (a well-kept library of the annotators), with their
weights in ``models/ControlNet/annotators`` under lllyasviel/Annotators' file names.

A missing file is downloaded from its Hugging Face repository (lllyasviel/Annotators) through Easel's hub
downloader (modules.hub: progress logged with bytes done / total, staged then renamed into place) when the runner
has a hub client; offline (HF_HUB_OFFLINE=1) or when the hub cannot be reached it is an error naming the file, the
folder and where it comes from. controlnet-aux reads the weights with ``torch.load``, whose default in the
pinned torch is ``weights_only=True`` (tensors only, no code from the file); it is imported on first use
(it takes seconds to import).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from modules.hub.client import HubClient
from modules.hub.downloads import DownloadJob, DownloadState, place_atomically, progress_class_for
from modules.hub.errors import HubError

logger = logging.getLogger(__name__)

ANNOTATORS_REPO = "lllyasviel/Annotators"
SOURCE = f"https://huggingface.co/{ANNOTATORS_REPO}"
STAGING_FOLDER = ".download"  # hidden staging folder inside the annotators folder (same file system: one rename)
TRANSFORMERS_SEGMENTER = "transformers:AutoModelForSemanticSegmentation"
UPERNET_FOLDER = "upernet-convnext-small"


class AnnotatorError(ValueError):
    """Weights absent or unreadable; the message names the file and the folder."""


@dataclass(frozen=True)
class Annotator:
    """One model-based preprocessor: the extension's name, controlnet-aux's class, its weight files and the
    keyword arguments of its call (thresholds map onto ``slider_keywords``)."""

    name: str
    detector: str
    files: tuple[str, ...]
    tags: tuple[str, ...] = ()
    keywords: dict[str, Any] = field(default_factory=dict)
    slider_keywords: tuple[str, ...] = ()
    sliders: tuple[tuple[str, float, float, float, float], ...] = ()  # (label, default, min, max, step)
    source: str = SOURCE  # where its files come from (named in the missing-file message)
    repo_id: str = ANNOTATORS_REPO  # the hub repository its files are downloaded from ("" = no download)


ANNOTATORS: tuple[Annotator, ...] = (
    Annotator("depth_midas", "MidasDetector", ("dpt_hybrid-midas-501f0c75.pt",), ("Depth",)),
    Annotator("normal_bae", "NormalBaeDetector", ("scannet.pt",), ("NormalMap",)),
    Annotator(
        "openpose", "OpenposeDetector", ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"), ("OpenPose",)
    ),
    Annotator("lineart_realistic", "LineartDetector", ("sk_model.pth", "sk_model2.pth"), ("Lineart",)),
    Annotator("lineart_anime", "LineartAnimeDetector", ("netG.pth",), ("Lineart",)),
    Annotator("softedge_hed", "HEDdetector", ("ControlNetHED.pth",), ("SoftEdge",)),
    Annotator("softedge_pidinet", "PidiNetDetector", ("table5_pidinet.pth",), ("SoftEdge",)),
    Annotator(
        "mlsd",
        "MLSDdetector",
        ("mlsd_large_512_fp32.pth",),
        ("MLSD",),
        slider_keywords=("thr_v", "thr_d"),
        sliders=(("MLSD Value Threshold", 0.1, 0.01, 2.0, 0.01), ("MLSD Distance Threshold", 0.1, 0.01, 20.0, 0.01)),
    ),
    # Through transformers (detector TRANSFORMERS_SEGMENTER): a transformers folder of the annotators folder.
    Annotator(
        "seg_upernet_ade20k",
        TRANSFORMERS_SEGMENTER,
        tuple(f"{UPERNET_FOLDER}/{name}" for name in ("config.json", "preprocessor_config.json", "model.safetensors")),
        ("Segmentation",),
        source=f"https://huggingface.co/openmmlab/{UPERNET_FOLDER} (the folder, weights as model.safetensors)",
        repo_id="",  # the repository holds pytorch_model.bin (a pickle), not model.safetensors: no download
    ),
)


class AnnotatorRunner:
    """Runs annotators with the weights of ``folder``; keeps the last one loaded."""

    def __init__(self, folder: Path, hub: HubClient | None = None) -> None:
        self.folder = Path(folder)
        self.hub = hub  # None: never download (a missing file is only the error naming it)
        self._loaded: tuple[str, Any] | None = None
        self._lock = threading.Lock()

    def missing(self, annotator: Annotator) -> list[str]:
        return [name for name in annotator.files if not (self.folder / name).is_file()]

    def run(
        self, annotator: Annotator, image: np.ndarray, resolution: int, thresholds: tuple[float, float]
    ) -> np.ndarray:
        arguments = dict(annotator.keywords)
        arguments.update(zip(annotator.slider_keywords, thresholds, strict=False))
        with self._lock:
            detector = self._detector(annotator)
            result = detector(
                Image.fromarray(image),
                detect_resolution=resolution,
                image_resolution=resolution,
                output_type="pil",
                **arguments,
            )
        return np.asarray(result.convert("RGB"))

    def _detector(self, annotator: Annotator) -> Any:
        self.fetch_missing(annotator)
        if self._loaded is not None and self._loaded[0] == annotator.name:
            return self._loaded[1]
        self._loaded = None
        logger.info("loading annotator name=%s folder=%s", annotator.name, self.folder)
        try:
            detector = self._load(annotator)
        except Exception as error:  # the library reading a user's file: any failure means an unusable file
            message = f"preprocessor {annotator.name}: cannot read its weights in {self.folder}: {error}"
            raise AnnotatorError(message) from error
        self._loaded = (annotator.name, detector)
        return detector

    def fetch_missing(self, annotator: Annotator) -> None:
        """Fetch the missing files from the annotator's repository, or raise the error naming files and folder."""
        missing = self.missing(annotator)
        if not missing:
            return
        why = "no download here"
        if self.hub is not None and annotator.repo_id:
            try:
                download_files(self.hub, annotator.repo_id, missing, self.folder)
                return
            except HubError as error:
                why = f"download from {annotator.repo_id} failed: {error}"
        raise AnnotatorError(
            f"preprocessor {annotator.name} needs {', '.join(missing)} in {self.folder} ({why}: "
            f"get the file from {annotator.source} and put it in that folder)"
        )

    def _load(self, annotator: Annotator) -> Any:
        if annotator.detector == TRANSFORMERS_SEGMENTER:
            from modules.controlnet.segmentation import SemanticSegmenter

            return SemanticSegmenter(self.folder / Path(annotator.files[0]).parent)
        detectors = importlib.import_module("controlnet_aux")
        return getattr(detectors, annotator.detector).from_pretrained(str(self.folder))


def download_files(hub: HubClient, repo_id: str, names: list[str], folder: Path) -> DownloadJob:
    """Download ``names`` of ``repo_id`` into ``folder`` with the Models tab's job (progress logged with bytes
    done / total); each file is staged in a hidden folder and renamed into place only once complete."""
    listing = hub.list_files(repo_id)
    sizes = {item.path: item.size for item in listing.files}
    absent = [name for name in names if name not in sizes]
    if absent:
        raise HubError(f"{repo_id} has no file {absent[0]!r}")
    job = DownloadJob(repo_id, f"annotator {repo_id}: {', '.join(names)}", sum(sizes[name] for name in names))
    job.state, job.started = DownloadState.RUNNING, time.monotonic()
    progress_class = progress_class_for(job)
    logger.info("annotator download start %s folder=%s", job.status().describe(), folder)
    for name in names:
        job.start_file(name)
        staged = hub.download(
            repo_id, name, listing.commit, local_dir=folder / STAGING_FOLDER, progress_class=progress_class
        )
        place_atomically(staged, folder / name)
        job.finish_file(sizes[name])
        logger.info("annotator download progress %s", job.status().describe())
    job.end(DownloadState.DONE, f"saved to {folder}")
    logger.info("annotator download done %s", job.status().describe())
    return job


def find_annotator(name: str) -> Annotator | None:
    return next((item for item in ANNOTATORS if item.name == name), None)
