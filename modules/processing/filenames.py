"""A1111's file and folder name patterns (``[seed]``, ``[prompt_words]``, ``[datetime<%Y><UTC>]`` ...).

Behaviour follows A1111 v1.10.1's ``FilenameGenerator`` and ``sanitize_filename_part`` (modules/images.py): a
pattern is literal text with ``[token]`` and ``[token<arg><arg>]`` parts; an unknown token stays as it is written;
a token with nothing to say (``[seed_last]`` of a single image, ``[batch_number]`` with batch size 1,
``[denoising]`` without denoising) is dropped together with the literal text before it. Every token value is
sanitized (A1111's forbidden characters become ``_``, at most ``max_length`` characters).

Easel adds what A1111 leaves to luck, so a prompt can never write outside the output folder: ``relative_folder``
and ``file_stem`` clean every path part (NUL and control characters, ``..``, leading separators, drive letters,
Windows reserved names, over-long parts), and ``contained_path`` resolves the result and refuses anything that
lands outside the folder. Written by hand: no library implements A1111's pattern language.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePath
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from PIL import Image

logger = logging.getLogger(__name__)

INVALID_FILENAME_CHARS = '#<>:"/\\|?*\n\r\t'  # A1111's set (without --unix-filenames-sanitization)
INVALID_FILENAME_PREFIX = " "
INVALID_FILENAME_POSTFIX = " ."
DEFAULT_MAX_LENGTH = 128  # A1111's --filenames-max-length default
DEFAULT_TIME_FORMAT = "%Y%m%d%H%M%S"
DEFAULT_HASH_LENGTH = 8
MAX_NAME_BYTES = 255  # the usual file system limit of one file or folder name, in encoded bytes
NONLETTERS = re.compile(r"[\s" + re.escape(string.punctuation) + "]+")
PATTERN_PART = re.compile(r"(.*?)(?:\[([^\[\]]+)\]|$)")
PATTERN_ARGUMENT = re.compile(r"(.*)<([^>]*)>$")
# Names Windows refuses for a file or folder, with or without an extension.
WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{device}{number}" for device in ("COM", "LPT") for number in (*"123456789", "¹", "²", "³")}
)
CONTROL_CHARS = {code: "_" for code in range(32)} | {0x7F: "_"}
UNSAFE_PATH_CHARS = CONTROL_CHARS | {ord(char): "_" for char in INVALID_FILENAME_CHARS}


class SkipPreviousText:
    """A token's answer meaning "nothing here": the token and the literal text before it are dropped."""


SKIP = SkipPreviousText()


class UnsafePathError(ValueError):
    """A generated name would leave the output folder."""


@dataclass(frozen=True)
class FilenameValues:
    """What the name patterns of one saved image may use; processing fills it from the run object.

    ``seed``, ``prompt`` and ``negative_prompt`` are the saved image's own (styles applied); ``all_seeds`` every
    seed of the job (A1111's ``p.all_seeds``); ``batch_index`` / ``iteration`` the image's place in its batch and
    the batch's in the job (from 0); ``scheduler`` the schedule type the sampler runs, "Automatic" already
    resolved to the sampler's default (A1111's ``get_scheduler_str``); ``prompt_no_styles`` the prompt before
    styles were added (None: the prompt); ``model_name`` the checkpoint's name without extension (a subfolder is
    dropped), ``model_hash`` its short hash; ``denoising_strength`` None when the job has no denoising;
    ``vae_name`` the VAE file in use, None when the checkpoint's own VAE decodes ("NoneType", as A1111);
    ``job_timestamp`` "%Y%m%d%H%M%S" at the job's start; ``user`` the logged-in user (None: "[user]" stays).
    ``width`` / ``height`` are used only when no image is given (A1111 reads the saved image's size).
    """

    seed: int | None = None
    prompt: str = ""
    negative_prompt: str = ""
    prompt_no_styles: str | None = None
    styles: tuple[str, ...] = ()
    all_seeds: tuple[int, ...] = ()
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    sampler: str | None = None
    scheduler: str | None = None
    model_name: str | None = None
    model_hash: str | None = None
    clip_skip: int | None = None
    denoising_strength: float | None = None
    job_timestamp: str | None = None
    batch_size: int = 1
    batch_index: int = 0
    n_iter: int = 1
    iteration: int = 0
    user: str | None = None
    vae_name: str | None = None


