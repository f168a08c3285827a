"""RetinaFace specifics with the real mobilenet0.25 weights (what both detectors do: test_face_detection.py)."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

from modules.postprocess.face_detection import FaceModelMissingError
from modules.postprocess.retinaface import (
    FACEXLIB_MOBILENET,
    RetinaFaceDetector,
    RetinaFaceNetwork,
    RetinaFaceWeightsError,
    load_retinaface_state,
    prior_boxes,
)


@pytest.fixture(scope="module")
def weights(testdata: Path) -> Path:
    return testdata / "face-detection" / "retinaface-mobilenet0.25.pth"


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
