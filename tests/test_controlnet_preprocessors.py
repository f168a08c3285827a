"""The model-free ControlNet preprocessors: the extension's names, defaults and what each makes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modules.controlnet.preprocessors import (
    PreprocessorError,
    find_preprocessor,
    pixel_perfect_resolution,
    preprocessor_names,
    run_preprocessor,
)
from modules.controlnet.units import ResizeMode


def picture() -> Image.Image:
    x = np.linspace(0, 255, 96, dtype=np.float32)
    array = np.stack([np.tile(x, (64, 1)), np.tile(x[::-1], (64, 1)), np.full((64, 96), 80.0)], axis=2)
    array[20:44, 30:60] = 255
    return Image.fromarray(array.astype(np.uint8))


def test_every_preprocessor_gives_an_rgb_map_at_the_processor_resolution() -> None:
    assert preprocessor_names()[:3] == ["none", "invert", "canny"]
    for name in preprocessor_names():
        if find_preprocessor(name).annotator is not None:
            continue
        result = run_preprocessor(name, picture(), resolution=128)
        has_resolution = find_preprocessor(name).resolution is not None
        assert result.mode == "RGB" and result.size == ((192, 128) if has_resolution else (96, 64)), name


def test_thresholds_act_and_minus_one_is_the_default() -> None:
    image = picture()
    default = np.asarray(run_preprocessor("threshold", image, 64))
    assert np.array_equal(default, np.asarray(run_preprocessor("threshold", image, 64, threshold_a=127)))
    assert not np.array_equal(default, np.asarray(run_preprocessor("threshold", image, 64, threshold_a=30)))
    few = np.asarray(run_preprocessor("canny", image, 64, 200, 250)).sum()
    many = np.asarray(run_preprocessor("canny", image, 64, 10, 20)).sum()
    assert few < many
    assert np.array_equal(np.asarray(run_preprocessor("invert", image)), 255 - np.asarray(image))
    blurred = np.asarray(run_preprocessor("blur_gaussian", image, 64, threshold_a=4)).astype(int)
    assert np.abs(np.diff(blurred, axis=1)).max() < np.abs(np.diff(np.asarray(image).astype(int), axis=1)).max()
    assert run_preprocessor("tile_resample", image, threshold_a=2).size == (48, 32)
    first = np.asarray(run_preprocessor("shuffle", image, 64, seed=1))
    assert not np.array_equal(first, np.asarray(run_preprocessor("shuffle", image, 64, seed=2)))


def test_pixel_perfect_and_unknown_names() -> None:
    assert pixel_perfect_resolution((96, 64), (512, 512), ResizeMode.INNER_FIT) == 512
    assert pixel_perfect_resolution((96, 64), (512, 512), ResizeMode.OUTER_FIT) == 341
    assert find_preprocessor("t2ia_color_grid").name == "color"
    with pytest.raises(PreprocessorError, match="unknown ControlNet preprocessor 'depth_zoe2'"):
        run_preprocessor("depth_zoe2", picture())


def test_a_model_based_preprocessor_without_its_weights_names_the_file_and_folder(tmp_path) -> None:
    from modules.controlnet.annotators import AnnotatorRunner

    runner = AnnotatorRunner(tmp_path / "annotators")
    with pytest.raises(PreprocessorError, match=r"softedge_hed needs ControlNetHED.pth in .*annotators"):
        run_preprocessor("softedge_hed", picture(), annotators=runner)
    with pytest.raises(PreprocessorError, match=r"openpose needs body_pose_model.pth, hand_pose_model.pth"):
        run_preprocessor("openpose", picture(), annotators=runner)
    assert find_preprocessor("depth_midas").details()["model_free"] is False


@pytest.mark.slow  # importing controlnet-aux takes seconds
def test_hed_runs_through_controlnet_aux_with_weights_from_the_folder(tmp_path) -> None:
    import torch
    from controlnet_aux.hed import ControlNetHED_Apache2

    from modules.controlnet.annotators import AnnotatorRunner

    folder = tmp_path / "annotators"
    folder.mkdir()
    torch.manual_seed(0)
    torch.save(ControlNetHED_Apache2().state_dict(), folder / "ControlNetHED.pth")
    result = run_preprocessor("softedge_hed", picture(), resolution=64, annotators=AnnotatorRunner(folder))
    assert result.mode == "RGB" and min(result.size) == 64


def test_the_segmentation_preprocessor_without_its_folder_names_the_files_and_where_they_come_from(tmp_path) -> None:
    from modules.controlnet.annotators import AnnotatorRunner
    from modules.controlnet.preprocessors import control_type

    runner = AnnotatorRunner(tmp_path / "annotators")
    with pytest.raises(
        PreprocessorError,
        match=r"seg_upernet_ade20k needs upernet-convnext-small/config.json, .*model.safetensors in .*annotators "
        r"\(no download here: get the file from https://huggingface.co/openmmlab/upernet-convnext-small",
    ):
        run_preprocessor("seg_upernet_ade20k", picture(), annotators=runner)
    segmentation = control_type("Segmentation", ["control_v11p_sd15_seg [abcd1234]", "control_canny"])
    assert segmentation["default_option"] == "seg_upernet_ade20k"
    assert segmentation["model_list"] == ["None", "control_v11p_sd15_seg [abcd1234]"]


@pytest.mark.slow  # importing transformers' UperNet and controlnet-aux's palette takes seconds
def test_segmentation_runs_a_transformers_model_from_the_folder_in_the_ade20k_colours(tmp_path) -> None:
    import torch
    from controlnet_aux.util import ade_palette
    from transformers import ConvNextConfig, SegformerImageProcessor, UperNetConfig, UperNetForSemanticSegmentation

    from modules.controlnet.annotators import AnnotatorRunner

    folder = tmp_path / "annotators" / "upernet-convnext-small"
    torch.manual_seed(0)
    backbone = ConvNextConfig(
        hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], out_features=["stage1", "stage2", "stage3", "stage4"]
    )
    config = UperNetConfig(backbone_config=backbone, hidden_size=16, num_labels=150, use_auxiliary_head=False)
    UperNetForSemanticSegmentation(config).save_pretrained(folder)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    result = run_preprocessor("seg_upernet_ade20k", picture(), resolution=64, annotators=AnnotatorRunner(folder.parent))
    colours = {tuple(colour) for colour in np.asarray(result).reshape(-1, 3)}
    assert result.size == (96, 64)
    assert len(colours) > 1 and colours <= {tuple(colour) for colour in ade_palette()}


def test_a_missing_annotator_file_is_downloaded_from_the_hub_into_the_folder(tmp_path, caplog) -> None:
    import logging

    from modules.controlnet.annotators import ANNOTATORS_REPO, AnnotatorRunner, find_annotator
    from modules.hub.client import HubClient
    from tests.hub_server import FakeRepo, serve_hub

    served = {"body_pose_model.pth": b"body" * 300, "hand_pose_model.pth": b"hand" * 200, "facenet.pth": b"f" * 50}
    folder = tmp_path / "annotators"
    (folder).mkdir()
    (folder / "facenet.pth").write_bytes(b"already here")  # only the missing files are fetched
    openpose = find_annotator("openpose")
    with serve_hub() as hub, caplog.at_level(logging.INFO, logger="modules.controlnet.annotators"):
        hub.add(FakeRepo(ANNOTATORS_REPO, {**served, "sk_model.pth": b"other"}))
        runner = AnnotatorRunner(folder, HubClient(endpoint=hub.url))
        assert runner.missing(openpose) == ["body_pose_model.pth", "hand_pose_model.pth"]
        runner.fetch_missing(openpose)
    assert runner.missing(openpose) == []
    assert (folder / "body_pose_model.pth").read_bytes() == served["body_pose_model.pth"]
    assert (folder / "hand_pose_model.pth").read_bytes() == served["hand_pose_model.pth"]
    assert (folder / "facenet.pth").read_bytes() == b"already here"
    assert not (folder / "sk_model.pth").exists()
    assert "annotator download done" in caplog.text and "2.0 KiB / 2.0 KiB (100%)" in caplog.text


def test_with_the_hub_offline_a_missing_annotator_file_is_named_with_its_folder(tmp_path) -> None:
    from modules.controlnet.annotators import AnnotatorRunner
    from modules.hub.client import HubClient

    # conftest keeps HF_HUB_OFFLINE=1 and no fake hub runs: huggingface_hub refuses the request
    runner = AnnotatorRunner(tmp_path / "annotators", HubClient(endpoint="http://127.0.0.1:9"))
    with pytest.raises(
        PreprocessorError,
        match=r"softedge_hed needs ControlNetHED.pth in .*annotators \(download from lllyasviel/Annotators failed: "
        r".*get the file from https://huggingface.co/lllyasviel/Annotators and put it in that folder",
    ):
        run_preprocessor("softedge_hed", picture(), annotators=runner)
    assert not (tmp_path / "annotators" / "ControlNetHED.pth").exists()


@pytest.mark.slow  # importing controlnet-aux takes seconds
def test_hed_downloaded_from_the_hub_then_runs(tmp_path) -> None:
    import io

    import torch
    from controlnet_aux.hed import ControlNetHED_Apache2

    from modules.controlnet.annotators import ANNOTATORS_REPO, AnnotatorRunner
    from modules.hub.client import HubClient
    from tests.hub_server import FakeRepo, serve_hub

    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(ControlNetHED_Apache2().state_dict(), buffer)
    with serve_hub() as hub:
        hub.add(FakeRepo(ANNOTATORS_REPO, {"ControlNetHED.pth": buffer.getvalue()}))
        runner = AnnotatorRunner(tmp_path / "annotators", HubClient(endpoint=hub.url))
        result = run_preprocessor("softedge_hed", picture(), resolution=64, annotators=runner)
    assert result.mode == "RGB" and min(result.size) == 64
    assert (tmp_path / "annotators" / "ControlNetHED.pth").read_bytes() == buffer.getvalue()