@dataclass(frozen=True)
class NameRules:
    """The options the generator reads: A1111's ``directories_max_prompt_words`` and ``--filenames-max-length``."""

    max_prompt_words: int = 8
    max_length: int = DEFAULT_MAX_LENGTH


def sanitize_filename_part(
    text: str | None, replace_spaces: bool = True, max_length: int = DEFAULT_MAX_LENGTH
) -> str | None:
    """A1111's sanitize_filename_part: forbidden characters -> "_", no leading space, no trailing space or dot,
    at most ``max_length`` characters (control characters and NUL are replaced too)."""
    if text is None:
        return None
    if replace_spaces:
        text = text.replace(" ", "_")
    text = text.translate(UNSAFE_PATH_CHARS)
    return text.lstrip(INVALID_FILENAME_PREFIX)[:max_length].rstrip(INVALID_FILENAME_POSTFIX)


def hash_length(arguments: Sequence[str], default: int | None) -> int | None:
    return int(arguments[0]) if arguments and arguments[0] != "" else default


def last_path_part(name: str | None) -> str | None:
    return re.split(r"[\\/]", name)[-1] if name else None


def vae_stem(name: str | None) -> str | None:
    """A1111's [vae_filename]: the file name up to its first dot (".x.pt" -> "x")."""
    if not name:
        return None
    parts = last_path_part(name).split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "" else parts[0]


