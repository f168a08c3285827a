"""A1111 prompt syntax, parsed to plain data (no torch).

Semantics follow AUTOMATIC1111 webui 1.9/1.10 (``modules/prompt_parser.py`` and
``modules/extra_networks.py``) so that prompts written for A1111 mean the same here:

- attention: ``(x)`` x1.1, ``[x]`` /1.1, ``(x:w)``, escapes ``\\( \\) \\[ \\] \\\\``, unclosed brackets
  apply to the end, ``BREAK`` as ``["BREAK", -1]``, neighbours of equal weight merged;
- scheduling: ``[from:to:when]``, ``[to:when]``, ``[from::when]``, nesting, ``[a|b]`` alternation,
  the hires-pass step rules;
- composable diffusion: ``a AND b :0.8``;
- extra-network tags ``<kind:name:args>``.

Nothing here raises on any string: input that does not parse is taken as plain text, as A1111 does.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

logger = logging.getLogger(__name__)

ROUND_BRACKET_MULTIPLIER = 1.1
SQUARE_BRACKET_MULTIPLIER = 1 / 1.1
BREAK_WORD = "BREAK"
BREAK_WEIGHT = -1.0

# --- attention -----------------------------------------------------------------------------------

# Written by hand (no library parses A1111's attention syntax). One alternative per token kind; the
# order matters: escapes first, then brackets, then a ":number)" closing, then runs of plain text.
ATTENTION_TOKEN = re.compile(
    r"""
    (?P<escape>\\[()\[\]\\]?)              # \( \) \[ \] \\ or a lone backslash
    |(?P<open>[(\[])
    |:\s*(?P<weight>[+-]?[.\d]+)\s*\)      # ":1.3)" closes a round bracket with an explicit weight
    |(?P<close>[)\]])
    |(?P<text>[^\\()\[\]:]+|:)
    """,
    re.VERBOSE,
)
# A1111 has r"\s*\bBREAK\b\s*": quadratic on long whitespace (tried again from each blank of a run). Here leading
# whitespace is taken only from where its run starts (the look-behind), which gives the same splits in linear time.
BREAK_SPLIT = re.compile(r"(?:(?<!\s)\s++)?\bBREAK\b\s*+")


def _float_or_none(number: str) -> float | None:
    try:
        return float(number)
    except ValueError:
        return None


# A bracket multiplies the weights of the pieces from where it opened to where it closed (the end, when unclosed).
# The ranges are recorded while parsing and applied at the end in the same order with numpy: the same products
# (float64 multiplication either way), but deep nesting costs C loops, not Python ones (A1111 multiplies each
# piece in Python: 16,000 unclosed "(" took 5 s).
Multiplication = tuple[int, int, float]


def _apply_multiplications(pieces: list[list[str | float]], multiplications: list[Multiplication]) -> None:
    if not multiplications:
        return
    weights = np.array([float(piece[1]) for piece in pieces], dtype=np.float64)
    with np.errstate(over="ignore"):  # thousands of brackets reach inf, as Python floats do (silently)
        for start, end, multiplier in multiplications:
            weights[start:end] *= multiplier
    for piece, weight in zip(pieces, weights.tolist(), strict=True):
        piece[1] = weight


def _append_text(pieces: list[list[str | float]], text: str) -> None:
    for index, part in enumerate(BREAK_SPLIT.split(text)):
        if index > 0:
            pieces.append([BREAK_WORD, BREAK_WEIGHT])
        pieces.append([part, 1.0])


def _merge_equal_weights(pieces: list[list[str | float]]) -> list[list[str | float]]:
    # texts collected in lists and joined once: adding to a growing string is quadratic on many small pieces
    groups: list[tuple[list[str], str | float]] = []
    for text, weight in pieces:
        if groups and groups[-1][1] == weight:
            groups[-1][0].append(str(text))
        else:
            groups.append(([str(text)], weight))
    return [["".join(texts) if len(texts) > 1 else texts[0], weight] for texts, weight in groups]


def parse_prompt_attention(text: str) -> list[list[str | float]]:
    """Split ``text`` into ``[text, weight]`` pieces, A1111's shape.

    >>> parse_prompt_attention("an (important) word")
    [['an ', 1.0], ['important', 1.1], [' word', 1.0]]
    >>> parse_prompt_attention("(unnecessary)(parens)")
    [['unnecessaryparens', 1.1]]
    """
    pieces: list[list[str | float]] = []
    round_starts: list[int] = []
    square_starts: list[int] = []
    multiplications: list[Multiplication] = []
    for match in ATTENTION_TOKEN.finditer(text):
        token = match.group(0)
        weight_text = match.group("weight")
        if match.group("escape") is not None:
            pieces.append([token[1:], 1.0])
        elif token == "(":
            round_starts.append(len(pieces))
        elif token == "[":
            square_starts.append(len(pieces))
        elif weight_text is not None and round_starts:
            weight = _float_or_none(weight_text)
            if weight is None:  # "(a:1.2.3)": A1111 raises here; we keep the text and close the bracket
                pieces.append([token[:-1], 1.0])
                weight = ROUND_BRACKET_MULTIPLIER
            multiplications.append((round_starts.pop(), len(pieces), weight))
        elif token == ")" and round_starts:
            multiplications.append((round_starts.pop(), len(pieces), ROUND_BRACKET_MULTIPLIER))
        elif token == "]" and square_starts:
            multiplications.append((square_starts.pop(), len(pieces), SQUARE_BRACKET_MULTIPLIER))
        else:
            _append_text(pieces, token)
    for start in round_starts:
        multiplications.append((start, len(pieces), ROUND_BRACKET_MULTIPLIER))
    for start in square_starts:
        multiplications.append((start, len(pieces), SQUARE_BRACKET_MULTIPLIER))
    _apply_multiplications(pieces, multiplications)
    if not pieces:
        pieces = [["", 1.0]]
    return _merge_equal_weights(pieces)


def is_break(piece: list[str | float] | tuple[str, float]) -> bool:
    """True for the ``["BREAK", -1]`` marker that parse_prompt_attention emits."""
    return piece[0] == BREAK_WORD and piece[1] == BREAK_WEIGHT


# --- scheduling (prompt editing and alternation) -------------------------------------------------

# Written by hand: A1111 parses this with a lark Earley grammar, which takes minutes on a few hundred
# words with brackets. This recursive-descent parser accepts the same language and resolves its one
# ambiguity the same way (a "[" or "(" at top level opens a structure when one parses from there,
# otherwise it is a literal character). Grammar, for reference:
#   top level: (item | any of "[ ] ( ) :")*, where "|" is an error
#   item:      text | "(" seq ")" | "(" seq ":" seq ")" | "[" seq "]"
#              | "[" [seq ":"] seq ":" ws? NUMBER ws? "]"          (scheduled)
#              | "[" seq ("|" seq)+ "]"                             (alternate)
#   text:      characters other than \ [ ] ( ) : | , or "\" followed by any character but a newline
# A prompt outside this language is not scheduled at all (one entry with the whole text).

_NUMBER = r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?"
_WHEN_ONLY = re.compile(rf"\s*({_NUMBER})\s*")
_WHEN_CLOSE = re.compile(rf"\s*({_NUMBER})\s*\]")
_SEQUENCE_STOP = frozenset(":|)]")


class _ScheduleSyntaxError(Exception):
    """The prompt is outside the scheduling language; it is then taken as plain text."""


@dataclass(frozen=True)
class _Scheduled:
    before: tuple[_Node, ...]
    after: tuple[_Node, ...]
    when: str


@dataclass(frozen=True)
class _Alternate:
    options: tuple[tuple[_Node, ...], ...]


_Node = str | _Scheduled | _Alternate


class _ScheduleParser:
    """One parse of one prompt; structures are memoised by position (they do not depend on context)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.structures: dict[int, tuple[list[_Node], int] | None] = {}

    def parse(self) -> list[_Node]:
        text, nodes, position = self.text, [], 0
        while position < len(text):
            char = text[position]
            if char == "|":
                raise _ScheduleSyntaxError("'|' outside an alternation")
            if char in "([":
                structure = self.structure_at(position)
                if structure is not None:
                    nodes.extend(structure[0])
                    position = structure[1]
                    continue
            if char in "()[]:":
                nodes.append(char)
                position += 1
                continue
            position = self.read_text(position, nodes)
        return nodes

    def read_text(self, position: int, nodes: list[_Node]) -> int:
        """Append one text character (or an escape pair) at ``position``; return the next position."""
        text = self.text
        if text[position] != "\\":
            nodes.append(text[position])
            return position + 1
        if position + 1 < len(text) and text[position + 1] != "\n":
            nodes.append(text[position : position + 2])
            return position + 2
        raise _ScheduleSyntaxError("backslash at the end of the prompt or before a newline")

    def sequence(self, position: int) -> tuple[list[_Node], int]:
        """Items inside brackets up to the next ':', '|', ')' or ']' at this level (or the end)."""
        text, nodes = self.text, []
        while position < len(text) and text[position] not in _SEQUENCE_STOP:
            if text[position] in "([":
                structure = self.structure_at(position)
                if structure is None:
                    raise _ScheduleSyntaxError("unclosed bracket inside brackets")
                nodes.extend(structure[0])
                position = structure[1]
            else:
                position = self.read_text(position, nodes)
        return nodes, position

    def structure_at(self, position: int) -> tuple[list[_Node], int] | None:
        if position not in self.structures:
            try:
                parse = self.round_at if self.text[position] == "(" else self.square_at
                self.structures[position] = parse(position)
            except _ScheduleSyntaxError:
                self.structures[position] = None
        return self.structures[position]

    def expect(self, position: int, chars: str) -> str:
        if position >= len(self.text) or self.text[position] not in chars:
            raise _ScheduleSyntaxError(f"expected one of {chars!r}")
        return self.text[position]

    def round_at(self, position: int) -> tuple[list[_Node], int]:
        first, position = self.sequence(position + 1)
        if self.expect(position, "):") == ")":
            return ["(", *first, ")"], position + 1
        second, position = self.sequence(position + 1)
        self.expect(position, ")")
        return ["(", *first, ":", *second, ")"], position + 1

    def square_at(self, position: int) -> tuple[list[_Node], int]:
        first, position = self.sequence(position + 1)
        closer = self.expect(position, "]|:")
        if closer == "]":
            return ["[", *first, "]"], position + 1
        if closer == "|":
            return self.alternate_from(first, position)
        second, position = self.sequence(position + 1)
        if self.expect(position, "]:") == ":":
            match = _WHEN_CLOSE.match(self.text, position + 1)
            if match is None:
                raise _ScheduleSyntaxError("expected a step number")
            return [_Scheduled(tuple(first), tuple(second), match.group(1))], match.end()
        when = _WHEN_ONLY.fullmatch("".join(node for node in second if isinstance(node, str)))
        if when is None or not all(isinstance(node, str) and len(node) == 1 for node in second):
            raise _ScheduleSyntaxError("expected a step number")
        return [_Scheduled((), tuple(first), when.group(1))], position + 1

    def alternate_from(self, first: list[_Node], position: int) -> tuple[list[_Node], int]:
        options = [tuple(first)]
        while self.text[position] == "|":
            option, position = self.sequence(position + 1)
            options.append(tuple(option))
            self.expect(position, "|]")
        return [_Alternate(tuple(options))], position + 1


