"""Infotext: the text A1111 stores with every image ("parameters"), written and read in A1111's exact format.

Layout: ``PROMPT\\nNegative prompt: NEGATIVE\\nKey: value, Key: value, ...``. Parsing follows A1111's
``parse_generation_parameters``: values stay strings (as A1111 keeps them), ``WxH`` values split into
``Key-1`` / ``Key-2`` strings, and missing keys get A1111's defaults (a few of which are ints, as in A1111).
``infotext_to_request_fields`` turns the parsed strings into typed request fields.
"""

from __future__ import annotations

import json
import logging
import math
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from packaging.version import InvalidVersion, Version
from PIL import Image

from modules.processing.requests import MAX_PROMPT_CHARS

logger = logging.getLogger(__name__)

# The longest infotext read: four prompts at their cap (prompt, negative, hires prompt and negative) and as much
# again for the parameters; longer text is refused before it is parsed.
MAX_INFOTEXT_CHARS = 5 * MAX_PROMPT_CHARS


class InfotextTooLongError(ValueError):
    """An infotext over MAX_INFOTEXT_CHARS (refused before parsing)."""

    def __init__(self, length: int) -> None:
        super().__init__(
            f"the infotext is {length} characters long; the limit is {MAX_INFOTEXT_CHARS} (it was not read)"
        )


# A1111's pattern is r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'; it is quadratic (a key run without
# a colon is scanned again from each of its characters: 48,000 characters took 17 s). This one finds the same pairs
# in linear time: a key may only start where a run of key characters starts (the look-behind; A1111's key is the
# first word character of the run up to the colon ending the run, and a match always ends after a comma, a quote or
# at the end, so nothing is lost), and the possessive quantifiers never give back what cannot lead to a colon or a
# closing quote. Written by hand (no library reads infotexts); tests/test_infotext.py compares both patterns.
PARAMETER_PATTERN = re.compile(r'(?<![\w \-/])[ \-/]*+(\w[\w \-/]++):\s*+("(?:\\.|[^\\"])++"|[^,]*+)(?:,|$)')
IMAGE_SIZE_PATTERN = re.compile(r"^(\d+)x(\d+)$")
NEGATIVE_PROMPT_PREFIX = "Negative prompt:"

# Keys written before any extra parameter, in A1111's order (processing.create_infotext).
LEADING_KEYS: tuple[str, ...] = (
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Image CFG scale",
    "Seed",
    "Face restoration",
    "Size",
    "Model hash",
    "Model",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Seed resize from",
    "Denoising strength",
    "Conditional mask weight",
    "Clip skip",
    "ENSD",
    "Token merging ratio",
    "Init image hash",
    "RNG",
    "Tiling",
)
# Keys written after the extra parameters.
TRAILING_KEYS: tuple[str, ...] = ("Version", "User")

# A1111's defaults for keys an infotext leaves out (parse_generation_parameters); types as A1111 has them.
MISSING_KEY_DEFAULTS: Mapping[str, object] = MappingProxyType(
    {
        "Clip skip": "1",
        "Hires resize-1": 0,
        "Hires resize-2": 0,
        "Hires sampler": "Use same sampler",
        "Hires checkpoint": "Use same checkpoint",
        "Hires prompt": "",
        "Hires negative prompt": "",
        "Mask mode": "Inpaint masked",
        "Masked content": "original",
        "Inpaint area": "Whole picture",
        "Masked area padding": 32,
        "RNG": "GPU",
        "Schedule type": "Automatic",
        "Schedule max sigma": 0,
        "Schedule min sigma": 0,
        "Schedule rho": 0,
        "VAE Encoder": "Full",
        "VAE Decoder": "Full",
        "FP8 weight": "Disable",
        "Emphasis": "Original",
    }
)

EXIF_IFD_POINTER = 0x8769
EXIF_USER_COMMENT = 0x9286
USER_COMMENT_HEADER_SIZE = 8
USER_COMMENT_UNICODE = b"UNICODE\x00"
USER_COMMENT_ASCII = b"ASCII\x00\x00\x00"
TIFF_LONG = 4
TIFF_UNDEFINED = 7


# --- writing ------------------------------------------------------------------------------------------------


def quote_value(value: object) -> str:
    """A value as A1111 writes it: JSON-quoted only when it holds a comma, a newline or a colon.

    One addition: a value starting with a double quote is quoted too; A1111 would write it bare and then read it
    back wrongly (its parser takes a leading quote as the start of a quoted value). A1111 reads ours correctly.
    """
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text and not text.startswith('"'):
        return text
    return json.dumps(text, ensure_ascii=False)


