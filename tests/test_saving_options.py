"""A1111's saving options: name patterns, number prefix, collisions, formats with their infotext, save_txt,
and hostile prompts that must never write outside the output folder."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules.application import Application
from modules.cmd_args import build_parser
from modules.options import IMAGE_FORMAT_NAMES, Options
from modules.paths import DataPaths
from modules.processing.filenames import FilenameValues
from modules.processing.infotext import read_infotext
from modules.processing.processing import save_init_image
from modules.processing.saving import (
    IMAGE_FORMATS,
    ImageSaveError,
    SavingSettings,
    make_grid,
    save_grid,
    save_image,
    write_file_first_free,
)
from modules.ui.png_info import read_png_info
from modules.ui.settings import HIDDEN_OPTIONS, apply_settings, grouped_option_names
from tests.helpers import tiny_img2img

DAY = datetime(2024, 5, 6, 13, 30)
INFOTEXT = "a cat, ünï ✓\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, Seed: 42, Size: 64x64"
VALUES = FilenameValues(seed=42, prompt="a cat on a mat", negative_prompt="dog", model_name="v1-5", steps=20)


def solid(color: tuple[int, ...] = (200, 10, 10), size: tuple[int, int] = (16, 16)) -> Image.Image:
    return Image.new("RGB", size, color)


def noise(size: int = 64, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def save(folder: Path, values: FilenameValues = VALUES, infotext: str | None = INFOTEXT, **settings: object) -> Path:
    file_format = str(settings.pop("file_format", "png"))
    return save_image(
        solid(), folder, values.seed, infotext, file_format, now=DAY, values=values, settings=SavingSettings(**settings)
    )


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


# --- names --------------------------------------------------------------------------------------------------------


def test_default_settings_keep_a1111_default_names(tmp_path: Path) -> None:
    assert save(tmp_path) == tmp_path / "2024-05-06" / "00000-42.png"
    assert save(tmp_path).name == "00001-42.png"


def test_legacy_call_without_values_is_unchanged(tmp_path: Path) -> None:
    assert save_image(solid(), tmp_path, 7, None, now=DAY) == tmp_path / "2024-05-06" / "00000-7.png"
    flat = tmp_path / "flat"
    assert save_image(solid(), flat, 7, None, date_subfolder=False) == flat / "00000-7.png"


def test_filename_and_directory_patterns(tmp_path: Path) -> None:
    path = save(
        tmp_path,
        samples_filename_pattern="[seed]-[prompt_words]-[steps]",
        directories_filename_pattern="[model_name]/[date]",
    )
    assert path == tmp_path / "v1-5" / "2024-05-06" / "00000-42-a cat on a mat-20.png"


def test_without_subfolder_the_name_carries_the_prompt_as_a1111(tmp_path: Path) -> None:
    assert save(tmp_path, save_to_dirs=False) == tmp_path / "00000-42-a cat on a mat.png"


def test_empty_directory_pattern_means_prompt_words(tmp_path: Path) -> None:
    assert save(tmp_path, directories_filename_pattern="").parent == tmp_path / "a cat on a mat"


def test_number_prefix_counts_per_folder(tmp_path: Path) -> None:
    (tmp_path / "2024-05-06").mkdir()
    (tmp_path / "2024-05-06" / "00041-x.png").write_bytes(b"")
    assert save(tmp_path, samples_filename_pattern="[prompt_words]").name == "00042-a cat on a mat.png"


def test_without_number_the_pattern_is_the_name_and_a_second_save_replaces_it(tmp_path: Path) -> None:
    first = save(tmp_path, save_images_add_number=False, samples_filename_pattern="[seed]-[prompt_words]")
    assert first.name == "42-a cat on a mat.png"
    second = save_image(
        solid((0, 0, 255)),
        tmp_path,
        42,
        None,
        now=DAY,
        values=VALUES,
        settings=SavingSettings(save_images_add_number=False, samples_filename_pattern="[seed]-[prompt_words]"),
    )
    assert second == first
    assert files_under(tmp_path) == [first]
    with Image.open(first) as loaded:
        assert loaded.getpixel((0, 0)) == (0, 0, 255)


def test_add_number_suffix_keeps_both_files(tmp_path: Path) -> None:
    settings = {"save_images_add_number": False, "save_images_replace_action": "Add number suffix"}
    names = [save(tmp_path, **settings).name for _ in range(3)]
    assert names == ["42.png", "42-1.png", "42-2.png"]


def test_without_number_an_empty_name_falls_back_to_the_number(tmp_path: Path) -> None:
    assert save(tmp_path, save_images_add_number=False, samples_filename_pattern="[none]").name == "00000.png"
    assert save(tmp_path, save_images_add_number=False, samples_filename_pattern="...").name == "00001.png"


def test_without_number_a_windows_reserved_name_is_prefixed(tmp_path: Path) -> None:
    values = replace(VALUES, prompt="con")
    assert save(tmp_path, values, save_images_add_number=False, samples_filename_pattern="[prompt]").name == "_con.png"
    assert save(tmp_path, values, samples_filename_pattern="[prompt]").name == "00000-con.png"


def test_concurrent_saves_never_take_the_same_number(tmp_path: Path) -> None:
    def save_one(index: int) -> Path:
        return save_image(solid(), tmp_path, 42, f"image {index}", now=DAY, values=VALUES)

    with ThreadPoolExecutor(max_workers=8) as pool:
        paths = list(pool.map(save_one, range(32)))
    assert len(set(paths)) == 32
    assert sorted(path.name for path in paths) == [f"{number:05}-42.png" for number in range(32)]
    for index, path in enumerate(paths):
        with Image.open(path) as loaded:
            assert read_infotext(loaded) == f"image {index}"
    assert [path for path in tmp_path.rglob("*") if path.name.endswith(".tmp")] == []


def test_first_free_name_skips_taken_names(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"old")
    written = write_file_first_free([tmp_path / "a.txt", tmp_path / "b.txt"], lambda file: file.write(b"new"))
    assert written == tmp_path / "b.txt"
    assert (tmp_path / "a.txt").read_bytes() == b"old" and written.read_bytes() == b"new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_first_free_name_without_hard_links_checks_then_renames(tmp_path: Path, monkeypatch) -> None:
    def no_links(*_arguments: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "a.txt").write_bytes(b"old")
    written = write_file_first_free([tmp_path / "a.txt", tmp_path / "b.txt"], lambda file: file.write(b"new"))
    assert written == tmp_path / "b.txt" and written.read_bytes() == b"new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_every_taken_name_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"old")
    with pytest.raises(ImageSaveError, match="no free file name"):
        write_file_first_free([tmp_path / "a.txt"], lambda file: file.write(b"new"))
    assert [path.name for path in tmp_path.iterdir()] == ["a.txt"]


def test_suffix_goes_after_the_name(tmp_path: Path) -> None:
    path = save_image(solid(), tmp_path, 42, None, now=DAY, values=VALUES, suffix="-before-highres-fix")
    assert path.name == "00000-42-before-highres-fix.png"


def test_grids_use_grid_save_to_dirs_and_grid_extended_filename(tmp_path: Path) -> None:
    grid = make_grid([solid()] * 2)
    plain = save_grid(grid, tmp_path, None, now=DAY, values=VALUES, settings=SavingSettings(grid_save_to_dirs=False))
    assert plain == tmp_path / "grid-0000.png"
    extended = save_grid(
        grid, tmp_path, None, now=DAY, values=VALUES, settings=SavingSettings(grid_extended_filename=True)
    )
    assert extended == tmp_path / "2024-05-06" / "grid-0000-42.png"


def test_seed_must_match_the_values_and_settings_exclude_date_subfolder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="differs"):
        save_image(solid(), tmp_path, 1, None, values=VALUES)
    with pytest.raises(TypeError):
        save_image(solid(), tmp_path, 42, None, date_subfolder=False, values=VALUES, settings=SavingSettings())
    assert files_under(tmp_path) == []


# --- hostile prompts ----------------------------------------------------------------------------------------------

HOSTILE_PROMPTS = [
    "../../../../etc/passwd",
    "/etc/passwd",
    "..",
    "....",
    ". . .",
    "a\x00b",
    "x" * 5000,
    "猫" * 1000,
    "🙂" * 300,
    "CON",
    "nul.txt",
    "C:\\Windows\\System32",
    "\\\\server\\share\\x",
    " \t\n\r ",
    "",
    "$(rm -rf ~) `id` %s%n {prompt}",
]
HOSTILE_SETTINGS = [
    {"directories_filename_pattern": "[prompt_spaces]", "samples_filename_pattern": "[prompt_spaces]"},
    {
        "directories_filename_pattern": "../[prompt]/../[prompt_words]/[prompt_no_styles]",
        "samples_filename_pattern": "[prompt]-[prompt_words]-[hasprompt<etc|..>]-[prompt_spaces]",
        "save_images_add_number": False,
    },
    {
        "directories_filename_pattern": "/[prompt_spaces]\x00/C:/..",
        "samples_filename_pattern": "../../[prompt_spaces]/x",
        "save_images_add_number": False,
        "save_to_dirs": True,
    },
]


@pytest.mark.parametrize("settings", HOSTILE_SETTINGS, ids=["spaces", "climbing-pattern", "absolute-pattern"])
@pytest.mark.parametrize("prompt", HOSTILE_PROMPTS, ids=range(len(HOSTILE_PROMPTS)))
def test_hostile_prompts_stay_inside_the_output_folder(tmp_path: Path, prompt: str, settings: dict) -> None:
    out = tmp_path / "out"
    values = replace(VALUES, prompt=prompt, prompt_no_styles=prompt)
    path = save(out, values, **settings)
    assert path.is_file()
    assert path.resolve().is_relative_to(out.resolve()) and path.resolve() != out.resolve()
    assert [child.name for child in tmp_path.iterdir()] == ["out"]
    for part in path.relative_to(out).parts:
        assert 0 < len(part.encode("utf-8")) <= 255
        assert part not in (".", "..") and "\x00" not in part and "/" not in part and "\\" not in part
        assert part.split(".")[0].upper() not in ("CON", "NUL")
    with Image.open(path) as loaded:
        assert read_infotext(loaded) == INFOTEXT


def test_a_subfolder_linking_outside_is_refused(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "2024-05-06").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ImageSaveError, match="outside the output folder"):
        save(out)
    assert files_under(elsewhere) == []


# --- formats and infotext -----------------------------------------------------------------------------------------


def test_options_and_saving_agree_on_formats() -> None:
    assert tuple(IMAGE_FORMATS) == IMAGE_FORMAT_NAMES


@pytest.mark.parametrize("file_format", IMAGE_FORMAT_NAMES)
def test_every_format_round_trips_its_infotext_through_png_info(tmp_path: Path, file_format: str) -> None:
    path = save(tmp_path, file_format=file_format)
    assert path.suffix == f".{file_format}"
    with Image.open(path) as loaded:
        assert loaded.format == IMAGE_FORMATS[file_format]
        text, _status = read_png_info(loaded)
    assert text == INFOTEXT


@pytest.mark.parametrize("file_format", IMAGE_FORMAT_NAMES)
def test_enable_pnginfo_off_writes_no_infotext(tmp_path: Path, file_format: str) -> None:
    path = save(tmp_path, file_format=file_format, enable_pnginfo=False)
    with Image.open(path) as loaded:
        assert read_infotext(loaded) is None


@pytest.mark.parametrize("file_format", ["jpg", "webp", "avif"])
def test_jpeg_quality_changes_the_file(tmp_path: Path, file_format: str) -> None:
    sizes = []
    for quality in (10, 95):
        path = save_image(
            noise(), tmp_path / str(quality), 1, None, file_format, values=replace(VALUES, seed=1),
            settings=SavingSettings(jpeg_quality=quality),
        )  # fmt: skip
        sizes.append(path.stat().st_size)
    assert sizes[0] < sizes[1]


@pytest.mark.parametrize(("lossless", "exact"), [(True, True), (False, False)])
def test_webp_lossless(tmp_path: Path, lossless: bool, exact: bool) -> None:
    image, settings = noise(), SavingSettings(webp_lossless=lossless)
    path = save_image(image, tmp_path, 1, None, "webp", values=replace(VALUES, seed=1), settings=settings)
    with Image.open(path) as loaded:
        assert bool((np.asarray(loaded.convert("RGB")) == np.asarray(image)).all()) == exact


def test_too_large_for_webp_is_saved_as_png(tmp_path: Path) -> None:
    path = save_image(Image.new("RGB", (16384, 1)), tmp_path, 1, None, "webp", values=replace(VALUES, seed=1))
    assert path.suffix == ".png"


def test_save_txt_writes_the_infotext_beside_the_image(tmp_path: Path) -> None:
    path = save(tmp_path, save_txt=True, enable_pnginfo=False, file_format="jpg")
    assert path.with_suffix(".txt").read_text(encoding="utf-8") == INFOTEXT + "\n"
    assert save(tmp_path, infotext=None, save_txt=True).with_suffix(".txt").exists() is False
    assert save(tmp_path, save_txt=False).with_suffix(".txt").exists() is False


# --- options ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["samples_format", "grid_format"])
def test_unknown_format_is_refused_and_known_ones_normalized(name: str) -> None:
    with pytest.raises(ValueError, match="unknown image format 'bmp'"):
        Options(**{name: "bmp"})
    assert getattr(Options(**{name: ".JPG"}), name) == "jpg"


def test_invalid_value_in_config_json_takes_its_default_only(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"samples_format": "bmp", "jpeg_quality": 0, "save_txt": True}), encoding="utf-8")
    options = Options.load(config)
    assert (options.samples_format, options.jpeg_quality, options.save_txt) == ("png", 80, True)


def test_saving_settings_come_from_options() -> None:
    options = Options(samples_filename_pattern="[seed]-[cfg]", jpeg_quality=55, save_txt=True, grid_save_to_dirs=False)
    settings = SavingSettings.from_options(options)
    assert settings.samples_filename_pattern == "[seed]-[cfg]"
    assert (settings.jpeg_quality, settings.save_txt, settings.grid_save_to_dirs) == (55, True, False)
    assert settings.filenames_max_length == 128


def test_every_saving_option_is_in_an_a1111_settings_section() -> None:
    sections = dict(grouped_option_names())
    assert "Other" not in sections or not set(sections["Other"]) & set(SavingSettings.__dataclass_fields__)
    listed = {name for names in sections.values() for name in names} | HIDDEN_OPTIONS
    for name in SavingSettings.__dataclass_fields__:
        assert name in listed or name not in Options.model_fields
    assert "samples_filename_pattern" in sections["Saving images/grids"]
    assert "directories_filename_pattern" in sections["Saving to a directory"]
    assert "save_txt" in sections["Infotext"]


def test_settings_tab_refuses_an_unknown_format_and_persists_nothing(tmp_path: Path) -> None:
    application = Application.create(build_parser().parse_args(["--data-dir", str(tmp_path)]))
    try:
        refused = apply_settings(application, {"samples_format": "bmp", "save_txt": True})
        assert "Settings not applied" in refused and "&#x27;bmp&#x27; is not one of png" in refused
        assert (application.options.samples_format, application.options.save_txt) == ("png", False)
        assert not application.paths.config_file.exists()
        applied = apply_settings(application, {"grid_format": "webp", "samples_filename_pattern": "[seed]-[cfg]"})
        assert "2 settings changed" in applied
        saved = json.loads(application.paths.config_file.read_text(encoding="utf-8"))
        assert (saved["grid_format"], saved["samples_filename_pattern"]) == ("webp", "[seed]-[cfg]")
    finally:
        application.service.shutdown()


def test_save_init_img_keeps_the_image_the_job_got(context, tmp_path) -> None:
    request = tiny_img2img()
    paths = DataPaths.create(tmp_path)
    off = replace(context, paths=paths)
    assert save_init_image(request, off) == []
    on = replace(context, paths=paths, options=Options(save_init_img=True, outdir_init_images="init"))
    (path,) = save_init_image(request, on)
    assert path == tmp_path / "init" / f"{hashlib.md5(request.init_image.tobytes()).hexdigest()}.png"
    with Image.open(path) as saved:
        assert saved.convert("RGB").tobytes() == request.init_image.tobytes()
