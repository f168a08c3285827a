"""Face detection with RetinaFace (MobileNetV1 0.25 backbone): boxes and five landmarks.

Written by hand: the network, its prior boxes and its box/landmark decoding come from the RetinaFace paper's
reference code (biubug6's Pytorch_Retinaface, which facexlib copies), and no maintained library ships them
without basicsr/facexlib, which pull opencv-python beside opencv-python-headless and basicsr-era code.
The module names match the weight files' keys (facexlib's detection_mobilenet0.25_Final.pth, as A1111 uses it),
so ``load_state_dict`` reads them unchanged. Non-maximum suppression is torchvision's.
"""

from __future__ import annotations

import logging
import math
import pickle
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.ops import nms

from modules.postprocess.face_detection import DetectedFace, FaceModelMissingError, require_file

logger = logging.getLogger(__name__)

RETINAFACE_FILE_NAME = "detection_mobilenet0.25_Final.pth"  # facexlib's name; A1111 keeps it in models/GFPGAN
RETINAFACE_FOLDERS = ("GFPGAN", "face-detection")
BGR_MEAN = (104.0, 117.0, 123.0)  # the network was trained on BGR pixels in 0..255 minus this mean


@dataclass(frozen=True)
class RetinaFaceVariant:
    """What a mobilenet0.25 weight file does not record: its activations' negative slope and its anchors.

    Two trainings share the same module names and shapes: biubug6's Pytorch_Retinaface (facexlib's
    detection_mobilenet0.25_Final.pth, leaky ReLU 0.1, anchors 16..512 px) and biubug6's
    Face-Detector-1MB-with-landmark (plain ReLU, anchors 10..256 px). Running a file with the other's
    settings gives misplaced boxes and false faces, so the caller names the variant.
    """

    name: str
    leaky: float
    min_sizes: tuple[tuple[int, ...], ...]
    steps: tuple[int, ...] = (8, 16, 32)
    variances: tuple[float, float] = (0.1, 0.2)


FACEXLIB_MOBILENET = RetinaFaceVariant("facexlib", leaky=0.1, min_sizes=((16, 32), (64, 128), (256, 512)))
FACE_DETECTOR_1MB_MOBILENET = RetinaFaceVariant(
    "face-detector-1mb", leaky=0.0, min_sizes=((10, 20), (32, 64), (128, 256))
)


class RetinaFaceWeightsError(ValueError):
    """A RetinaFace weight file that cannot be read safely or does not fit the mobilenet0.25 network."""


def conv_bn(inputs: int, outputs: int, stride: int = 1, leaky: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


def conv_bn_no_relu(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, 1, 1, bias=False), nn.BatchNorm2d(outputs))


def conv_bn_1x1(inputs: int, outputs: int, leaky: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 1, 1, 0, bias=False),
        nn.BatchNorm2d(outputs),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


def conv_depthwise(inputs: int, outputs: int, stride: int, leaky: float) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1, each with batch norm and leaky ReLU (MobileNetV1's block)."""
    return nn.Sequential(
        nn.Conv2d(inputs, inputs, 3, stride, 1, groups=inputs, bias=False),
        nn.BatchNorm2d(inputs),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(inputs, outputs, 1, 1, 0, bias=False),
        nn.BatchNorm2d(outputs),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


class MobileNetBody(nn.Module):
    """MobileNetV1 at width 0.25, cut after its three stages (strides 8, 16, 32)."""

    def __init__(self, leaky: float) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, 2, leaky),
            conv_depthwise(8, 16, 1, leaky),
            conv_depthwise(16, 32, 2, leaky),
            conv_depthwise(32, 32, 1, leaky),
            conv_depthwise(32, 64, 2, leaky),
            conv_depthwise(64, 64, 1, leaky),
        )
        self.stage2 = nn.Sequential(
            conv_depthwise(64, 128, 2, leaky), *(conv_depthwise(128, 128, 1, leaky) for _ in range(5))
        )
        self.stage3 = nn.Sequential(conv_depthwise(128, 256, 2, leaky), conv_depthwise(256, 256, 1, leaky))

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        first = self.stage1(pixels)
        second = self.stage2(first)
        return [first, second, self.stage3(second)]


