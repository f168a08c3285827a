"""Prompt styles kept in A1111's styles.csv: apply, save, edit, delete, and extract them from a prompt.

The file format and the text rules are A1111's (webui 1.7 - 1.10), so styles.csv files carry over:
columns ``name, prompt, negative_prompt`` (the old ``name, text`` header is read too), UTF-8 with an
optional BOM, rows whose name starts with ``#`` are comments. A style's text holding ``{prompt}`` wraps
the user's prompt at that place; otherwise it is appended after ", ". After applying, runs of commas and
of whitespace are tidied (A1111's ``clean_text``), and extraction undoes an application so that pasting
an infotext back selects the styles again.

Written by hand: no library knows A1111's style rules. Reading goes record by record, so a malformed row
is reported and skipped without losing the rows after it; writing goes through a temporary file and a
rename, with the previous file kept as ``styles.csv.bak`` (as A1111 does).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

FIELDS: tuple[str, ...] = ("name", "prompt", "negative_prompt")
PROMPT_MARK = "{prompt}"
_CLEANUPS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(,+\s+)+,?"), ", "),  # runs of commas
    (re.compile(r"\s{2,}"), " "),  # runs of whitespace
)


class StyleError(ValueError):
    """A style operation that cannot be done (message meant for the user)."""


class UnknownStyleError(StyleError):
    """A request names a style that styles.csv does not have."""


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


# --- A1111's text rules ----------------------------------------------------------------------------------------


def clean_text(text: str) -> str:
    """A1111's tidy-up after styles: one ", " for a run of commas, one space for a run of whitespace."""
    for pattern, replacement in _CLEANUPS:
        text = pattern.sub(replacement, text)
    return text.strip(", ")