@dataclass
class FilenameGenerator:
    """Turns a pattern into text for one image (A1111's FilenameGenerator, on typed values)."""

    values: FilenameValues
    image: Image.Image | None = None
    rules: NameRules = field(default_factory=NameRules)
    now: datetime | None = None
    basename: str = ""

    def apply(self, pattern: str) -> str:
        """The pattern with every known token replaced (see the module docstring)."""
        result = []
        for match in PATTERN_PART.finditer(pattern):
            text, token = match.groups()
            if token is None:
                result.append(text)
                continue
            token, arguments = split_arguments(token)
            replacement = self.replacement(token, arguments)
            if replacement is SKIP:
                continue
            result.append(text + (f"[{token}]" if replacement is None else str(replacement)))
        return "".join(result)

    def replacement(self, token: str, arguments: list[str]) -> object:
        method_name = TOKENS.get(token.lower())
        if method_name is None:
            return None
        try:
            return getattr(self, method_name)(*arguments)
        except (TypeError, ValueError) as error:  # a bad argument, e.g. [image_hash<abc>]
            logger.warning("filename token failed token=%s arguments=%s error=%s", token, arguments, error)
            return None

    def sanitize(self, text: str | None, replace_spaces: bool = True) -> str | None:
        return sanitize_filename_part(text, replace_spaces, self.rules.max_length)

    # --- tokens (names as A1111's; each returns text, SKIP, or None to leave the token as written) --------------

    def token_basename(self) -> str:
        return self.basename or "img"

    def token_seed(self) -> object:
        return "" if self.values.seed is None else self.values.seed

    def token_seed_first(self) -> object:
        if self.values.batch_size == 1 or not self.values.all_seeds:
            return self.token_seed()
        return self.values.all_seeds[0]

    def token_seed_last(self) -> object:
        if self.values.batch_size == 1 or not self.values.all_seeds:
            return SKIP
        return self.values.all_seeds[-1]

    def token_steps(self) -> object:
        return self.values.steps

    def token_cfg(self) -> object:
        return self.values.cfg_scale

    def token_width(self) -> object:
        return self.image.width if self.image is not None else self.values.width

    def token_height(self) -> object:
        return self.image.height if self.image is not None else self.values.height

    def token_styles(self) -> str | None:
        chosen = ", ".join(style for style in self.values.styles if style != "None")
        return self.sanitize(chosen or "None", replace_spaces=False)

    def token_sampler(self) -> str | None:
        return self.sanitize(self.values.sampler, replace_spaces=False)

    def scheduler_label(self) -> str | None:
        return self.values.scheduler.capitalize() if self.values.scheduler else None

    def token_scheduler(self) -> object:
        label = self.scheduler_label()
        return SKIP if label is None else self.sanitize(label, replace_spaces=False)

    def token_sampler_scheduler(self) -> object:
        label = self.scheduler_label()
        if label is None or self.values.sampler is None:
            return SKIP
        return self.sanitize(f"{self.values.sampler} {label}", replace_spaces=False)

    def token_model_hash(self) -> str | None:
        return self.sanitize(self.values.model_hash, replace_spaces=False)

    def token_model_name(self) -> str | None:
        return self.sanitize(last_path_part(self.values.model_name), replace_spaces=False)

    def current_time(self) -> datetime:
        return self.now or datetime.now()

    def token_date(self) -> str:
        return self.current_time().strftime("%Y-%m-%d")

    def token_datetime(self, *arguments: str) -> str | None:
        """[datetime], [datetime<Format>], [datetime<Format><Time zone>]; a bad zone means local time and a bad
        format the default one, as A1111."""
        time_format = arguments[0] if arguments and arguments[0] != "" else DEFAULT_TIME_FORMAT
        zone = None
        if len(arguments) > 1:
            try:
                zone = ZoneInfo(arguments[1])
            except (ZoneInfoNotFoundError, ValueError):  # ValueError: a key such as "../x" is refused
                zone = None
        moment = self.current_time().astimezone(zone)
        try:
            formatted = moment.strftime(time_format)
        except (ValueError, TypeError):
            formatted = moment.strftime(DEFAULT_TIME_FORMAT)
        return self.sanitize(formatted, replace_spaces=False)

    def token_job_timestamp(self) -> str | None:
        return self.sanitize(self.values.job_timestamp or self.current_time().strftime(DEFAULT_TIME_FORMAT))

    def string_hash(self, text: str, arguments: Sequence[str]) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[: hash_length(arguments, DEFAULT_HASH_LENGTH)]

    def token_prompt_hash(self, *arguments: str) -> str:
        return self.string_hash(self.values.prompt, arguments)

    def token_negative_prompt_hash(self, *arguments: str) -> str:
        return self.string_hash(self.values.negative_prompt, arguments)

    def token_full_prompt_hash(self, *arguments: str) -> str:
        return self.string_hash(f"{self.values.prompt} {self.values.negative_prompt}", arguments)

    def token_prompt(self) -> str | None:
        return self.sanitize(self.values.prompt)

    def token_prompt_no_styles(self) -> str | None:
        prompt = self.values.prompt if self.values.prompt_no_styles is None else self.values.prompt_no_styles
        return self.sanitize(prompt.strip().strip(",").strip(), replace_spaces=False)

    def token_prompt_spaces(self) -> str | None:
        return self.sanitize(self.values.prompt, replace_spaces=False)

    def token_prompt_words(self) -> str | None:
        words = [word for word in NONLETTERS.split(self.values.prompt or "") if word] or ["empty"]
        return self.sanitize(" ".join(words[: self.rules.max_prompt_words]), replace_spaces=False)

    def token_batch_number(self) -> object:
        return SKIP if self.values.batch_size == 1 else self.values.batch_index + 1

    def token_batch_size(self) -> object:
        return self.values.batch_size

    def token_generation_number(self) -> object:
        values = self.values
        if values.n_iter == 1 and values.batch_size == 1:
            return SKIP
        return values.iteration * values.batch_size + values.batch_index + 1

    def token_hasprompt(self, *arguments: str) -> str | None:
        """[hasprompt<word|default><word2>]: each word found in the prompt, else its default (if any)."""
        lower = self.values.prompt.lower()
        found = ""
        for argument in arguments:
            if argument == "":
                continue
            division = argument.split("|")
            expected = division[0].lower()
            found += expected if expected in lower else (division[1] if len(division) > 1 else "")
        return self.sanitize(found)

    def token_clip_skip(self) -> object:
        return self.values.clip_skip

    def token_denoising(self) -> object:
        return self.values.denoising_strength if self.values.denoising_strength else SKIP

    def token_user(self) -> str | None:
        return self.sanitize(self.values.user, replace_spaces=False)

    def token_vae_filename(self) -> str | None:
        stem = vae_stem(self.values.vae_name)
        return "NoneType" if stem is None else self.sanitize(stem, replace_spaces=False)

    def token_none(self) -> str:
        return ""

    def token_image_hash(self, *arguments: str) -> str | None:
        if self.image is None:
            return None
        return hashlib.sha256(self.image.tobytes()).hexdigest()[: hash_length(arguments, None)]