class FeaturePyramid(nn.Module):
    """Top-down feature pyramid: 1x1 lateral convolutions, nearest upsampling, 3x3 merges."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, leaky: float) -> None:
        super().__init__()
        self.output1 = conv_bn_1x1(in_channels[0], out_channels, leaky)
        self.output2 = conv_bn_1x1(in_channels[1], out_channels, leaky)
        self.output3 = conv_bn_1x1(in_channels[2], out_channels, leaky)
        self.merge1 = conv_bn(out_channels, out_channels, leaky=leaky)
        self.merge2 = conv_bn(out_channels, out_channels, leaky=leaky)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        output1, output2, output3 = self.output1(features[0]), self.output2(features[1]), self.output3(features[2])
        output2 = self.merge2(output2 + F.interpolate(output3, size=output2.shape[2:], mode="nearest"))
        output1 = self.merge1(output1 + F.interpolate(output2, size=output1.shape[2:], mode="nearest"))
        return [output1, output2, output3]


class ContextModule(nn.Module):
    """SSH context module: 3x3, 5x5 and 7x7 receptive fields (stacked 3x3 convolutions), concatenated."""

    def __init__(self, in_channels: int, out_channels: int, leaky: float) -> None:
        super().__init__()
        quarter = out_channels // 4
        self.conv3X3 = conv_bn_no_relu(in_channels, out_channels // 2)
        self.conv5X5_1 = conv_bn(in_channels, quarter, leaky=leaky)
        self.conv5X5_2 = conv_bn_no_relu(quarter, quarter)
        self.conv7X7_2 = conv_bn(quarter, quarter, leaky=leaky)
        self.conv7x7_3 = conv_bn_no_relu(quarter, quarter)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        branch5_start = self.conv5X5_1(features)
        branch3 = self.conv3X3(features)
        branch5 = self.conv5X5_2(branch5_start)
        branch7 = self.conv7x7_3(self.conv7X7_2(branch5_start))
        return F.relu(torch.cat([branch3, branch5, branch7], dim=1))


class AnchorHead(nn.Module):
    """A 1x1 convolution giving ``values`` numbers per anchor, flattened to (batch, anchors, values)."""

    def __init__(self, in_channels: int, anchors: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(in_channels, anchors * values, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(features).permute(0, 2, 3, 1).contiguous()
        return out.view(out.shape[0], -1, self.values)


class RetinaFaceNetwork(nn.Module):
    """RetinaFace, mobilenet0.25 body: per anchor, box offsets (4), face and background scores (2), landmarks (10)."""

    def __init__(self, leaky: float, channels: int = 64, anchors: int = 2) -> None:
        super().__init__()
        self.body = MobileNetBody(leaky)
        self.fpn = FeaturePyramid((64, 128, 256), channels, leaky)
        self.ssh1 = ContextModule(channels, channels, leaky)
        self.ssh2 = ContextModule(channels, channels, leaky)
        self.ssh3 = ContextModule(channels, channels, leaky)
        self.ClassHead = nn.ModuleList(AnchorHead(channels, anchors, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(AnchorHead(channels, anchors, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(AnchorHead(channels, anchors, 10) for _ in range(3))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Box offsets, face probabilities (softmax over face/background), landmark offsets."""
        pyramid = self.fpn(self.body(pixels))
        features = [self.ssh1(pyramid[0]), self.ssh2(pyramid[1]), self.ssh3(pyramid[2])]
        boxes = torch.cat([head(feature) for head, feature in zip(self.BboxHead, features, strict=True)], dim=1)
        scores = torch.cat([head(feature) for head, feature in zip(self.ClassHead, features, strict=True)], dim=1)
        marks = torch.cat([head(feature) for head, feature in zip(self.LandmarkHead, features, strict=True)], dim=1)
        return boxes, F.softmax(scores, dim=-1), marks


def prior_boxes(height: int, width: int, variant: RetinaFaceVariant) -> torch.Tensor:
    """Anchors (centre x, centre y, width, height) as fractions of the image, in the network's output order.

    Per level: rows, then columns, then the level's sizes (the heads' flattening order).
    """
    levels = []
    for sizes, step in zip(variant.min_sizes, variant.steps, strict=True):
        rows = (torch.arange(math.ceil(height / step), dtype=torch.float32) + 0.5) * step / height
        columns = (torch.arange(math.ceil(width / step), dtype=torch.float32) + 0.5) * step / width
        centre_y, centre_x = torch.meshgrid(rows, columns, indexing="ij")
        centres = torch.stack((centre_x, centre_y), dim=-1).reshape(-1, 1, 2).expand(-1, len(sizes), 2)
        extents = torch.tensor([(size / width, size / height) for size in sizes]).expand(centres.shape[0], -1, 2)
        levels.append(torch.cat((centres, extents), dim=-1).reshape(-1, 4))
    return torch.cat(levels)


def decode_boxes(offsets: torch.Tensor, priors: torch.Tensor, variances: tuple[float, float]) -> torch.Tensor:
    """Box offsets to corners (x1, y1, x2, y2) as fractions of the image."""
    centres = priors[:, :2] + offsets[:, :2] * variances[0] * priors[:, 2:]
    sizes = priors[:, 2:] * torch.exp(offsets[:, 2:] * variances[1])
    return torch.cat((centres - sizes / 2, centres + sizes / 2), dim=1)


def decode_landmarks(offsets: torch.Tensor, priors: torch.Tensor, variances: tuple[float, float]) -> torch.Tensor:
    """Landmark offsets (anchors, 10) to five (x, y) points as fractions of the image, shape (anchors, 5, 2)."""
    points = offsets.view(-1, 5, 2)
    return priors[:, None, :2] + points * variances[0] * priors[:, None, 2:]


