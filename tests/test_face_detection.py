"""Face detection with the real weights from ../shared/testdata/face-detection: YuNet and RetinaFace alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import skimage.data
from PIL import Image

from modules.postprocess.face_detection import FaceModelMissingError, YuNetFaceDetector, box_overlap
from modules.postprocess.retinaface import FACE_DETECTOR_1MB_MOBILENET, RetinaFaceDetector

ASTRONAUT_FACE = (178.0, 63.0, 90.0, 113.0)
# (detector, least overlap with the reference box at the original size and at 2048 px)
OVERLAP = {"yunet": (0.7, 0.6), "retinaface": (0.5, 0.5)}


@pytest.fixture(scope="module", params=sorted(OVERLAP))
def detector(request, testdata: Path):
    folder = testdata / "face-detection"
    if request.param == "yunet":
        return request.param, YuNetFaceDetector(folder / "yunet.onnx")
    # The test file is the Face-Detector-1MB-with-landmark training (plain ReLU, anchors 10..256 px).
    return request.param, RetinaFaceDetector(
        folder / "retinaface-mobilenet0.25.pth", variant=FACE_DETECTOR_1MB_MOBILENET
    )


def test_finds_the_astronaut_face_with_five_landmarks_in_ffhq_order(detector) -> None:
    name, model = detector
    faces = model.detect(Image.fromarray(skimage.data.astronaut()))
    assert len(faces) == 1
    face = faces[0]
    assert box_overlap(face.box, ASTRONAUT_FACE) > OVERLAP[name][0]
    x, y, width, height = face.box
    assert all(x <= px <= x + width and y <= py <= y + height for px, py in face.landmarks)
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert left_eye[1] < nose[1] < mouth_left[1]
    if name == "retinaface":
        assert face.score > 0.9


def test_finds_no_face_in_coffee(detector) -> None:
    assert detector[1].detect(Image.fromarray(skimage.data.coffee())) == []


def test_large_image_is_detected_in_original_pixels(detector) -> None:
    name, model = detector
    image = Image.fromarray(skimage.data.astronaut()).resize((2048, 2048), Image.Resampling.LANCZOS)
    faces = model.detect(image)
    scaled = tuple(value * 4 for value in ASTRONAUT_FACE)
    assert len(faces) == 1 and box_overlap(faces[0].box, scaled) > OVERLAP[name][1]


def test_missing_weights_name_the_expected_path(tmp_path: Path) -> None:
    with pytest.raises(FaceModelMissingError, match=str(tmp_path / "yunet.onnx")):
        YuNetFaceDetector(tmp_path / "yunet.onnx")
