"""Infotext: A1111's layout written and parsed exactly, and read back from PNG, JPEG and WEBP files."""

from __future__ import annotations

import io
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from modules.processing.infotext import (
    MAX_INFOTEXT_CHARS,
    MISSING_KEY_DEFAULTS,
    PARAMETER_PATTERN,
    InfotextTooLongError,
    build_user_comment_exif,
    create_infotext,
    decode_user_comment,
    encode_user_comment,
    infotext_to_request_fields,
    parse_infotext,
    read_infotext,
)

A1111_EXAMPLE = (
    "girl with a beret, ((eyeshadow))\n"
    "Negative prompt: ugly, [blurry]\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b"
)


def test_a1111_example_parses_to_its_fields() -> None:
    parsed = parse_infotext(A1111_EXAMPLE)
    assert parsed["Prompt"] == "girl with a beret, ((eyeshadow))"
    assert parsed["Negative prompt"] == "ugly, [blurry]"
    assert parsed["Steps"] == "20"
    assert parsed["Sampler"] == "Euler a"
    assert parsed["CFG scale"] == "7"
    assert parsed["Seed"] == "965400086"
    assert (parsed["Size-1"], parsed["Size-2"]) == ("512", "512")
    assert "Size" not in parsed
    assert parsed["Model hash"] == "45dee52b"
    assert parsed["Clip skip"] == "1"
    assert parsed["RNG"] == "GPU"
    assert parsed["Schedule type"] == "Automatic"
    assert parsed["Hires sampler"] == "Use same sampler"
    assert parsed["Emphasis"] == "Original"


def test_request_fields_are_typed() -> None:
    fields = infotext_to_request_fields(parse_infotext(A1111_EXAMPLE + ", Denoising strength: 0.55, Clip skip: 2"))
    assert fields == {
        "prompt": "girl with a beret, ((eyeshadow))",
        "negative_prompt": "ugly, [blurry]",
        "steps": 20,
        "sampler_name": "Euler a",
        "scheduler": "Automatic",
        "cfg_scale": 7.0,
        "seed": 965400086,
        "width": 512,
        "height": 512,
        "denoising_strength": 0.55,
        "clip_skip": 2,
        "sampling_backend": "original",
        # A1111's defaults for missing keys (RNG, schedule sigma range and rho) paste as settings, as in A1111
        "override_settings": {"randn_source": "GPU", "sigma_min": 0.0, "sigma_max": 0.0, "rho": 0.0},
    }


def test_request_fields_keep_legacy_sampler_name_and_skip_bad_numbers() -> None:
    parsed = parse_infotext("cat\nSteps: many, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1, Size: 64x128")
    fields = infotext_to_request_fields(parsed)
    assert "steps" not in fields
    assert fields["sampler_name"] == "DPM++ 2M Karras"
    assert fields["cfg_scale"] == 7.5
    assert (fields["width"], fields["height"]) == (64, 128)


def test_create_writes_a1111_layout_and_key_order() -> None:
    parameters = {
        "Version": "v1.10.1",
        "Lora hashes": "add_detail: 7c6bad76eb54",
        "Seed": 42,
        "Size": "512x768",
        "Steps": 20,
        "Hires upscale": 2,
        "Sampler": "DPM++ 2M",
        "Schedule type": "Karras",
        "CFG scale": 7,
        "Clip skip": 2,
        "Face restoration": None,
        "Model hash": "6ce0161689",
    }
    text = create_infotext("a cat", "blurry", parameters)
    assert text == (
        "a cat\nNegative prompt: blurry\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x768, "
        'Model hash: 6ce0161689, Clip skip: 2, Lora hashes: "add_detail: 7c6bad76eb54", Hires upscale: 2, '
        "Version: v1.10.1"
    )


def test_create_leaves_out_empty_negative_clip_skip_one_and_gpu_rng() -> None:
    text = create_infotext("a cat", "", {"Steps": 20, "Clip skip": 1, "RNG": "GPU", "Seed": 1})
    assert text == "a cat\nSteps: 20, Seed: 1"
    assert "Clip skip: 2" in create_infotext("x", "", {"Clip skip": 2})
    assert "RNG: CPU" in create_infotext("x", "", {"RNG": "CPU"})


def test_create_infotext_writes_a1111_keys_in_order() -> None:
    parameters = {
        "Steps": 20,
        "Sampler": "Euler a",
        "CFG scale": 7,
        "Seed": 965400086,
        "Size": "512x512",
        "Model hash": "45dee52b",
        "Denoising strength": 0.75,
        "Hires upscale": 2,
        "Version": "v1.10.1",
    }
    assert create_infotext("p", "", parameters) == (
        "p\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b, "
        "Denoising strength: 0.75, Hires upscale: 2, Version: v1.10.1"
    )


