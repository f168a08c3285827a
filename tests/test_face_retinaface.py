"""RetinaFace face detection with the real mobilenet0.25 weights from ../shared/testdata/face-detection."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path

import pytest
import skimage.data
import torch
from PIL import Image

from modules.postprocess.face_detection import FaceModelMissingError, box_overlap
from modules.postprocess.retinaface import (
    FACE_DETECTOR_1MB_MOBILENET,
    FACEXLIB_MOBILENET,
    RetinaFaceDetector,
    RetinaFaceNetwork,
    RetinaFaceWeightsError,
    load_retinaface_state,
    prior_boxes,
)

ASTRONAUT_FACE = (178.0, 63.0, 90.0, 113.0)


@pytest.fixture(scope="module")
def weights(testdata: Path) -> Path:
    return testdata / "face-detection" / "retinaface-mobilenet0.25.pth"


@pytest.fixture(scope="module")
def detector(weights: Path) -> RetinaFaceDetector:
    # The test file is the Face-Detector-1MB-with-landmark training (plain ReLU, anchors 10..256 px).
    return RetinaFaceDetector(weights, variant=FACE_DETECTOR_1MB_MOBILENET)


def test_finds_the_astronaut_face_with_five_landmarks_in_ffhq_order(detector: RetinaFaceDetector) -> None:
    faces = detector.detect(Image.fromarray(skimage.data.astronaut()))
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.9
    assert box_overlap(face.box, ASTRONAUT_FACE) > 0.5
    x, y, width, height = face.box
    assert all(x <= px <= x + width and y <= py <= y + height for px, py in face.landmarks)
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert left_eye[1] < nose[1] < mouth_left[1]


def test_finds_no_face_in_coffee(detector: RetinaFaceDetector) -> None:
    assert detector.detect(Image.fromarray(skimage.data.coffee())) == []


def test_large_image_is_detected_in_original_pixels(detector: RetinaFaceDetector) -> None:
    image = Image.fromarray(skimage.data.astronaut()).resize((2048, 2048), Image.Resampling.LANCZOS)
    faces = detector.detect(image)
    scaled = tuple(value * 4 for value in ASTRONAUT_FACE)
    assert len(faces) == 1 and box_overlap(faces[0].box, scaled) > 0.5


def test_weights_fit_the_network_key_for_key(weights: Path) -> None:
    state = load_retinaface_state(weights)
    assert set(state) == set(RetinaFaceNetwork(leaky=0.1).state_dict())


def test_module_prefix_of_data_parallel_files_is_removed(weights: Path, tmp_path: Path) -> None:
    prefixed = tmp_path / "prefixed.pth"
    torch.save({f"module.{key}": value for key, value in load_retinaface_state(weights).items()}, prefixed)
    assert set(load_retinaface_state(prefixed)) == set(load_retinaface_state(weights))


def test_priors_follow_the_heads_order() -> None:
    """The vectorised anchors equal the reference loop: level, row, column, size."""
    height, width = 40, 56
    expected = []
    for sizes, step in zip(FACEXLIB_MOBILENET.min_sizes, FACEXLIB_MOBILENET.steps, strict=True):
        rows, columns = -(-height // step), -(-width // step)
        for row, column in itertools.product(range(rows), range(columns)):
            for size in sizes:
                expected.append(
                    ((column + 0.5) * step / width, (row + 0.5) * step / height, size / width, size / height)
                )
    assert torch.allclose(prior_boxes(height, width, FACEXLIB_MOBILENET), torch.tensor(expected))


def test_file_that_needs_code_to_unpickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "detection_mobilenet0.25_Final.pth"
    path.write_bytes(pickle.dumps(Path("not-a-tensor"), protocol=2))
    detector = RetinaFaceDetector(path)
    with pytest.raises(RetinaFaceWeightsError, match="loads safely"):
        detector.detect(Image.new("RGB", (64, 64)))


def test_missing_weights_name_the_expected_path(tmp_path: Path) -> None:
    with pytest.raises(FaceModelMissingError, match=str(tmp_path / "detection_mobilenet0.25_Final.pth")):
        RetinaFaceDetector(tmp_path / "detection_mobilenet0.25_Final.pth")


def test_setting_chooses_retinaface_from_the_a1111_folder(weights: Path, tmp_path: Path) -> None:
    from modules.options import Options
    from modules.postprocess.face_detection import YuNetFaceDetector
    from modules.postprocess.service import Postprocessor

    yunet = tmp_path / "yunet.onnx"
    yunet.write_bytes(b"")
    postprocessor = Postprocessor(tmp_path / "models", Options(), yunet)
    assert isinstance(postprocessor.create_face_detector(), YuNetFaceDetector)
    postprocessor.options.face_detector = "RetinaFace"
    with pytest.raises(FaceModelMissingError, match="GFPGAN"):
        postprocessor.create_face_detector()
    target = tmp_path / "models" / "GFPGAN" / "detection_mobilenet0.25_Final.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(weights.read_bytes())
    detector = postprocessor.create_face_detector()
    assert isinstance(detector, RetinaFaceDetector) and detector.model_path == target