def find_retinaface_model(models_dir: Path) -> Path:
    """facexlib's RetinaFace file in models/GFPGAN (where A1111 keeps it) or models/face-detection."""
    candidates = [models_dir / folder / RETINAFACE_FILE_NAME for folder in RETINAFACE_FOLDERS]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FaceModelMissingError(
        f"RetinaFace detector weights are missing: put {RETINAFACE_FILE_NAME} at {candidates[0]} or {candidates[1]}"
    )


def load_retinaface_state(path: Path) -> dict[str, torch.Tensor]:
    """The weights of a RetinaFace file, read without unpickling code (``weights_only``), ``module.`` stripped."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as error:
        raise RetinaFaceWeightsError(f"{path} is not a RetinaFace weight file that loads safely: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise RetinaFaceWeightsError(f"{path} holds a {type(state).__name__}, not a RetinaFace state dict")
    return {key.removeprefix("module."): value for key, value in state.items()}


def build_retinaface(path: Path, variant: RetinaFaceVariant) -> RetinaFaceNetwork:
    """The mobilenet0.25 RetinaFace with the file's weights, in eval mode."""
    network = RetinaFaceNetwork(variant.leaky)
    try:
        network.load_state_dict(load_retinaface_state(path))
    except RuntimeError as error:
        raise RetinaFaceWeightsError(f"{path} does not fit RetinaFace mobilenet0.25: {error}") from error
    return network.eval()


class RetinaFaceDetector:
    """RetinaFace mobilenet0.25. Large images are scaled down to ``max_side``; results are in image pixels."""

    def __init__(
        self,
        model_path: Path,
        score_threshold: float = 0.9,
        nms_threshold: float = 0.4,
        max_side: int = 1280,
        device: torch.device | str = "cpu",
        variant: RetinaFaceVariant = FACEXLIB_MOBILENET,
    ) -> None:
        self.model_path = require_file(Path(model_path), "RetinaFace face detector")
        self.variant = variant
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        self.device = torch.device(device)
        self._lock = threading.Lock()
        self._network: RetinaFaceNetwork | None = None

    def detect(self, image: Image.Image) -> list[DetectedFace]:
        factor = min(1.0, self.max_side / max(image.size))
        working = image.convert("RGB")
        if factor < 1.0:
            working = working.resize(
                (round(image.width * factor), round(image.height * factor)), Image.Resampling.LANCZOS
            )
        pixels = self._pixels_from_image(working)
        with self._lock, torch.inference_mode():
            offsets, scores, marks = self._get_network()(pixels)
        faces = self._faces_from_outputs(offsets[0], scores[0, :, 1], marks[0], working.size, 1.0 / factor)
        logger.debug("detector=retinaface faces=%d size=%dx%d", len(faces), image.width, image.height)
        return sorted(faces, key=lambda face: face.box[2] * face.box[3], reverse=True)

    def _pixels_from_image(self, image: Image.Image) -> torch.Tensor:
        bgr = np.asarray(image, dtype=np.float32)[:, :, ::-1] - np.array(BGR_MEAN, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))[None].to(self.device)

    def _faces_from_outputs(
        self,
        offsets: torch.Tensor,
        scores: torch.Tensor,
        marks: torch.Tensor,
        size: tuple[int, int],
        factor: float,
    ) -> list[DetectedFace]:
        width, height = size
        priors = prior_boxes(height, width, self.variant).to(offsets.device)
        keep = scores > self.score_threshold
        scale = torch.tensor([width, height], dtype=torch.float32, device=offsets.device)
        corners = decode_boxes(offsets[keep], priors[keep], self.variant.variances) * scale.repeat(2)
        points = decode_landmarks(marks[keep], priors[keep], self.variant.variances) * scale
        kept_scores = scores[keep]
        chosen = nms(corners, kept_scores, self.nms_threshold)
        return [face_from_corners(corners[index], points[index], float(kept_scores[index]), factor) for index in chosen]

    def _get_network(self) -> RetinaFaceNetwork:
        if self._network is None:
            self._network = build_retinaface(self.model_path, self.variant).to(self.device)
            logger.info("face detector loaded name=retinaface variant=%s path=%s", self.variant.name, self.model_path)
        return self._network


def face_from_corners(corners: torch.Tensor, points: torch.Tensor, score: float, factor: float) -> DetectedFace:
    """A DetectedFace from (x1, y1, x2, y2) and five points, scaled by ``factor``.

    RetinaFace's landmarks come in image order (eye on the image's left first), the FFHQ template's order.
    """
    x1, y1, x2, y2 = (float(value) * factor for value in corners)
    landmarks = tuple((float(x) * factor, float(y) * factor) for x, y in points.tolist())
    return DetectedFace(box=(x1, y1, x2 - x1, y2 - y1), landmarks=landmarks, score=score)