@dataclass(frozen=True)
class _StepRule:
    """How ``when`` numbers map to steps for one pass."""

    steps: int
    int_offset: int
    fraction_offset: float
    use_old_scheduling: bool

    def step_of(self, number: str) -> int:
        value = float(number)
        if self.use_old_scheduling:
            value = value * self.steps if value < 1 else value
        elif "." in number:
            value = (value - self.fraction_offset) * self.steps
        else:
            value = value - self.int_offset
        if math.isnan(value):
            return -1
        # clamped below at -1: every value under 1 behaves the same (never a switch step)
        return int(min(max(value, -1.0), float(self.steps)))


def _step_rule(base_steps: int, hires_steps: int | None, use_old_scheduling: bool) -> _StepRule:
    if hires_steps is None or use_old_scheduling:
        return _StepRule(base_steps, 0, 0.0, use_old_scheduling)
    return _StepRule(hires_steps, base_steps, 1.0, use_old_scheduling)


def _collect_switch_steps(nodes: tuple[_Node, ...] | list[_Node], rule: _StepRule, steps: set[int]) -> None:
    for node in nodes:
        if isinstance(node, _Scheduled):
            when = rule.step_of(node.when)
            if when >= 1:
                steps.add(when)
            _collect_switch_steps(node.before, rule, steps)
            _collect_switch_steps(node.after, rule, steps)
        elif isinstance(node, _Alternate):
            steps.update(range(1, rule.steps + 1))
            for option in node.options:
                _collect_switch_steps(option, rule, steps)


