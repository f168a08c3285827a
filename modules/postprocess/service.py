"""The postprocessor the application builds once: image upscalers and face restoration by name."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from PIL import Image

from modules.options import Options
from modules.postprocess.face_detection import FaceDetector, YuNetFaceDetector
from modules.postprocess.face_restore import FaceRestorer, find_face_restore_model
from modules.postprocess.retinaface import RetinaFaceDetector, find_retinaface_model
from modules.postprocess.upscalers import UpscalerRegistry

logger = logging.getLogger(__name__)

FACE_RESTORERS = ("CodeFormer", "GFPGAN")
UPSCALER_FOLDERS = ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT")


class Postprocessor:
    """Upscales and restores faces with the user's settings; face models load on first use and stay."""

    def __init__(
        self, models_dir: Path, options: Options, detector_model: Path, extra_upscaler_folders: tuple[Path, ...] = ()
    ) -> None:
        self.models_dir = models_dir
        self.options = options
        self.detector_model = detector_model
        folders = [models_dir / name for name in UPSCALER_FOLDERS] + list(extra_upscaler_folders)
        self.upscalers = UpscalerRegistry(folders)
        self._restorers: dict[tuple[str, str], FaceRestorer] = {}
        self._lock = threading.Lock()

    def upscale(self, image: Image.Image, upscaler: str, size: tuple[int, int]) -> Image.Image:
        """Upscale "to" a size with the named upscaler and the tile settings."""
        return self.upscalers.upscale(
            image,
            upscaler,
            target_size=size,
            tile_size=self.options.ESRGAN_tile,
            tile_overlap=self.options.ESRGAN_tile_overlap,
        )

    def face_restorer(self, name: str) -> FaceRestorer:
        if name not in FACE_RESTORERS:
            raise ValueError(f"unknown face restorer {name!r}; choose {' or '.join(FACE_RESTORERS)}")
        key = (name, self.options.face_detector)
        with self._lock:
            if key not in self._restorers:
                path = find_face_restore_model(name, self.models_dir)
                self._restorers[key] = FaceRestorer.from_file(path, self.create_face_detector())
                logger.info("face restorer loaded name=%s detector=%s path=%s", name, key[1], path)
            return self._restorers[key]

    def create_face_detector(self) -> FaceDetector:
        """The detector the setting names: YuNet, or RetinaFace from facexlib's file (an error says where it goes)."""
        if self.options.face_detector == "RetinaFace":
            return RetinaFaceDetector(find_retinaface_model(self.models_dir))
        return YuNetFaceDetector(self.detector_model)

    def restore_faces(
        self,
        image: Image.Image,
        name: str | None = None,
        codeformer_weight: float | None = None,
        visibility: float | None = None,
    ) -> Image.Image:
        """Restore faces with the named model (default: the setting), weight and visibility from settings."""
        restorer = self.face_restorer(name or self.options.face_restoration_model)
        weight = self.options.code_former_weight if codeformer_weight is None else codeformer_weight
        shown = self.options.face_restoration_visibility if visibility is None else visibility
        return restorer.restore(image, codeformer_weight=weight, visibility=shown)
