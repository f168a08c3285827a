"""Face restoration with GFPGAN or CodeFormer (through spandrel): detect, align, restore, paste back.

The alignment and paste-back follow facexlib's FaceRestoreHelper (which A1111 uses), written here with
OpenCV because facexlib pulls basicsr-era code and a second OpenCV build.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from PIL import Image
from spandrel import ModelDescriptor, StateDict

from modules.postprocess.downloads import KNOWN_FACE_RESTORERS, ensure_model_file
from modules.postprocess.face_detection import DetectedFace, FaceDetector, FaceModelMissingError
from modules.postprocess.model_files import build_arch_registry, load_descriptor

logger = logging.getLogger(__name__)

FaceRestorerKind = Literal["GFPGAN", "CodeFormer"]
FACE_SIZE = 512
# facexlib's five-point FFHQ template for 512x512 faces (eyes, nose, mouth corners in image order).
FFHQ_TEMPLATE_512 = (
    (192.98138, 239.94708),
    (318.90277, 240.19360),
    (256.63416, 314.01935),
    (201.26117, 371.41043),
    (313.08905, 371.15118),
)
FACE_BORDER_COLOR = (132, 133, 135)  # facexlib's constant border (135, 133, 132 in BGR), here in RGB


@dataclass(frozen=True)
class AlignedFace:
    """A face warped to FACE_SIZE x FACE_SIZE and the affine matrix that did it."""

    pixels: np.ndarray
    matrix: np.ndarray


def find_face_restore_model(kind: FaceRestorerKind, models_dir: Path, allow_download: bool = True) -> Path:
    """The weight file for ``kind`` under ``models_dir`` (models/GFPGAN, models/Codeformer), as A1111 finds it.

    GFPGAN: the newest file with "GFPGAN" in its name; CodeFormer: the first .pth/.safetensors in the folder.
    Absent: downloaded with a progress bar when allowed and online, else a FaceModelMissingError naming the path.
    """
    known = next(model for model in KNOWN_FACE_RESTORERS if model.name == kind)
    folder = models_dir / known.folder
    candidates = sorted(folder.glob("*.pth")) + sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if kind == "GFPGAN":
        candidates = [path for path in candidates if "gfpgan" in path.name.lower()]
    if candidates:
        return candidates[-1] if kind == "GFPGAN" else candidates[0]
    if not allow_download:
        raise FaceModelMissingError(
            f"{kind} weights are missing: put {known.file_name} (from {known.url}) at {folder / known.file_name}"
        )
    return ensure_model_file(known, models_dir)


def align_face(rgb: np.ndarray, face: DetectedFace) -> AlignedFace:
    """Warp a face to the FFHQ 512 template by a similarity transform fitted to its five landmarks."""
    landmarks = np.asarray(face.landmarks, dtype=np.float32)
    template = np.asarray(FFHQ_TEMPLATE_512, dtype=np.float32)
    matrix, _ = cv2.estimateAffinePartial2D(landmarks, template, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError(f"cannot align the face at {face.box}: its landmarks are degenerate")
    pixels = cv2.warpAffine(
        rgb, matrix, (FACE_SIZE, FACE_SIZE), borderMode=cv2.BORDER_CONSTANT, borderValue=FACE_BORDER_COLOR
    )
    return AlignedFace(pixels=pixels, matrix=matrix)


def paste_face(canvas: np.ndarray, restored: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blend a restored 512 face back into ``canvas`` (float32 RGB) with a soft mask inside the face square.

    Returns the canvas with the face pasted and the mask (zero outside the warped, eroded face square).
    """
    height, width = canvas.shape[:2]
    inverse = cv2.invertAffineTransform(matrix)
    face = cv2.warpAffine(restored.astype(np.float32), inverse, (width, height), flags=cv2.INTER_LINEAR)
    square = np.ones((FACE_SIZE, FACE_SIZE), dtype=np.float32)
    mask = cv2.warpAffine(square, inverse, (width, height), flags=cv2.INTER_LINEAR)
    mask = cv2.erode(mask, np.ones((2, 2), np.uint8))
    edge = max(1, int(np.sqrt(mask.sum())) // 20)
    center = cv2.erode(mask, np.ones((edge * 2, edge * 2), np.uint8))
    soft = cv2.GaussianBlur(center, (edge * 2 + 1, edge * 2 + 1), 0)
    soft = np.where(mask > 0, soft, 0.0).astype(np.float32)[:, :, None]
    return soft * face + (1.0 - soft) * canvas, soft


class FaceRestorer:
    """A loaded GFPGAN or CodeFormer model with a face detector."""

    def __init__(self, descriptor: ModelDescriptor, detector: FaceDetector, name: str = "") -> None:
        if descriptor.purpose != "FaceSR":
            raise ValueError(f"{name or 'this model'} is a {descriptor.architecture.name} model, not a face restorer")
        self.descriptor = descriptor.eval()
        self.detector = detector
        self.name = name or descriptor.architecture.name

    @classmethod
    def from_file(cls, path: Path, detector: FaceDetector, device: torch.device | str | None = None) -> FaceRestorer:
        if not Path(path).is_file():
            raise FaceModelMissingError(f"face restoration weights are missing: put the file at {path}")
        descriptor = load_descriptor(Path(path), torch.device(device or "cpu"), build_arch_registry())
        return cls(descriptor, detector, name=descriptor.architecture.name)

    @classmethod
    def from_state_dict(
        cls, state_dict: StateDict, detector: FaceDetector, device: torch.device | str | None = None
    ) -> FaceRestorer:
        descriptor = build_arch_registry().load(state_dict).to(torch.device(device or "cpu"))
        return cls(descriptor, detector)

    @property
    def is_codeformer(self) -> bool:
        return self.descriptor.architecture.id == "CodeFormer"

    def restore(self, image: Image.Image, codeformer_weight: float = 0.5, visibility: float = 1.0) -> Image.Image:
        """Restore every detected face; ``visibility`` blends with the original; no face: the image unchanged.

        ``codeformer_weight`` is A1111's "CodeFormer weight": 0 is the strongest effect, 1 the weakest.
        """
        faces = self.detector.detect(image)
        if not faces or visibility <= 0:
            logger.info("restorer=%s faces=%d result=unchanged", self.name, len(faces))
            return image.copy()
        original = np.asarray(image.convert("RGB"))
        canvas = original.astype(np.float32)
        touched = np.zeros(original.shape[:2], dtype=bool)
        for face in faces:
            aligned = align_face(original, face)
            restored = self.restore_aligned(aligned.pixels, codeformer_weight)
            canvas, mask = paste_face(canvas, restored, aligned.matrix)
            touched |= mask[:, :, 0] > 0
        blended = original + min(visibility, 1.0) * (canvas - original)
        pixels = np.where(touched[:, :, None], np.clip(np.rint(blended), 0, 255).astype(np.uint8), original)
        logger.info("restorer=%s faces=%d visibility=%.2f", self.name, len(faces), visibility)
        return self._with_alpha(Image.fromarray(pixels, mode="RGB"), image)

    def restore_aligned(self, face: np.ndarray, codeformer_weight: float = 0.5) -> np.ndarray:
        """Run the model on one aligned 512x512 RGB uint8 face; returns the same shape and type."""
        tensor = torch.from_numpy(face.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1).unsqueeze(0)
        tensor = tensor.to(self.descriptor.device, self.descriptor.dtype)
        with torch.inference_mode():
            if self.is_codeformer:
                output = self.descriptor.model(tensor, weight=codeformer_weight)[0]
            else:
                output = self.descriptor.model(tensor, return_rgb=False)[0]
        output = ((output.float().clamp(-1, 1) + 1.0) * 127.5).round().byte()
        return output.squeeze(0).permute(1, 2, 0).cpu().numpy()

    @staticmethod
    def _with_alpha(result: Image.Image, source: Image.Image) -> Image.Image:
        if source.mode in {"RGBA", "LA"}:
            result.putalpha(source.getchannel("A"))
        return result
