"""img2img > Batch: folders under the settings policy, masks by name, "PNG info", outputs named after the inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from modules.generation import GenerationService
from modules.processing.infotext import read_infotext
from modules.settings_policy import SettingsPolicy, SettingsRefusedError
from modules.ui import handlers
from modules.ui.img2img_batch import build_batch_job, png_info_fields, stream_batch
from modules.ui.messages import InputError

VALUES = {
    "prompt": "a cat",
    "negative_prompt": "blurry",
    "steps": 2.0,
    "sampler_name": "Euler",
    "scheduler": "Automatic",
    "cfg_scale": 6.5,
    "width": 64.0,
    "height": 64.0,
    "seed": 42,
    "batch_size": 1.0,
    "n_iter": 1.0,
    "denoising_strength": 0.5,
    "resize_mode": "Just resize",
    "mode": handlers.BATCH_MODE,
}
INFOTEXT = "a dog\nNegative prompt: dark\nSteps: 3, Sampler: DPM++ 2M Karras, CFG scale: 4, Seed: 7, Size: 64x64"


def write_png(path: Path, colour: tuple[int, int, int], infotext: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    if infotext:
        info.add_text("parameters", infotext)
    Image.new("RGB", (64, 64), colour).save(path, pnginfo=info)
    return path


def no_checkpoint(_: str) -> str | None:
    return None


@pytest.fixture
def folders(tmp_path: Path) -> SettingsPolicy:
    write_png(tmp_path / "in" / "a.png", (200, 0, 0), INFOTEXT)
    write_png(tmp_path / "in" / "b.png", (0, 0, 200))
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    return SettingsPolicy(data_dir=tmp_path)


def test_every_image_of_the_folder_is_a_job_with_one_seed(folders: SettingsPolicy) -> None:
    job = build_batch_job({**VALUES, "seed": -1, "batch_input_dir": "in"}, folders, no_checkpoint)
    assert [item.source.name for item in job.items] == ["a.png", "b.png"]
    assert job.items[0].request.init_image.getpixel((0, 0)) == (200, 0, 0)
    seeds = {item.request.seed for item in job.items}
    assert len(seeds) == 1 and -1 not in seeds  # A1111's fix_seed: one random seed for the batch
    assert all(item.request.save_images for item in job.items)  # no output folder: saved as any img2img job


def test_png_info_sets_the_chosen_parameters(folders: SettingsPolicy) -> None:
    values = {
        **VALUES,
        "batch_input_dir": "in",
        "batch_use_png_info": True,
        "batch_png_info_props": ["Prompt", "Negative prompt", "Seed", "Sampler", "Steps"],
    }
    first, second = build_batch_job(values, folders, no_checkpoint).items
    request = first.request
    assert (request.prompt, request.negative_prompt) == ("a cat a dog", "blurry dark")
    assert (request.seed, request.steps, request.cfg_scale) == (7, 3, 6.5)  # CFG scale was not chosen
    assert (request.sampler_name, request.scheduler) == ("DPM++ 2M", "Karras")
    assert (second.request.prompt, second.request.seed) == ("a cat", 42)  # no infotext: the tab's values


def test_png_info_model_hash_picks_a_known_checkpoint() -> None:
    known = {"abcdef1234": "m"}.get
    assert png_info_fields("x\nSteps: 2, Seed: 1, Model hash: abcdef1234", ["Model hash"], VALUES, known) == {
        "checkpoint": "m"
    }
    assert png_info_fields("x\nSteps: 2, Seed: 1, Model hash: 0000000000", ["Model hash"], VALUES, known) == {}


def test_masks_by_name_and_images_without_a_mask_are_skipped(folders: SettingsPolicy, tmp_path: Path) -> None:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 32))
    (tmp_path / "masks").mkdir()
    mask.save(tmp_path / "masks" / "a.png")
    write_png(tmp_path / "masks" / "other.png", (0, 0, 0))
    job = build_batch_job(
        {**VALUES, "batch_input_dir": "in", "batch_inpaint_mask_dir": "masks"}, folders, no_checkpoint
    )
    assert [item.source.name for item in job.items] == ["a.png"]
    assert job.items[0].request.mask.getbbox() == (0, 0, 32, 32)
    assert job.skipped and "b.png" in job.skipped[0]


def test_folders_follow_the_settings_policy(tmp_path: Path) -> None:
    with pytest.raises(SettingsRefusedError, match="leaves the data dir"):
        build_batch_job({**VALUES, "batch_input_dir": "../elsewhere"}, SettingsPolicy(data_dir=tmp_path), no_checkpoint)
    with pytest.raises(SettingsRefusedError, match="absolute"):
        build_batch_job({**VALUES, "batch_input_dir": "/etc"}, SettingsPolicy(data_dir=tmp_path), no_checkpoint)
    locked = SettingsPolicy(data_dir=tmp_path, folders_locked=True)
    with pytest.raises(SettingsRefusedError, match="server folders are off"):
        build_batch_job({**VALUES, "batch_input_dir": "in"}, locked, no_checkpoint)
    with pytest.raises(InputError, match="input directory"):
        build_batch_job({**VALUES, "batch_input_dir": ""}, SettingsPolicy(data_dir=tmp_path), no_checkpoint)


def test_batch_runs_through_the_queue_and_saves_named_outputs_with_infotext(context, tmp_path: Path) -> None:
    write_png(tmp_path / "in" / "a.png", (200, 0, 0), INFOTEXT)
    write_png(tmp_path / "in" / "b.png", (0, 0, 200))
    values = {**VALUES, "batch_input_dir": "in", "batch_output_dir": "out", "batch_use_png_info": True}
    job = build_batch_job(
        {**values, "batch_png_info_props": ["Prompt"]}, SettingsPolicy(data_dir=tmp_path), no_checkpoint
    )
    assert not any(item.request.save_images for item in job.items)  # saved once, in the output folder
    service = GenerationService(context)
    try:
        updates = list(stream_batch(service, job, "", context.options, poll_seconds=0.05))
    finally:
        service.shutdown()
    result = updates[-1].result
    assert result is not None and len(result.images) == 2
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    saved = Image.open(tmp_path / "out" / "a.png")
    assert read_infotext(saved).startswith("a cat a dog\nNegative prompt: blurry\n")
    assert "Denoising strength: 0.5" in read_infotext(saved)
    assert read_infotext(Image.open(tmp_path / "out" / "b.png")).startswith("a cat\n")
    assert any("Batch image 1 of 2" in update.progress for update in updates if update.progress)
