"""The segmentation preprocessor through transformers (controlnet-aux 0.0.10 has no ADE20k segmenter): a semantic
segmentation model (UperNet ConvNeXt on ADE20k, the one diffusers' seg ControlNet example uses) read offline from a
transformers folder, its class map coloured with the ADE20k palette the seg ControlNets were trained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


class SemanticSegmenter:
    """Called like a controlnet-aux detector: ``segmenter(image, detect_resolution=, image_resolution=)``."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

        self.processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        self.model = AutoModelForSemanticSegmentation.from_pretrained(folder, local_files_only=True).eval()

    def __call__(
        self, image: Image.Image, detect_resolution: int = 512, image_resolution: int = 512, **_: object
    ) -> Image.Image:
        image = image.convert("RGB")
        scale = detect_resolution / min(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
        inputs = self.processor(images=image, return_tensors="pt")
        with torch.inference_mode():
            outputs = self.model(**inputs)
        classes = self.processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]
        table = palette()
        colours = table[classes.numpy() % len(table)]
        result = Image.fromarray(colours.astype(np.uint8))
        if image_resolution != detect_resolution:
            scale = image_resolution / min(result.size)
            target = (max(1, round(result.width * scale)), max(1, round(result.height * scale)))
            result = result.resize(target, Image.Resampling.NEAREST)  # class colours stay exact
        return result


def palette() -> np.ndarray:
    """ADE20k's 150 class colours (controlnet-aux keeps the table)."""
    from controlnet_aux.util import ade_palette

    return np.asarray(ade_palette(), dtype=np.uint8)
