"""A1111's filename pattern tokens (modules/processing/filenames.py), one by one, and the path safety rules."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path, PurePath

import pytest
from PIL import Image

from modules.processing.filenames import (
    TOKENS,
    FilenameGenerator,
    FilenameValues,
    NameRules,
    UnsafePathError,
    contained_path,
    relative_folder,
    safe_path_part,
    sanitize_filename_part,
    split_arguments,
)

NOW = datetime(2024, 5, 6, 13, 30, 15, tzinfo=UTC)
IMAGE = Image.new("RGB", (96, 48), (1, 2, 3))
VALUES = FilenameValues(
    seed=43,
    prompt="a cat, (sitting:1.2) on a mat, warm light",
    negative_prompt="dog",
    prompt_no_styles="a cat, (sitting:1.2) on a mat",
    styles=("Warm", "None", "Soft"),
    all_seeds=(42, 43, 44, 45),
    steps=20,
    cfg_scale=7.5,
    width=512,
    height=768,
    sampler="DPM++ 2M",
    scheduler="karras",
    model_name="sub/v1-5-pruned",
    model_hash="6ce0161689",
    clip_skip=2,
    denoising_strength=0.75,
    job_timestamp="20240506120000",
    batch_size=2,
    batch_index=1,
    n_iter=2,
    iteration=1,
    user="alice",
    vae_name="models/VAE/vae-ft-mse.safetensors",
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def apply(pattern: str, values: FilenameValues = VALUES, image: Image.Image | None = IMAGE, **rules: int) -> str:
    return FilenameGenerator(values, image, NameRules(**rules), NOW, basename="").apply(pattern)


SINGLE = replace(VALUES, batch_size=1, batch_index=0, n_iter=1, iteration=0, all_seeds=(43,))

EXPECTED = {
    "seed": "43",
    "seed_first": "42",
    "seed_last": "45",
    "steps": "20",
    "cfg": "7.5",
    "width": "96",  # A1111 reads the saved image's size
    "height": "48",
    "styles": "Warm, Soft",
    "sampler": "DPM++ 2M",
    "scheduler": "Karras",
    "sampler_scheduler": "DPM++ 2M Karras",
    "model_hash": "6ce0161689",
    "model_name": "v1-5-pruned",
    "date": "2024-05-06",
    "datetime": "20240506133015",
    "job_timestamp": "20240506120000",
    "prompt_hash": sha(VALUES.prompt)[:8],
    "negative_prompt_hash": sha("dog")[:8],
    "full_prompt_hash": sha(f"{VALUES.prompt} dog")[:8],
    "prompt": "a_cat,_(sitting_1.2)_on_a_mat,_warm_light",
    "prompt_no_styles": "a cat, (sitting_1.2) on a mat",
    "prompt_spaces": "a cat, (sitting_1.2) on a mat, warm light",
    "prompt_words": "a cat sitting 1 2 on a mat",
    "batch_number": "2",
    "batch_size": "2",
    "generation_number": "4",  # iteration 1 * batch size 2 + index 1 + 1
    "clip_skip": "2",
    "denoising": "0.75",
    "user": "alice",
    "vae_filename": "vae-ft-mse",
    "none": "",
    "image_hash": hashlib.sha256(IMAGE.tobytes()).hexdigest(),
    "basename": "img",
    "hasprompt": "",
}


def test_every_token_is_tested() -> None:
    assert set(TOKENS) == set(EXPECTED)


@pytest.mark.parametrize("token", sorted(EXPECTED))
def test_token(token: str) -> None:
    assert apply(f"x-[{token}]") == f"x-{EXPECTED[token]}"


def test_token_names_are_case_insensitive() -> None:
    assert apply("[SEED]-[Steps]") == "43-20"


@pytest.mark.parametrize("token", ["seed_last", "batch_number", "generation_number", "denoising"])
def test_tokens_with_nothing_to_say_drop_the_text_before_them(token: str) -> None:
    values = replace(SINGLE, denoising_strength=None)
    assert apply(f"a-[seed]-b-[{token}]-c", values) == "a-43-c"


def test_single_image_seed_first_is_the_seed() -> None:
    assert apply("[seed_first]", SINGLE) == "43"


def test_generation_number_counts_across_the_batch_count() -> None:
    values = replace(VALUES, batch_size=1, batch_index=0, n_iter=3, iteration=2)
    assert apply("[generation_number]-[batch_number]", values) == "3"


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("[datetime<%Y-%m-%d_%H>]", "2024-05-06_13"),
        ("[datetime<%H><Asia/Tokyo>]", "22"),
        ("[datetime<%H><No/Such_Zone>]", NOW.astimezone(None).strftime("%H")),  # unknown zone: local time
        ("[datetime<%H><../../etc/passwd>]", NOW.astimezone(None).strftime("%H")),
        ("[datetime<%Y/%m/%d %H:%M>]", "2024_05_06 13_30"),  # separators and colons sanitized
        ("[datetime<>]", "20240506133015"),
    ],
)
def test_datetime_formats_and_zones(pattern: str, expected: str) -> None:
    assert apply(pattern) == expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("[prompt_hash<4>]", sha(VALUES.prompt)[:4]),
        ("[negative_prompt_hash<12>]", sha("dog")[:12]),
        ("[full_prompt_hash<>]", sha(f"{VALUES.prompt} dog")[:8]),
        ("[image_hash<10>]", hashlib.sha256(IMAGE.tobytes()).hexdigest()[:10]),
    ],
)
def test_hash_lengths(pattern: str, expected: str) -> None:
    assert apply(pattern) == expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("[hasprompt<cat>]", "cat"),
        ("[hasprompt<CAT>]", "cat"),
        ("[hasprompt<dog>]", ""),
        ("[hasprompt<dog|no dog>]", "no_dog"),
        ("[hasprompt<cat|nocat><dog|nodog><mat>]", "catnodogmat"),
    ],
)
def test_hasprompt(pattern: str, expected: str) -> None:
    assert apply(pattern) == expected


def test_unknown_tokens_and_bad_arguments_stay_as_written() -> None:
    assert apply("[nonsense]-[seed]") == "[nonsense]-43"
    assert apply("[image_hash<abc>]") == "[image_hash]"
    assert apply("[prompt_hash<x>]") == "[prompt_hash]"


def test_tokens_without_a_value_stay_as_written_or_use_a1111_defaults() -> None:
    empty = FilenameValues()
    assert apply("[seed]|[steps]|[user]|[model_name]", empty, image=None) == "|[steps]|[user]|[model_name]"
    assert apply("[styles]|[vae_filename]|[prompt_words]", empty) == "None|NoneType|empty"
    assert apply("[width]x[height]", replace(VALUES, width=64, height=32), image=None) == "64x32"
    assert apply("[scheduler]", replace(VALUES, scheduler=None)) == ""
    assert apply("[job_timestamp]", empty) == "20240506133015"  # no job timestamp given: now
    assert apply("[image_hash]", VALUES, image=None) == "[image_hash]"


def test_prompt_no_styles_defaults_to_the_prompt() -> None:
    assert apply("[prompt_no_styles]", replace(VALUES, prompt_no_styles=None)) == EXPECTED["prompt_spaces"]


def test_prompt_words_count_follows_the_setting() -> None:
    assert apply("[prompt_words]", max_prompt_words=2) == "a cat"


def test_vae_filename_of_a_dotted_name_as_a1111() -> None:
    assert apply("[vae_filename]", replace(VALUES, vae_name=".hidden.vae.pt")) == "hidden"


def test_every_token_value_is_cut_to_the_length_limit() -> None:
    long_prompt = "word " * 100
    assert len(apply("[prompt]", replace(VALUES, prompt=long_prompt))) == 128
    assert len(apply("[prompt_spaces]", replace(VALUES, prompt=long_prompt), max_length=20)) <= 20


def test_split_arguments() -> None:
    assert split_arguments("datetime<%Y><UTC>") == ("datetime", ["%Y", "UTC"])
    assert split_arguments("seed") == ("seed", [])


@pytest.mark.parametrize(
    ("text", "spaces", "expected"),
    [
        ("a b", True, "a_b"),
        ("a b", False, "a b"),
        ('x#<>:"/\\|?*\n\r\ty', True, "x" + "_" * 13 + "y"),  # the 13 characters A1111 forbids
        ("  lead and trail. . ", False, "lead and trail"),
        ("nul\x00byte", True, "nul_byte"),
        (None, True, None),
    ],
)
def test_sanitize_filename_part(text: str | None, spaces: bool, expected: str | None) -> None:
    assert sanitize_filename_part(text, spaces) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("..", ""),
        ("...", ""),
        (".hidden", "hidden"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("LPT1", "_LPT1"),
        ("console", "console"),
        ("C:", "C_"),
        ("a\x00b\x1fc", "a_b_c"),
    ],
)
def test_safe_path_part(text: str, expected: str) -> None:
    assert safe_path_part(text, 128) == expected


def test_safe_path_part_cuts_unicode_by_bytes() -> None:
    part = safe_path_part("猫" * 200, 200)
    assert len(part.encode("utf-8")) <= 254
    assert part == "猫" * 84


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ("2024-05-06", PurePath("2024-05-06")),
        ("2024/cats", PurePath("2024", "cats")),
        ("../../etc", PurePath("etc")),
        ("/etc/passwd", PurePath("etc", "passwd")),
        ("C:\\Windows\\System32", PurePath("C_", "Windows", "System32")),
        ("a/./b/../c", PurePath("a", "b", "c")),
        ("..", PurePath()),
        ("", PurePath()),
    ],
)
def test_relative_folder_never_climbs(generated: str, expected: PurePath) -> None:
    assert relative_folder(generated) == expected


def test_contained_path_refuses_outside_and_the_folder_itself(tmp_path: Path) -> None:
    assert contained_path(tmp_path, PurePath("a", "b")) == (tmp_path / "a" / "b").resolve()
    for escape in (PurePath(".."), PurePath("a", "..", ".."), PurePath("/etc"), PurePath(".")):
        with pytest.raises(UnsafePathError):
            contained_path(tmp_path, escape)