def order_parameters(parameters: Mapping[str, object]) -> dict[str, object]:
    """Leading keys in A1111's order, then extra keys in the given order, then Version (and User)."""
    ordered = {key: parameters[key] for key in LEADING_KEYS if key in parameters}
    ordered.update(
        (key, value) for key, value in parameters.items() if key not in LEADING_KEYS and key not in TRAILING_KEYS
    )
    ordered.update((key, parameters[key]) for key in TRAILING_KEYS if key in parameters)
    return ordered


def is_default_left_out(key: str, value: object) -> bool:
    """A1111 writes Clip skip only above 1 and RNG only when it is not GPU."""
    if key == "Clip skip":
        try:
            return int(str(value)) <= 1
        except ValueError:
            return False
    return key == "RNG" and str(value) == "GPU"


def create_infotext(prompt: str, negative_prompt: str, parameters: Mapping[str, object]) -> str:
    """The infotext of one image: prompt, optional negative line, then ``Key: value`` pairs (None left out)."""
    pairs = [
        key if key == value else f"{key}: {quote_value(value)}"
        for key, value in order_parameters(parameters).items()
        if value is not None and not is_default_left_out(key, value)
    ]
    negative_line = f"\n{NEGATIVE_PROMPT_PREFIX} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative_line}\n{', '.join(pairs)}".strip()


def format_number(value: float | None) -> float | int | None:
    """A whole float as an int (``CFG scale: 7`` as A1111's UI gives it), others unchanged; None stays None."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


# --- reading ------------------------------------------------------------------------------------------------


def unquote_value(text: str) -> str:
    """Undo ``quote_value``; text that is not valid JSON is kept as it is (A1111 does the same)."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, str) else text


def split_prompt_lines(lines: list[str]) -> tuple[str, str]:
    """Lines before ``Negative prompt:`` are the prompt, that line and the ones after the negative prompt."""
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for raw_line in lines:
        line = raw_line.strip()
        if line.startswith(NEGATIVE_PROMPT_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PROMPT_PREFIX) :].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    return "\n".join(prompt_lines), "\n".join(negative_lines)


def parse_parameter_line(line: str) -> dict[str, object]:
    """``Key: value, ...`` pairs; quoted values unquoted; ``WxH`` values split into ``Key-1`` and ``Key-2``."""
    result: dict[str, object] = {}
    for key, raw_value in PARAMETER_PATTERN.findall(line):
        value = unquote_value(raw_value)
        size = IMAGE_SIZE_PATTERN.match(value)
        if size is not None:
            result[f"{key}-1"] = size.group(1)
            result[f"{key}-2"] = size.group(2)
        else:
            result[key] = value
    return result


def parse_infotext(text: str) -> dict[str, object]:
    """A1111's parse_generation_parameters: "Prompt", "Negative prompt" and every parameter, with defaults.

    Raises InfotextTooLongError for text over MAX_INFOTEXT_CHARS."""
    if len(text) > MAX_INFOTEXT_CHARS:
        raise InfotextTooLongError(len(text))
    *lines, last_line = text.strip().split("\n")
    if len(PARAMETER_PATTERN.findall(last_line)) < 3:
        lines.append(last_line)
        last_line = ""
    prompt, negative_prompt = split_prompt_lines(lines)
    result: dict[str, object] = {"Prompt": prompt, "Negative prompt": negative_prompt}
    result.update(parse_parameter_line(last_line))
    apply_hypernetwork(result)
    for key, default in MISSING_KEY_DEFAULTS.items():
        result.setdefault(key, default)
    restore_old_hires_fix(result)
    apply_version_compatibility(result)
    return result


def apply_hypernetwork(result: dict[str, object]) -> None:
    """Old infotexts name a hypernetwork in its own key; A1111 turns it into a prompt tag."""
    hypernetwork = result.get("Hypernet")
    if hypernetwork is not None:
        strength = result.get("Hypernet strength", "1.0")
        result["Prompt"] = f"{result['Prompt']}<hypernet:{hypernetwork}:{strength}>"


def restore_old_hires_fix(result: dict[str, object]) -> None:
    """Infotexts with the old "First pass size" give the first pass as Size and the final size as Hires resize."""
    first_width, first_height = result.get("First pass size-1"), result.get("First pass size-2")
    if first_width is None or first_height is None:
        return
    try:
        first_width, first_height = int(str(first_width)), int(str(first_height))
        width, height = int(str(result.get("Size-1", 512))), int(str(result.get("Size-2", 512)))
    except ValueError:
        return
    if first_width == 0 or first_height == 0:
        first_width, first_height = old_first_pass_size(width, height)
    result.update({"Size-1": first_width, "Size-2": first_height, "Hires resize-1": width, "Hires resize-2": height})