def _render_at_step(nodes: tuple[_Node, ...] | list[_Node], step: int, rule: _StepRule) -> str:
    parts: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, _Scheduled):
            parts.append(_render_at_step(node.before if step <= rule.step_of(node.when) else node.after, step, rule))
        else:
            parts.append(_render_at_step(node.options[(step - 1) % len(node.options)], step, rule))
    return "".join(parts)


def _schedule_one(prompt: str, rule: _StepRule) -> list[list[int | str]]:
    if "[" not in prompt:  # nothing can be scheduled: skip the parse
        return [[rule.steps, prompt]]
    try:
        nodes = _ScheduleParser(prompt).parse()
        steps = {rule.steps}
        _collect_switch_steps(nodes, rule, steps)
        return [[step, _render_at_step(nodes, step, rule)] for step in sorted(steps)]
    except _ScheduleSyntaxError:
        return [[rule.steps, prompt]]
    except RecursionError:
        logger.warning("prompt schedule nested too deeply, taken as plain text length=%d", len(prompt))
        return [[rule.steps, prompt]]


def get_learned_conditioning_prompt_schedules(
    prompts: Iterable[str], base_steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> list[list[list[int | str]]]:
    """For each prompt, ``[[end_at_step, text], ...]`` (A1111's shape and rules).

    Without ``hires_steps`` the schedule covers the first pass (``when`` < 1 is a fraction of
    ``base_steps``, otherwise a step number). With ``hires_steps`` it is the hires pass's schedule in
    hires steps: integers count on from the base steps, numbers with a dot between 1 and 2 are a
    fraction of the hires steps. ``use_old_scheduling`` restores A1111's pre-1.6 rules.

    >>> get_learned_conditioning_prompt_schedules(["a [b:3]"], 10)
    [[[3, 'a '], [10, 'a b']]]
    """
    prompt_list = list(prompts)
    rule = _step_rule(base_steps, hires_steps, use_old_scheduling)
    schedules = {prompt: _schedule_one(prompt, rule) for prompt in dict.fromkeys(prompt_list)}
    return [[list(entry) for entry in schedules[prompt]] for prompt in prompt_list]


# --- composable diffusion (AND) ------------------------------------------------------------------

AND_SEPARATOR = re.compile(r"\bAND\b")
# The weight after the last colon of a part. A1111 matches the whole part with
# r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$", which is quadratic (40,000 spaces and a letter took
# 10 s); split_weight gives the same groups in linear time (tests/test_prompt_parser.py compares both).
SUBPROMPT_WEIGHT = re.compile(r"[-+]?(?:\d+\.?|\d*\.\d+)")


@dataclass(frozen=True)
class WeightedSubPrompt:
    """One ``AND`` part of a prompt and its weight (``a cat :0.8``)."""

    text: str
    weight: float = 1.0


def split_and_prompts(prompt: str) -> list[WeightedSubPrompt]:
    """Split on the word ``AND``; a trailing ``:number`` on a part is its weight (default 1)."""
    parts: list[WeightedSubPrompt] = []
    for part in AND_SEPARATOR.split(prompt):
        text, weight = split_weight(part)
        parts.append(WeightedSubPrompt(text, float(weight) if weight is not None else 1.0))
    return parts


def split_weight(part: str) -> tuple[str, str | None]:
    """``"a cat :0.8 "`` -> ``("a cat", "0.8")``; without a trailing ``:number``, the part right-stripped and None.

    The number can only follow the last colon (it holds no colon), and the text is everything before that colon
    without its trailing whitespace: what A1111's lazy regex finds, in one pass.
    """
    head, colon, tail = part.rpartition(":")
    weight = tail.strip()
    if colon and SUBPROMPT_WEIGHT.fullmatch(weight):
        return head.rstrip(), weight
    return part.rstrip(), None


def get_multicond_prompt_list(
    prompts: Iterable[str],
) -> tuple[list[list[tuple[int, float]]], list[str], dict[str, int]]:
    """A1111's shape: per prompt ``[(index, weight)]``, the flat list of distinct texts, text -> index."""
    indexes_per_prompt: list[list[tuple[int, float]]] = []
    flat_texts: list[str] = []
    text_indexes: dict[str, int] = {}
    for prompt in prompts:
        indexes: list[tuple[int, float]] = []
        for part in split_and_prompts(prompt):
            if part.text not in text_indexes:
                text_indexes[part.text] = len(flat_texts)
                flat_texts.append(part.text)
            indexes.append((text_indexes[part.text], part.weight))
        indexes_per_prompt.append(indexes)
    return indexes_per_prompt, flat_texts, text_indexes


# --- extra networks ------------------------------------------------------------------------------

_EXTRA_NETWORK_TAG = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class ExtraNetworkTag:
    """``<kind:name:arg:key=value>``: A1111's ExtraNetworkParams with the kind attached.

    ``items`` are all ``:``-separated parts; an item with exactly one ``=`` is named, the others
    positional. ``name`` is the first positional item, ``args`` the positional items after it.
    """

    kind: str
    items: tuple[str, ...]
    positional: tuple[str, ...] = field(init=False)
    named: Mapping[str, str] = field(init=False)

    def __post_init__(self) -> None:
        positional: list[str] = []
        named: dict[str, str] = {}
        for item in self.items:
            parts = item.split("=", 2)
            if len(parts) == 2:
                named[parts[0]] = parts[1]
            else:
                positional.append(item)
        object.__setattr__(self, "positional", tuple(positional))
        object.__setattr__(self, "named", MappingProxyType(named))

    @property
    def name(self) -> str:
        return self.positional[0] if self.positional else ""

    @property
    def args(self) -> tuple[str, ...]:
        return self.positional[1:]


def extract_extra_networks(prompt: str) -> tuple[str, list[ExtraNetworkTag]]:
    """Remove ``<kind:...>`` tags from ``prompt``; return the text left and the tags in order."""
    tags: list[ExtraNetworkTag] = []

    def collect(match: re.Match[str]) -> str:
        tags.append(ExtraNetworkTag(kind=match.group(1), items=tuple(match.group(2).split(":"))))
        return ""

    # Every tag ends with ">": searching only up to the last one keeps the search linear (an unclosed "<a:" would
    # otherwise scan to the end of the prompt, again for each "<").
    end = prompt.rfind(">") + 1
    return _EXTRA_NETWORK_TAG.sub(collect, prompt[:end]) + prompt[end:], tags


# --- everything at once --------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduledText:
    """The text in force up to and including ``end_at_step`` (A1111's numbers: the 0-based model call ``step`` takes
    the first entry with ``step <= end_at_step``)."""

    end_at_step: int
    text: str


@dataclass(frozen=True)
class SubPromptSchedule:
    """One ``AND`` part: its weight and its schedule of texts."""

    weight: float
    schedule: tuple[ScheduledText, ...]


@dataclass(frozen=True)
class PromptPlan:
    """A prompt taken apart: extra-network tags removed, split on AND, each part scheduled."""

    original: str
    sub_prompts: tuple[SubPromptSchedule, ...]
    extra_networks: tuple[ExtraNetworkTag, ...]


def plan_prompt(
    prompt: str,
    base_steps: int,
    hires_steps: int | None = None,
    use_old_scheduling: bool = False,
    split_and: bool = True,
) -> PromptPlan:
    """Parse ``prompt`` in A1111's order: extra networks, then AND, then scheduling per part.

    Use ``split_and=False`` for negative prompts (A1111 does not apply AND to them).
    """
    text, tags = extract_extra_networks(prompt)
    parts = split_and_prompts(text) if split_and else [WeightedSubPrompt(text)]
    schedules = get_learned_conditioning_prompt_schedules(
        [part.text for part in parts], base_steps, hires_steps, use_old_scheduling
    )
    sub_prompts = tuple(
        SubPromptSchedule(part.weight, tuple(ScheduledText(int(step), str(txt)) for step, txt in schedule))
        for part, schedule in zip(parts, schedules, strict=True)
    )
    return PromptPlan(original=prompt, sub_prompts=sub_prompts, extra_networks=tuple(tags))
