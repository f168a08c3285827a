"""Prompts for families whose pipelines encode text themselves (T5 + CLIP: FLUX.1, Stable Diffusion 3.5).

A1111's emphasis multiplies CLIP token embeddings; T5 has no equivalent Easel could apply faithfully, so for
these families the text goes to the pipeline with the emphasis syntax removed: ``(word:1.2)`` becomes ``word``,
``\\(`` stays a literal parenthesis, ``BREAK`` becomes a space and ``<lora:...>`` tags are taken out (the networks
read them). What cannot be expressed as plain text (prompt editing ``[a:b:0.5]``, alternation ``[a|b]`` and
``AND``) is refused rather than silently flattened.
"""

from __future__ import annotations

from dataclasses import dataclass

from modules.prompts.parser import (
    extract_extra_networks,
    get_learned_conditioning_prompt_schedules,
    is_break,
    parse_prompt_attention,
    split_and_prompts,
)


class PlainPromptError(ValueError):
    """Prompt syntax that a plain-text family cannot run."""


@dataclass(frozen=True)
class PlainPrompt:
    text: str
    weights_dropped: bool  # the prompt had emphasis whose weights were removed


def plain_prompt(prompt: str, steps: int = 20) -> PlainPrompt:
    """The prompt as plain text for a T5 / pipeline-encoded family (see the module's docstring)."""
    text, _ = extract_extra_networks(prompt)
    if len(split_and_prompts(text)) > 1:
        raise PlainPromptError("AND (composable prompts) needs Easel's CLIP prompt encoder, which this family lacks")
    schedule = get_learned_conditioning_prompt_schedules([text], steps)[0]
    if len(schedule) > 1:
        raise PlainPromptError(
            "prompt editing and alternation ([a:b:when], [a|b]) need Easel's CLIP prompt encoder, which this family "
            "lacks"
        )
    pieces = parse_prompt_attention(str(schedule[0][1]))
    words = []
    dropped = False
    for piece in pieces:
        if is_break(piece):
            words.append(" ")
            continue
        words.append(str(piece[0]))
        dropped = dropped or float(piece[1]) != 1.0
    return PlainPrompt(" ".join("".join(words).split()), dropped)