@pytest.mark.parametrize(
    "value",
    ["a, b", "key: value", "line one\nline two", 'say "hi", ok', 'back\\slash, "q"', '"starts with a quote', "ünï, ✓"],
)
def test_round_trip_of_values_needing_quotes(value: str) -> None:
    parameters = {"Steps": "20", "Sampler": "Euler", "Odd value": value, "Seed": "3"}
    text = create_infotext("multi\nline prompt", "neg: one,\ntwo", parameters)
    parsed = parse_infotext(text)
    assert parsed["Odd value"] == value
    assert parsed["Prompt"] == "multi\nline prompt"
    assert parsed["Negative prompt"] == "neg: one,\ntwo"
    assert (parsed["Steps"], parsed["Sampler"], parsed["Seed"]) == ("20", "Euler", "3")


def test_text_without_parameter_line_is_all_prompt() -> None:
    parsed = parse_infotext("just a prompt, with: one colon\nNegative prompt: bad")
    assert parsed["Prompt"] == "just a prompt, with: one colon"
    assert parsed["Negative prompt"] == "bad"


def test_old_versions_get_a1111_compatibility_flags() -> None:
    old = parse_infotext("[a:b:5]\nSteps: 20, Sampler: DDIM, Seed: 1, Version: v1.5.1")
    assert old["Old prompt editing timelines"] is True
    assert old["Pad conds v0"] is True
    assert old["Downcast alphas_cumprod"] is True
    new = parse_infotext("[a:b:5]\nSteps: 20, Sampler: DDIM, Seed: 1, Version: v1.10.1")
    assert "Old prompt editing timelines" not in new
    assert "Downcast alphas_cumprod" not in new


def test_old_hires_first_pass_size_becomes_size_and_hires_resize() -> None:
    parsed = parse_infotext("x\nSteps: 20, Seed: 1, Size: 1024x1024, First pass size: 0x0")
    assert (parsed["Size-1"], parsed["Size-2"]) == (512, 512)
    assert (parsed["Hires resize-1"], parsed["Hires resize-2"]) == (1024, 1024)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_never_raises(text: str) -> None:
    parsed = parse_infotext(text)
    assert isinstance(parsed["Prompt"], str)
    assert isinstance(parsed["Negative prompt"], str)


KEY_WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=8)
SAFE_KEYS = st.lists(KEY_WORDS, min_size=1, max_size=3).map(" ".join)
RESERVED_KEYS = {"Prompt", "Negative prompt", "Hypernet", "Version", "First pass size", *MISSING_KEY_DEFAULTS}


def is_safe_value(key: str, value: str) -> bool:
    """Values the format can carry: A1111 strips surrounding whitespace and splits WxH values."""
    return bool(value) and value == value.strip() and value != key and not re.fullmatch(r"\d+x\d+", value)


def is_safe_prompt(prompt: str) -> bool:
    lines = prompt.split("\n")
    return all(line == line.strip() and not line.startswith("Negative prompt:") for line in lines)


@settings(max_examples=200, deadline=None)
@given(
    prompt=st.text(max_size=40),
    negative=st.text(max_size=40),
    items=st.dictionaries(SAFE_KEYS, st.text(min_size=1, max_size=30), min_size=3, max_size=6),
)
def test_create_then_parse_round_trips(prompt: str, negative: str, items: dict[str, str]) -> None:
    assume(is_safe_prompt(prompt) and prompt.strip() == prompt and prompt != "")
    assume(is_safe_prompt(negative) and negative.strip() == negative)
    assume(not any(key in RESERVED_KEYS or key.startswith("Hires") for key in items))
    assume(all(is_safe_value(key, value) for key, value in items.items()))
    parsed = parse_infotext(create_infotext(prompt, negative, items))
    assert parsed["Prompt"] == prompt
    assert parsed["Negative prompt"] == negative
    for key, value in items.items():
        assert parsed[key] == value


def image_bytes(image: Image.Image, file_format: str, **options: object) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format=file_format, **options)
    buffer.seek(0)
    return Image.open(buffer)


def test_read_from_png_text_chunk() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111_EXAMPLE + ", Emphasis: ✓")
    loaded = image_bytes(Image.new("RGB", (8, 8)), "PNG", pnginfo=info)
    assert read_infotext(loaded) == A1111_EXAMPLE + ", Emphasis: ✓"