TOKENS: MappingProxyType[str, str] = MappingProxyType(
    {name.removeprefix("token_"): name for name in vars(FilenameGenerator) if name.startswith("token_")}
)


def split_arguments(token: str) -> tuple[str, list[str]]:
    """``datetime<%Y><UTC>`` -> ("datetime", ["%Y", "UTC"])."""
    arguments: list[str] = []
    while (match := PATTERN_ARGUMENT.match(token)) is not None:
        token, argument = match.groups()
        arguments.insert(0, argument)
    return token, arguments


# --- safe paths -------------------------------------------------------------------------------------------------


def safe_path_part(text: str, max_length: int) -> str:
    """One file or folder name that every system accepts and that cannot climb: forbidden and control characters
    -> "_", no leading space or dot, no trailing space or dot, at most ``max_length`` characters (and 254 bytes),
    and "_" before a Windows reserved name ("CON.txt" -> "_CON.txt"). May be empty (the caller drops it)."""
    cleaned = cut_to_bytes(text.translate(UNSAFE_PATH_CHARS).strip(" .")[:max_length], MAX_NAME_BYTES - 1)
    if cleaned.split(".")[0].rstrip(" ").upper() in WINDOWS_RESERVED:
        cleaned = f"_{cleaned}"
    return cleaned


def relative_folder(generated: str, max_length: int = DEFAULT_MAX_LENGTH) -> PurePath:
    """A generated folder pattern as a relative path: separators split it into folders (A1111 allows
    "[date]/[model_name]"); each part goes through ``safe_path_part``; empty, "." and ".." parts are dropped."""
    parts = [safe_path_part(part, max_length) for part in re.split(r"[\\/]", generated)]
    return PurePath(*[part for part in parts if part])


def contained_path(folder: Path, relative: PurePath | str) -> Path:
    """``folder / relative``, refused (UnsafePathError) unless it resolves inside ``folder``."""
    base = folder.resolve()
    target = (base / relative).resolve()
    if target == base or not target.is_relative_to(base):
        raise UnsafePathError(f"refused to save outside the output folder {base}: {relative!s}")
    return target


def name_length_limit(folder: Path) -> int:
    """The longest file name the folder's file system takes (255 where it cannot be asked)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        return min(255, os.statvfs(existing).f_namemax)
    except (AttributeError, OSError):
        return 255


def cut_to_bytes(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (never inside a character), without a trailing space or dot."""
    encoded = text.encode("utf-8")
    if len(encoded) > limit:
        text = encoded[:limit].decode("utf-8", errors="ignore")
    return text.rstrip(" .")


def fit_stem(stem: str, extension: str, limit: int) -> str:
    """Cut ``stem`` so that "stem.ext" fits in ``limit`` bytes (A1111 cuts to the file system's limit too)."""
    return cut_to_bytes(stem, limit - len(extension) - 1)
