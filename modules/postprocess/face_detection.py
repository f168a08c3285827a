"""Face detection: boxes and five landmarks, with OpenCV's YuNet (``cv2.FaceDetectorYN``)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

YUNET_FILE_NAME = "yunet.onnx"


class FaceModelMissingError(FileNotFoundError):
    """A face detection or restoration weight file is not where it is expected."""


Point = tuple[float, float]


@dataclass(frozen=True)
class DetectedFace:
    """A face: box (x, y, width, height) in pixels, five landmarks, and the detector's confidence.

    Landmarks are in image order: eye on the image's left, eye on the image's right, nose tip, mouth corner
    on the left, mouth corner on the right (the order of the FFHQ alignment template).
    """

    box: tuple[float, float, float, float]
    landmarks: tuple[Point, Point, Point, Point, Point]
    score: float


class FaceDetector(Protocol):
    def detect(self, image: Image.Image) -> list[DetectedFace]: ...


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else a FaceModelMissingError that says what to put where."""
    if not path.is_file():
        raise FaceModelMissingError(f"{what} weights are missing: put the file at {path}")
    return path


class YuNetFaceDetector:
    """OpenCV's YuNet. Large images are scaled down to ``max_side`` for detection; results are in image pixels."""

    def __init__(
        self,
        model_path: Path,
        score_threshold: float = 0.9,
        nms_threshold: float = 0.3,
        max_side: int = 1280,
    ) -> None:
        self.model_path = require_file(Path(model_path), "YuNet face detector")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        self._lock = threading.Lock()  # a cv2.FaceDetectorYN keeps per-call state
        self._detector: cv2.FaceDetectorYN | None = None

    def detect(self, image: Image.Image) -> list[DetectedFace]:
        factor = min(1.0, self.max_side / max(image.size))
        working = image.convert("RGB")
        if factor < 1.0:
            working = working.resize(
                (round(image.width * factor), round(image.height * factor)), Image.Resampling.LANCZOS
            )
        bgr = np.ascontiguousarray(np.asarray(working)[:, :, ::-1])
        with self._lock:
            detector = self._get_detector()
            detector.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, rows = detector.detect(bgr)
        faces = [] if rows is None else [face_from_yunet_row(row, 1.0 / factor) for row in rows]
        logger.debug("detector=yunet faces=%d size=%dx%d", len(faces), image.width, image.height)
        return sorted(faces, key=lambda face: face.box[2] * face.box[3], reverse=True)

    def _get_detector(self) -> cv2.FaceDetectorYN:
        if self._detector is None:
            self._detector = cv2.FaceDetectorYN.create(
                str(self.model_path), "", (320, 320), self.score_threshold, self.nms_threshold, 5000
            )
        return self._detector


def face_from_yunet_row(row: np.ndarray, factor: float) -> DetectedFace:
    """A YuNet output row: x, y, w, h, five (x, y) landmarks (right eye, left eye, nose, mouth corners), score.

    YuNet names eyes from the subject's side; its first eye is the one on the image's left, as FFHQ's template.
    """
    values = [float(value) * factor for value in row[:14]]
    points = tuple((values[4 + 2 * index], values[5 + 2 * index]) for index in range(5))
    return DetectedFace(box=(values[0], values[1], values[2], values[3]), landmarks=points, score=float(row[14]))


def box_overlap(first: tuple[float, float, float, float], second: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x, y, width, height) boxes."""
    left, top = max(first[0], second[0]), max(first[1], second[1])
    right = min(first[0] + first[2], second[0] + second[2])
    bottom = min(first[1] + first[3], second[1] + second[3])
    intersection = max(0.0, right - left) * max(0.0, bottom - top)
    union = first[2] * first[3] + second[2] * second[3] - intersection
    return intersection / union if union > 0 else 0.0