# What A1111 writes (piexif 1.1.3: dump({"Exif": {UserComment: UserComment.dump(text, encoding="unicode")}})).
PIEXIF_EXIF = (
    b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x87i\x00\x04\x00\x00\x00\x01\x00\x00\x00\x1a\x00\x00"
    b"\x00\x00\x00\x01\x92\x86\x00\x07\x00\x00\x00B\x00\x00\x00(UNICODE\x00"
    + "Steps: 20, Seed: 1, Size: 8x8".encode("utf_16_be")
)


@pytest.mark.parametrize("file_format", ["JPEG", "WEBP"])
def test_read_exif_user_comment_written_as_a1111_does(file_format: str) -> None:
    loaded = image_bytes(Image.new("RGB", (8, 8)), file_format, exif=PIEXIF_EXIF)
    assert read_infotext(loaded) == "Steps: 20, Seed: 1, Size: 8x8"


@pytest.mark.parametrize("file_format", ["JPEG", "WEBP"])
def test_exif_we_write_reads_back(file_format: str) -> None:
    exif = build_user_comment_exif(A1111_EXAMPLE + " ünï")
    loaded = image_bytes(Image.new("RGB", (8, 8)), file_format, exif=exif)
    assert read_infotext(loaded) == A1111_EXAMPLE + " ünï"


def test_exif_we_write_matches_a1111_entry_layout() -> None:
    ours = build_user_comment_exif("Steps: 20, Seed: 1, Size: 8x8")
    # Same header, IFD0 and UserComment entry (type 7 UNDEFINED, 66 bytes) as piexif; the data offset differs
    # because we also write the Exif IFD's next-IFD pointer.
    assert ours[:42] == PIEXIF_EXIF[:42]
    assert ours.endswith(PIEXIF_EXIF[-66:])


def test_pillow_exif_user_comment_is_read() -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = encode_user_comment("Steps: 1")
    assert read_infotext(image_bytes(Image.new("RGB", (8, 8)), "JPEG", exif=exif)) == "Steps: 1"


def test_image_without_infotext_gives_none() -> None:
    assert read_infotext(image_bytes(Image.new("RGB", (8, 8)), "PNG")) is None
    assert read_infotext(image_bytes(Image.new("RGB", (8, 8)), "JPEG")) is None


def test_user_comment_encodings() -> None:
    assert encode_user_comment("Hi") == b"UNICODE\x00\x00H\x00i"
    assert decode_user_comment(b"UNICODE\x00\x00H\x00i") == "Hi"
    assert decode_user_comment(b"UNICODE\x00H\x00i\x00") == "Hi"
    assert decode_user_comment(b"ASCII\x00\x00\x00Steps: 20") == "Steps: 20"
    assert decode_user_comment("already text") == "already text"


# --- linear parsing and the length cap (issue 20) ------------------------------------------------------------

A1111_PARAMETER_PATTERN = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
LINE_PIECES = st.sampled_from(["a", "Key", " ", "-", "/", ":", ",", '"', "\\", "\n", "\t", "é", "1", "_", "x: y"])


@settings(max_examples=1000, deadline=None)
@given(st.lists(LINE_PIECES, max_size=14).map("".join))
def test_parameter_pattern_finds_what_a1111_finds(line: str) -> None:
    assert PARAMETER_PATTERN.findall(line) == A1111_PARAMETER_PATTERN.findall(line)


HOSTILE_INFOTEXTS = {
    "one long key without a colon": "a" * 1_000_000,
    "unclosed quotes": 'a: "x, ' * 140_000,
    "dashes and blanks": "- " * 500_000,
    "escaped quotes": 'a: "' + '\\"' * 500_000,
}


@pytest.mark.timeout(5)  # a guard, not a measure: A1111's pattern takes minutes on these
@pytest.mark.parametrize("line", HOSTILE_INFOTEXTS.values(), ids=HOSTILE_INFOTEXTS.keys())
def test_megabyte_of_hostile_parameter_line_parses(line: str) -> None:
    pairs = PARAMETER_PATTERN.findall(line)
    assert all(len(key) < len(line) for key, _ in pairs)


def test_infotext_over_the_cap_is_refused_before_parsing() -> None:
    text = "a" * (MAX_INFOTEXT_CHARS + 1)
    with pytest.raises(InfotextTooLongError, match=f"limit is {MAX_INFOTEXT_CHARS}"):
        parse_infotext(text)
    assert parse_infotext("a" * MAX_INFOTEXT_CHARS)["Prompt"] == "a" * MAX_INFOTEXT_CHARS