def old_first_pass_size(width: int, height: int) -> tuple[int, int]:
    """The old hires fix's automatic first pass: about 512x512 pixels, sides rounded up to 64."""
    scale = math.sqrt(512 * 512 / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


def parse_a1111_version(text: object) -> Version | None:
    """A1111's Version field ("v1.10.1", "v1.7.0-225-g1234abc"); anything else gives None."""
    if not isinstance(text, str):
        return None
    match = re.match(r"([^-]+-[^-]+)-.*", text)
    try:
        return Version(match.group(1) if match else text)
    except InvalidVersion:
        return None


def apply_version_compatibility(result: dict[str, object]) -> None:
    """Flags A1111 sets for images made by its older versions, so they can be reproduced."""
    version = parse_a1111_version(result.get("Version"))
    if version is None:
        return
    if version < Version("1.6.0") and "[" in str(result.get("Prompt", "")):
        result["Old prompt editing timelines"] = True
    if version < Version("1.6.0") and result.get("Sampler") in ("DDIM", "PLMS"):
        result["Pad conds v0"] = True
    if version < Version("v1.7.0-225"):
        result["Downcast alphas_cumprod"] = True
    if version < Version("1.8.0") and result.get("Refiner"):
        result["Refiner switch by sampling steps"] = True


# --- to request fields --------------------------------------------------------------------------------------


def to_int(text: object) -> int:
    return int(float(str(text)))


def to_float(text: object) -> float:
    return float(str(text))


# Written by backends other than the original one (A1111's semantics need no key); read back on paste.
SAMPLER_BACKEND_KEY = "Sampler backend"
ORIGINAL_BACKEND = "original"

REQUEST_FIELDS: tuple[tuple[str, str, Callable[[object], Any]], ...] = (
    ("Prompt", "prompt", str),
    ("Negative prompt", "negative_prompt", str),
    ("Steps", "steps", to_int),
    ("Sampler", "sampler_name", str),
    ("Schedule type", "scheduler", str),
    ("CFG scale", "cfg_scale", to_float),
    ("Seed", "seed", to_int),
    ("Size-1", "width", to_int),
    ("Size-2", "height", to_int),
    ("Denoising strength", "denoising_strength", to_float),
    ("Clip skip", "clip_skip", to_int),
    ("Variation seed", "subseed", to_int),
    ("Variation seed strength", "subseed_strength", to_float),
    ("Seed resize from-1", "seed_resize_from_w", to_int),
    ("Seed resize from-2", "seed_resize_from_h", to_int),
    ("Image CFG scale", "image_cfg_scale", to_float),
    ("Refiner", "refiner_checkpoint", str),
    ("Refiner switch at", "refiner_switch_at", to_float),
)
# Keys A1111's paste turns into settings (its infotext_to_setting_name_mapping): a request's override_settings.
SETTING_KEYS: tuple[tuple[str, str, Callable[[object], Any]], ...] = (
    ("ENSD", "eta_noise_seed_delta", to_int),
    ("RNG", "randn_source", str),
    ("Eta", "eta_ancestral", to_float),
    ("Eta DDIM", "eta_ddim", to_float),
    ("Sigma churn", "s_churn", to_float),
    ("Sigma tmin", "s_tmin", to_float),
    ("Sigma tmax", "s_tmax", to_float),
    ("Sigma noise", "s_noise", to_float),
    ("Discard penultimate sigma", "always_discard_next_to_last_sigma", lambda value: str(value) == "True"),
    ("SGM noise multiplier", "sgm_noise_multiplier", lambda value: str(value) == "True"),
    ("NGMS", "s_min_uncond", to_float),
    ("NGMS all steps", "s_min_uncond_all", lambda value: str(value) == "True"),
    ("Skip Early CFG", "skip_early_cond", to_float),
    ("Schedule min sigma", "sigma_min", to_float),
    ("Schedule max sigma", "sigma_max", to_float),
    ("Schedule rho", "rho", to_float),
    ("Beta schedule alpha", "beta_dist_alpha", to_float),
    ("Beta schedule beta", "beta_dist_beta", to_float),
    ("UniPC variant", "uni_pc_variant", str),
    ("UniPC skip type", "uni_pc_skip_type", str),
    ("UniPC order", "uni_pc_order", to_int),
    ("UniPC lower order final", "uni_pc_lower_order_final", lambda value: str(value) == "True"),
    ("Extra noise", "img2img_extra_noise", to_float),
)


def infotext_to_request_fields(parsed: Mapping[str, object]) -> dict[str, object]:
    """Typed request fields (prompt, steps, sampler_name, ...) from ``parse_infotext``'s result.

    Sampler names are kept raw (a legacy "DPM++ 2M Karras" is split by the samplers module). A value that does
    not convert is left out and logged, as A1111's paste leaves such a field unchanged.
    """
    fields: dict[str, object] = {}
    for infotext_key, field_name, convert in REQUEST_FIELDS:
        if infotext_key not in parsed:
            continue
        try:
            fields[field_name] = convert(parsed[infotext_key])
        except (TypeError, ValueError, OverflowError):
            logger.warning("infotext value ignored key=%s value=%r", infotext_key, parsed[infotext_key])
    if "Face restoration" in parsed:
        fields["restore_faces"] = True
    if "Steps" in parsed:  # a parameters line: without "Sampler backend" it means A1111's own samplers
        fields["sampling_backend"] = str(parsed.get(SAMPLER_BACKEND_KEY) or ORIGINAL_BACKEND)
    settings = setting_overrides(parsed)
    if settings:
        fields["override_settings"] = settings
    fields.update(hires_request_fields(parsed))
    return fields


def setting_overrides(parsed: Mapping[str, object]) -> dict[str, object]:
    """The sampler settings an infotext names (ENSD, RNG, Eta, Sigma ...), by A1111's setting names."""
    settings: dict[str, object] = {}
    for infotext_key, setting, convert in SETTING_KEYS:
        if infotext_key not in parsed:
            continue
        try:
            settings[setting] = convert(parsed[infotext_key])
        except (TypeError, ValueError, OverflowError):
            logger.warning("infotext value ignored key=%s value=%r", infotext_key, parsed[infotext_key])
    return settings


def override_pairs(settings: Mapping[str, object], current: Mapping[str, object]) -> list[str]:
    """A1111's "Override settings" entries of a pasted infotext: ``"ENSD: 31337"`` for each setting it names whose
    value differs from the current one (``current``: setting name -> value)."""
    keys = {setting: infotext_key for infotext_key, setting, _ in SETTING_KEYS}
    return [
        f"{keys[setting]}: {value}"
        for setting, value in settings.items()
        if setting in keys and current.get(setting) != value
    ]


def settings_from_pairs(pairs: Sequence[str]) -> dict[str, object]:
    """The settings of "Override settings" entries (``"ENSD: 31337"``), by A1111's setting names; an entry whose
    key is not a sampler setting or whose value does not convert is left out and logged."""
    converters = {infotext_key: (setting, convert) for infotext_key, setting, convert in SETTING_KEYS}
    settings: dict[str, object] = {}
    for pair in pairs:
        key, _, text = str(pair).partition(": ")
        if key not in converters:
            logger.warning("override setting ignored entry=%r", pair)
            continue
        setting, convert = converters[key]
        try:
            settings[setting] = convert(text)
        except (TypeError, ValueError, OverflowError):
            logger.warning("override setting ignored entry=%r", pair)
    return settings


# Hires keys -> Txt2ImgRequest fields; a "Use same ..." value (A1111's default) leaves the field out (None: same).
HIRES_REQUEST_FIELDS: tuple[tuple[str, str, Callable[[object], Any]], ...] = (
    ("Hires upscale", "hr_scale", to_float),
    ("Hires resize-1", "hr_resize_x", to_int),
    ("Hires resize-2", "hr_resize_y", to_int),
    ("Hires upscaler", "hr_upscaler", str),
    ("Hires steps", "hr_second_pass_steps", to_int),
    ("Hires sampler", "hr_sampler_name", str),
    ("Hires schedule type", "hr_scheduler", str),
    ("Hires prompt", "hr_prompt", str),
    ("Hires negative prompt", "hr_negative_prompt", str),
    ("Hires checkpoint", "hr_checkpoint_name", str),
)
SAME_AS_FIRST_PASS = frozenset({"Use same sampler", "Use same scheduler", "Use same checkpoint"})


def hires_request_fields(parsed: Mapping[str, object]) -> dict[str, object]:
    """enable_hr and the hires fields, only when the infotext has a hires pass ("Hires upscale", "Hires upscaler"
    or a non-zero "Hires resize"; A1111 also counts the resize default of 0, which turns any img2img infotext
    with a denoising strength into a hires one)."""
    resized = any(str(parsed.get(key, 0)) not in {"0", ""} for key in ("Hires resize-1", "Hires resize-2"))
    if "Hires upscale" not in parsed and "Hires upscaler" not in parsed and not resized:
        return {}
    fields: dict[str, object] = {"enable_hr": True, "hr_second_pass_steps": 0}
    for infotext_key, field_name, convert in HIRES_REQUEST_FIELDS:
        value = parsed.get(infotext_key)
        if value is None or value in SAME_AS_FIRST_PASS:
            continue
        try:
            fields[field_name] = convert(value)
        except (TypeError, ValueError, OverflowError):
            logger.warning("infotext value ignored key=%s value=%r", infotext_key, value)
    return fields


# --- images -------------------------------------------------------------------------------------------------


def encode_user_comment(text: str) -> bytes:
    """EXIF UserComment as A1111 writes it (piexif's "unicode"): b"UNICODE\\0" then UTF-16 big-endian."""
    return USER_COMMENT_UNICODE + text.encode("utf_16_be", errors="replace")


def build_user_comment_exif(text: str) -> bytes:
    """EXIF bytes (for ``Image.save(exif=...)``) holding only the infotext as UserComment, typed UNDEFINED.

    Written by hand: Pillow's Exif writer types a bytes value it has no tag type for as BYTE, and readers such
    as piexif (A1111) then refuse it. Layout as piexif writes it: big-endian TIFF header, IFD0 with one pointer
    to the Exif IFD, which holds the one UserComment entry, then its data.
    """
    comment = encode_user_comment(text)
    exif_ifd_offset = 8 + 2 + 12 + 4
    comment_offset = exif_ifd_offset + 2 + 12 + 4
    header = b"MM\x00\x2a" + struct.pack(">I", 8)
    first_ifd = struct.pack(">HHHII", 1, EXIF_IFD_POINTER, TIFF_LONG, 1, exif_ifd_offset) + struct.pack(">I", 0)
    exif_ifd = struct.pack(">HHHII", 1, EXIF_USER_COMMENT, TIFF_UNDEFINED, len(comment), comment_offset)
    return b"Exif\x00\x00" + header + first_ifd + exif_ifd + struct.pack(">I", 0) + comment


def decode_user_comment(data: bytes | str) -> str | None:
    """Decode a UserComment: UNICODE (UTF-16, big- or little-endian, guessed from the zero bytes) or ASCII."""
    if isinstance(data, str):
        return data or None
    header, body = data[:USER_COMMENT_HEADER_SIZE], data[USER_COMMENT_HEADER_SIZE:]
    if header == USER_COMMENT_UNICODE:
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return body.decode("utf_16", errors="replace")
        zeros_at_even, zeros_at_odd = body[0::2].count(0), body[1::2].count(0)
        encoding = "utf_16_le" if zeros_at_odd > zeros_at_even else "utf_16_be"
        return body.decode(encoding, errors="replace").rstrip("\x00") or None
    if header == USER_COMMENT_ASCII:
        return body.decode("ascii", errors="replace").rstrip("\x00") or None
    return data.decode("utf_8", errors="ignore").rstrip("\x00") or None


def read_infotext(image: Image.Image) -> str | None:
    """The infotext of an image: EXIF UserComment (JPEG/WEBP) if any, else the PNG "parameters" text, else a GIF
    comment; the same precedence as A1111's read_info_from_image."""
    user_comment = image.getexif().get_ifd(EXIF_IFD_POINTER).get(EXIF_USER_COMMENT)
    decoded = decode_user_comment(user_comment) if user_comment else None
    if decoded:
        return decoded
    parameters = image.info.get("parameters")
    if isinstance(parameters, str) and parameters:
        return parameters
    comment = image.info.get("comment")
    if isinstance(comment, bytes):
        return comment.decode("utf_8", errors="ignore") or None
    return comment or None


def add_parameters(infotext: str, parameters: Mapping[str, object]) -> str:
    """An infotext with more ``Key: value`` pairs, put before the trailing keys (Version) as A1111 writes a
    script's extra parameters; None values are left out."""
    head, _, line = infotext.rpartition("\n")
    pairs = [f"{key}: {quote_value(value)}" for key, value in parameters.items() if value is not None]
    if not pairs:
        return infotext
    existing = line.split(", ") if line else []
    cut = next(
        (index for index, pair in enumerate(existing) if any(pair.startswith(f"{key}: ") for key in TRAILING_KEYS)),
        len(existing),
    )
    joined = ", ".join(existing[:cut] + pairs + existing[cut:])
    return f"{head}\n{joined}" if head else joined
