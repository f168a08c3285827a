"""What the prompt area's style buttons and token counters do, as plain functions (no gradio here)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modules.application import TokenCountInput
from modules.models.service import ModelService
from modules.processing.requests import MAX_PROMPT_CHARS
from modules.prompts.conditioning import PromptEncoder, TextEncoderPart, prompt_encoder_of
from modules.prompts.styles import PromptStyle, StyleDatabase, StyleError

logger = logging.getLogger(__name__)


# --- token counter ----------------------------------------------------------------------------------------------


class TokenCounter:
    """A1111's "N/75" counter: the loaded model's tokenizer(s), else the SD 1.x CLIP tokenizer in configs/.

    The fallback tokenizer is read on first use (not at import) and kept."""

    def __init__(
        self,
        models: ModelService | None,
        tokenizer_dir: Path,
        listeners: Sequence[Callable[[TokenCountInput], None]] = (),
    ) -> None:
        self.models = models
        self.tokenizer_dir = tokenizer_dir
        self.listeners = listeners  # before each count (A1111's on_before_token_counter); they may change it
        self._fallback: PromptEncoder | None = None
        self._lock = threading.Lock()

    def fallback_encoder(self) -> PromptEncoder:
        with self._lock:
            if self._fallback is None:
                from transformers import CLIPTokenizer

                tokenizer = CLIPTokenizer.from_pretrained(str(self.tokenizer_dir))
                # count_tokens only tokenizes, so no text encoder is needed for counting
                self._fallback = PromptEncoder([TextEncoderPart(tokenizer, None)], model_key="token-counter")
            return self._fallback

    def count(self, prompt: str, steps: int = 20) -> tuple[int, int]:
        """(tokens used, limit); the limit grows 75, 150, 225 ... with the chunks the prompt needs."""
        steps = max(1, int(steps or 20))
        model = self.models.current if self.models is not None else None
        if model is not None:
            try:
                return prompt_encoder_of(model).count_tokens(prompt, steps)
            except RuntimeError as error:  # a fast tokenizer busy in the generation thread ("Already borrowed")
                logger.debug("token count fell back to the config tokenizer error=%s", error)
        return self.fallback_encoder().count_tokens(prompt, steps)


def token_counter_text(used: int, limit: int) -> str:
    return f"{used}/{limit}"


def count_text(
    counter: TokenCounter,
    prompt: str | None,
    steps: float | None,
    styles: Sequence[str] | None = None,
    is_positive: bool = True,
) -> str:
    """The counter's text for a prompt box; a prompt that cannot be counted shows "?/75" and is logged; one over
    the prompt length cap is not tokenized (generating refuses it with a message). The counter's listeners see
    the prompt, steps, selected styles and which box first, and what they leave is counted (A1111's order)."""
    try:
        query = TokenCountInput(prompt or "", int(steps or 20), list(styles or []), is_positive)
        for listener in counter.listeners:
            listener(query)
        prompt, steps = str(query.prompt or ""), int(query.steps or 20)
        if len(prompt) > MAX_PROMPT_CHARS:
            return f"over {MAX_PROMPT_CHARS} characters"
        return token_counter_text(*counter.count(prompt, steps))
    except Exception:  # the UI boundary: a counter must never break typing
        logger.exception("token count failed")
        return "?/75"


# --- styles -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StyleOutcome:
    """The result of a style button: the style names now known, the one to show in the editor, a message."""

    names: list[str]
    selected: str | None = None
    message: str = ""
    error: bool = False


def problems_text(database: StyleDatabase) -> str:
    if not database.problems:
        return ""
    lines = "\n".join(f"- {problem}" for problem in database.problems)
    return f"Some rows of {database.path.name} were skipped (a copy is kept as .bak when you save):\n{lines}"


def apply_styles_to_boxes(
    database: StyleDatabase, prompt: str, negative_prompt: str, names: Sequence[str]
) -> tuple[str, str, list[str]]:
    """A1111's "apply styles": the styles are written into the prompt boxes and unselected."""
    if not names:
        return prompt, negative_prompt, []
    return (
        database.apply_styles_to_prompt(prompt, names),
        database.apply_negative_styles_to_prompt(negative_prompt, names),
        [],
    )


def save_prompts_as_style(database: StyleDatabase, name: str, prompt: str, negative_prompt: str) -> StyleOutcome:
    try:
        style = database.save_style(PromptStyle(name=name or "", prompt=prompt or "", negative_prompt=negative_prompt))
    except StyleError as error:
        return StyleOutcome(database.names(), None, str(error), error=True)
    return StyleOutcome(database.names(), style.name, f"Saved style {style.name!r}.")


def edit_style(database: StyleDatabase, old_name: str | None, name: str, prompt: str, negative: str) -> StyleOutcome:
    if not old_name:
        return StyleOutcome(database.names(), None, "Choose the style to edit first.", error=True)
    try:
        style = database.edit_style(
            old_name, PromptStyle(name=name or "", prompt=prompt or "", negative_prompt=negative)
        )
    except StyleError as error:
        return StyleOutcome(database.names(), old_name, str(error), error=True)
    return StyleOutcome(database.names(), style.name, f"Saved changes to style {style.name!r}.")


def delete_style(database: StyleDatabase, name: str | None) -> StyleOutcome:
    if not name:
        return StyleOutcome(database.names(), None, "Choose the style to delete first.", error=True)
    try:
        database.delete_style(name)
    except StyleError as error:
        return StyleOutcome(database.names(), None, str(error), error=True)
    return StyleOutcome(database.names(), None, f"Deleted style {name!r}.")


def reload_styles(database: StyleDatabase) -> StyleOutcome:
    database.reload()
    count = len(database.names())
    message = problems_text(database) or f"{count} style{'s' if count != 1 else ''} in {database.path.name}."
    return StyleOutcome(database.names(), None, message, error=bool(database.problems))


def style_fields(database: StyleDatabase, name: str | None) -> tuple[str, str, str]:
    """(name, prompt, negative prompt) of a style for the editor; empty when it is gone."""
    if not name or name not in database.names():
        return "", "", ""
    style = database.get(name)
    return style.name, style.prompt, style.negative_prompt


def known_styles(database: StyleDatabase, selected: Sequence[str] | None) -> list[str]:
    """The selected styles that still exist (a remembered or pasted style may have been deleted)."""
    names = set(database.names())
    return [name for name in selected or [] if name in names]


def with_pasted_styles(database: StyleDatabase, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Pasted infotext fields with the styles found in its prompts selected and taken out of the prompts
    (A1111's paste rule), so that generating again gives the same prompts. No style found: none selected."""
    fields = dict(fields)
    if "prompt" not in fields and "negative_prompt" not in fields:
        return fields
    found, prompt, negative = database.extract_styles_from_prompt(
        str(fields.get("prompt", "")), str(fields.get("negative_prompt", ""))
    )
    fields["styles"] = found
    if found:
        fields["prompt"], fields["negative_prompt"] = prompt, negative
    return fields
