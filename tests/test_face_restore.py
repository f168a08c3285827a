"""Face restore plumbing with randomly initialised GFPGAN and CodeFormer architectures described by spandrel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from modules.postprocess.face_detection import FaceModelMissingError, YuNetFaceDetector
from modules.postprocess.face_restore import FaceRestorer, align_face, find_face_restore_model, paste_face

FACE_BOX = (178, 63, 90, 113)


@pytest.fixture(scope="module")
def detector(testdata: Path) -> YuNetFaceDetector:
    return YuNetFaceDetector(testdata / "face-detection" / "yunet.onnx")


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skimage.data.astronaut())


def far_from_face(shape: tuple[int, int]) -> np.ndarray:
    """Pixels more than one face width/height away from the face box."""
    x, y, width, height = FACE_BOX
    far = np.ones(shape, dtype=bool)
    far[max(0, y - height) : y + 2 * height, max(0, x - width) : x + 2 * width] = False
    return far


def random_restorer(kind: str, detector: YuNetFaceDetector) -> FaceRestorer:
    torch.manual_seed(0)
    if kind == "GFPGAN":
        from spandrel.architectures.GFPGAN import GFPGAN

        architecture = GFPGAN()
    else:
        from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

        architecture = CodeFormer()
    return FaceRestorer.from_state_dict(architecture.state_dict(), detector)


def assert_only_face_changed(source: Image.Image, result: Image.Image) -> None:
    before, after = np.asarray(source), np.asarray(result)
    changed = (before != after).any(axis=-1)
    assert changed[FACE_BOX[1] : FACE_BOX[1] + FACE_BOX[3], FACE_BOX[0] : FACE_BOX[0] + FACE_BOX[2]].mean() > 0.9
    assert not changed[far_from_face(changed.shape)].any()


def test_align_then_paste_an_unchanged_face_is_near_identity(
    detector: YuNetFaceDetector, astronaut: Image.Image
) -> None:
    face = detector.detect(astronaut)[0]
    rgb = np.asarray(astronaut)
    aligned = align_face(rgb, face)
    assert aligned.pixels.shape == (512, 512, 3)
    pasted, mask = paste_face(rgb.astype(np.float32), aligned.pixels, aligned.matrix)
    x, y, width, height = FACE_BOX
    inner = np.s_[y + 20 : y + height - 20, x + 20 : x + width - 20]
    assert mask[inner].min() > 0.99
    assert np.abs(pasted[inner] - rgb[inner]).mean() < 6.0  # two bilinear warps, upsampled then down
    assert np.array_equal(pasted[far_from_face(mask.shape[:2])], rgb[far_from_face(mask.shape[:2])])


def test_missing_weights_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(FaceModelMissingError, match=str(tmp_path / "Codeformer" / "codeformer-v0.1.0.pth")):
        find_face_restore_model("CodeFormer", tmp_path, allow_download=False)
    with pytest.raises(FaceModelMissingError, match=str(tmp_path / "GFPGAN")):
        FaceRestorer.from_file(tmp_path / "GFPGAN" / "GFPGANv1.4.pth", detector=None)  # type: ignore[arg-type]


def test_finds_gfpgan_weights_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "GFPGAN"
    folder.mkdir()
    for name in ("GFPGANv1.3.pth", "GFPGANv1.4.pth", "detection_Resnet50_Final.pth"):
        (folder / name).write_bytes(b"")
    assert find_face_restore_model("GFPGAN", tmp_path, allow_download=False).name == "GFPGANv1.4.pth"


@pytest.mark.slow
def test_no_face_comes_back_byte_identical(detector: YuNetFaceDetector) -> None:
    coffee = Image.fromarray(skimage.data.coffee())
    result = random_restorer("GFPGAN", detector).restore(coffee)
    assert result.tobytes() == coffee.tobytes() and result.size == coffee.size


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["GFPGAN", "CodeFormer"])
def test_random_restorer_changes_only_the_face(kind: str, detector: YuNetFaceDetector, astronaut: Image.Image) -> None:
    restorer = random_restorer(kind, detector)
    assert restorer.name == kind
    assert_only_face_changed(astronaut, restorer.restore(astronaut, codeformer_weight=0.7, visibility=1.0))


@pytest.mark.slow
def test_visibility_zero_is_unchanged_and_half_is_between(detector: YuNetFaceDetector, astronaut: Image.Image) -> None:
    restorer = random_restorer("GFPGAN", detector)
    assert restorer.restore(astronaut, visibility=0.0).tobytes() == astronaut.tobytes()
    torch.manual_seed(1)
    full = np.asarray(restorer.restore(astronaut, visibility=1.0), dtype=np.float64)
    torch.manual_seed(1)
    half = np.asarray(restorer.restore(astronaut, visibility=0.5), dtype=np.float64)
    source = np.asarray(astronaut, dtype=np.float64)
    assert np.abs(half - (source + full) / 2).max() <= 1.0