def merge_prompts(style_text: str, prompt: str) -> str:
    """``{prompt}`` in the style marks where the prompt goes; otherwise the style is appended with ", "."""
    if PROMPT_MARK in style_text:
        return style_text.replace(PROMPT_MARK, prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def apply_style_texts(prompt: str, style_texts: Sequence[str]) -> str:
    """Apply style texts in order (the first one innermost), then tidy as A1111 does."""
    for style_text in style_texts:
        prompt = merge_prompts(style_text, prompt)
    return clean_text(prompt)


def unwrap_style_text(style_text: str, prompt: str) -> tuple[bool, str]:
    """(True, the prompt without the style) when ``style_text`` was applied to it, else (False, prompt)."""
    cleaned_prompt, cleaned_style = clean_text(prompt), clean_text(style_text)
    if PROMPT_MARK in cleaned_style:
        if cleaned_style.count(PROMPT_MARK) > 1:
            return False, prompt  # A1111 cannot unwrap a style holding {prompt} twice either
        left, right = cleaned_style.split(PROMPT_MARK)
        if cleaned_prompt.startswith(left) and cleaned_prompt.endswith(right):
            return True, cleaned_prompt[len(left) : len(cleaned_prompt) - len(right)]
        return False, prompt
    if cleaned_prompt.endswith(cleaned_style):
        inner = cleaned_prompt[: len(cleaned_prompt) - len(cleaned_style)]
        return True, inner.removesuffix(", ")
    return False, prompt


def extract_original_prompts(style: PromptStyle, prompt: str, negative_prompt: str) -> tuple[bool, str, str]:
    """Both prompts without ``style`` when it was applied to both, else (False, prompt, negative_prompt)."""
    if not style.prompt and not style.negative_prompt:
        return False, prompt, negative_prompt
    matched, inner_prompt = unwrap_style_text(style.prompt, prompt)
    if not matched:
        return False, prompt, negative_prompt
    matched, inner_negative = unwrap_style_text(style.negative_prompt, negative_prompt)
    if not matched:
        return False, prompt, negative_prompt
    return True, inner_prompt, inner_negative


# --- reading and writing styles.csv -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StylesFile:
    """What a styles.csv holds: the styles in file order and the problems found while reading."""

    styles: tuple[PromptStyle, ...]
    problems: tuple[str, ...]


def read_records(text: str, label: str) -> Iterator[tuple[int, list[str]] | str]:
    """CSV records with their first line number; a record the csv module rejects yields a problem string
    instead, and reading starts again on the next line (so one broken quote loses one row, not the rest)."""
    lines = text.splitlines(keepends=True)
    start = 0
    while start < len(lines):
        reader = csv.reader(lines[start:], skipinitialspace=True, strict=True)
        record_line = start + 1
        try:
            for record in reader:
                yield record_line, record
                record_line = start + reader.line_num + 1
        except csv.Error as error:
            yield f"{label} line {record_line}: {error}; row skipped"
            start = record_line
            continue
        return


def style_from_record(header: list[str], record: list[str], where: str) -> PromptStyle | str | None:
    """A style, a problem string, or None for a comment row."""
    if len(record) > len(header):
        return f"{where}: {len(record)} fields but the header has {len(header)}; row skipped"
    values = dict(zip(header, record, strict=False))
    name = values.get("name", "").strip()
    if not name:
        return f"{where}: the style has no name; row skipped"
    if name.startswith("#"):
        return None
    if len(record) < 2:
        return f"{where}: expected name,prompt,negative_prompt but found only {record[0]!r}; row skipped"
    prompt = values.get("prompt", values.get("text", ""))
    return PromptStyle(name=name, prompt=prompt, negative_prompt=values.get("negative_prompt", ""))


def parse_styles(text: str, label: str = "styles.csv") -> StylesFile:
    """Styles from the text of a styles.csv; every malformed row is reported and skipped, nothing else lost."""
    styles: dict[str, PromptStyle] = {}
    problems: list[str] = []
    header: list[str] | None = None
    for item in read_records(text.removeprefix("\ufeff"), label):
        if isinstance(item, str):
            problems.append(item)
            continue
        line, record = item
        if not any(field.strip() for field in record):
            continue
        if header is None:
            header = [field.strip().lower() for field in record]
            if "name" not in header or not {"prompt", "text"} & set(header):
                problems.append(f"{label} line {line}: the header must be name,prompt,negative_prompt; file not read")
                return StylesFile((), tuple(problems))
            continue
        style = style_from_record(header, record, f"{label} line {line}")
        if isinstance(style, str):
            problems.append(style)
        elif style is not None:
            if style.name in styles:
                problems.append(f"{label} line {line}: a second style named {style.name!r}; the later one is used")
            styles[style.name] = style
    return StylesFile(tuple(styles.values()), tuple(problems))


def format_styles(styles: Sequence[PromptStyle]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(FIELDS)
    writer.writerows((style.name, style.prompt, style.negative_prompt) for style in styles)
    return buffer.getvalue()


def write_styles_atomic(path: Path, styles: Sequence[PromptStyle]) -> None:
    """Write through a temporary file and a rename (a crash never leaves half a file); the old file -> .bak."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        shutil.copyfile(path, path.with_name(path.name + ".bak"))
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8-sig", newline="") as file:
            file.write(format_styles(styles))
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


# --- the database -----------------------------------------------------------------------------------------------


def check_style(style: PromptStyle) -> PromptStyle:
    """A style that can be saved and read back unchanged (name trimmed), or a StyleError."""
    name = style.name.strip()
    if not name:
        raise StyleError("Give the style a name.")
    if name.startswith("#"):
        raise StyleError("A style name cannot start with '#' (styles.csv reads such rows as comments).")
    if "\n" in name or "\r" in name:
        raise StyleError("A style name must fit on one line.")
    if not style.prompt.strip() and not style.negative_prompt.strip():
        raise StyleError(f"Style {name!r} is empty: write a prompt or a negative prompt first.")
    return PromptStyle(name=name, prompt=style.prompt, negative_prompt=style.negative_prompt)


class StyleDatabase:
    """The styles of one styles.csv, shared by the UI and processing; changes are written at once."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._styles: dict[str, PromptStyle] = {}
        self.problems: tuple[str, ...] = ()
        self._lock = threading.RLock()

    @classmethod
    def load(cls, path: Path) -> StyleDatabase:
        database = cls(path)
        database.reload()
        return database

    def reload(self) -> tuple[str, ...]:
        """Read the file again (a missing file means no styles); returns the problems found, also logged."""
        with self._lock:
            if not self.path.exists():
                self._styles, self.problems = {}, ()
                return self.problems
            try:
                text = self.path.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as error:
                self._styles, self.problems = {}, (f"{self.path.name} cannot be read: {error}",)
            else:
                parsed = parse_styles(text, self.path.name)
                self._styles = {style.name: style for style in parsed.styles}
                self.problems = parsed.problems
            for problem in self.problems:
                logger.warning("styles problem path=%s problem=%s", self.path, problem)
            logger.debug("styles loaded path=%s count=%d problems=%d", self.path, len(self._styles), len(self.problems))
            return self.problems

    def names(self) -> list[str]:
        with self._lock:
            return list(self._styles)

    def get(self, name: str) -> PromptStyle:
        with self._lock:
            style = self._styles.get(name)
        if style is None:
            known = ", ".join(self.names()) or "none"
            raise UnknownStyleError(f"Unknown style {name!r} (styles in {self.path.name}: {known}).")
        return style

    def apply_styles_to_prompt(self, prompt: str, names: Sequence[str]) -> str:
        return apply_style_texts(prompt, [self.get(name).prompt for name in names])

    def apply_negative_styles_to_prompt(self, negative_prompt: str, names: Sequence[str]) -> str:
        return apply_style_texts(negative_prompt, [self.get(name).negative_prompt for name in names])

    def save_style(self, style: PromptStyle) -> PromptStyle:
        """Add a new style; a name already taken is refused (use ``edit_style`` to change one)."""
        style = check_style(style)
        with self._lock:
            if style.name in self._styles:
                raise StyleError(f"A style named {style.name!r} exists already: edit it, or choose another name.")
            self._write({**self._styles, style.name: style})
        logger.info("style saved name=%s path=%s", style.name, self.path)
        return style

    def edit_style(self, old_name: str, style: PromptStyle) -> PromptStyle:
        """Replace style ``old_name`` (renamed when ``style.name`` differs), keeping its place in the file."""
        style = check_style(style)
        with self._lock:
            self.get(old_name)
            if style.name != old_name and style.name in self._styles:
                raise StyleError(f"A style named {style.name!r} exists already.")
            updated = {(style.name if name == old_name else name): value for name, value in self._styles.items()}
            updated[style.name] = style
            self._write(updated)
        logger.info("style edited old_name=%s name=%s path=%s", old_name, style.name, self.path)
        return style

    def delete_style(self, name: str) -> None:
        with self._lock:
            self.get(name)
            self._write({key: value for key, value in self._styles.items() if key != name})
        logger.info("style deleted name=%s path=%s", name, self.path)

    def _write(self, styles: dict[str, PromptStyle]) -> None:
        write_styles_atomic(self.path, list(styles.values()))
        self._styles = styles

    def extract_styles_from_prompt(self, prompt: str, negative_prompt: str) -> tuple[list[str], str, str]:
        """A1111's paste rule: peel off applied styles (outermost first); returns (styles in the order to
        apply them, prompt, negative prompt). Prompts that match no style come back unchanged."""
        extracted: list[str] = []
        candidates = [style for style in (self._styles.get(name) for name in self.names()) if style is not None]
        while True:
            for style in candidates:
                matched, inner_prompt, inner_negative = extract_original_prompts(style, prompt, negative_prompt)
                if matched:
                    prompt, negative_prompt = inner_prompt, inner_negative
                    candidates.remove(style)
                    extracted.append(style.name)
                    break
            else:
                return list(reversed(extracted)), prompt, negative_prompt
