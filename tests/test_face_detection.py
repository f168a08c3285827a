"""Face detection with the real YuNet weights from ../shared/testdata/face-detection."""

from __future__ import annotations

from pathlib import Path

import pytest
import skimage.data
from PIL import Image

from modules.postprocess.face_detection import FaceModelMissingError, YuNetFaceDetector, box_overlap

ASTRONAUT_FACE = (178.0, 63.0, 90.0, 113.0)


@pytest.fixture(scope="module")
def detector(testdata: Path) -> YuNetFaceDetector:
    return YuNetFaceDetector(testdata / "face-detection" / "yunet.onnx")


def test_finds_the_astronaut_face_with_five_landmarks(detector: YuNetFaceDetector) -> None:
    faces = detector.detect(Image.fromarray(skimage.data.astronaut()))
    assert len(faces) == 1
    face = faces[0]
    assert box_overlap(face.box, ASTRONAUT_FACE) > 0.7
    x, y, width, height = face.box
    assert all(x <= px <= x + width and y <= py <= y + height for px, py in face.landmarks)
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert left_eye[1] < nose[1] < mouth_left[1]


def test_finds_no_face_in_coffee(detector: YuNetFaceDetector) -> None:
    assert detector.detect(Image.fromarray(skimage.data.coffee())) == []


def test_large_image_is_detected_in_original_pixels(detector: YuNetFaceDetector) -> None:
    image = Image.fromarray(skimage.data.astronaut()).resize((2048, 2048), Image.Resampling.LANCZOS)
    faces = detector.detect(image)
    scaled = tuple(value * 4 for value in ASTRONAUT_FACE)
    assert len(faces) == 1 and box_overlap(faces[0].box, scaled) > 0.6


def test_missing_weights_name_the_expected_path(tmp_path: Path) -> None:
    with pytest.raises(FaceModelMissingError, match=str(tmp_path / "yunet.onnx")):
        YuNetFaceDetector(tmp_path / "yunet.onnx")
