"""A1111 prompt conditioning for diffusers pipelines: chunked, weighted CLIP encoding.

Produces the ``prompt_embeds`` (and, for SDXL, ``pooled_prompt_embeds``) that diffusers pipelines
accept, with A1111's meaning: unlimited length in 75-token chunks (BOS + 75 + EOS each, concatenated),
BREAK, comma backtracking, emphasis, CLIP skip, prompt editing / alternation schedules and AND.

Written by hand: neither diffusers nor transformers implements A1111's chunking and emphasis
(diffusers truncates at 77 tokens and reads ``(word:1.3)`` as text).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch

from modules.prompts.parser import PromptPlan, is_break, parse_prompt_attention, plan_prompt
from modules.prompts.tokens import TokenChunk, build_chunks

logger = logging.getLogger(__name__)

CHUNK_LENGTH = 75
ROWS_PER_CHUNK = CHUNK_LENGTH + 2
DEFAULT_COMMA_BACKTRACK = 20
DEFAULT_CACHE_ENTRIES = 256


class Emphasis(StrEnum):
    """How ``(word:1.3)`` weights act on the hidden states (infotext key ``Emphasis``)."""

    ORIGINAL = "Original"  # scale each token's hidden state, then restore the chunk's mean
    NO_NORM = "No norm"  # scale without restoring the mean
    NONE = "None"  # ignore weights (brackets are still removed)


class ClipSkipStyle(StrEnum):
    """Which hidden state CLIP skip N selects."""

    FINAL_NORM = "final_norm"  # SD 1.x/2.x (A1111): N=1 last layer; N>1 hidden_states[-N] + final_layer_norm
    PENULTIMATE = "penultimate"  # SDXL (diffusers): hidden_states[-(N + 1)], no final norm


class PromptEncodingError(ValueError):
    """A prompt cannot be encoded with the given settings (message meant for the user)."""


@dataclass(frozen=True)
class TextEncoderPart:
    """One tokenizer + CLIP text encoder of a model.

    ``embedding_tokens`` is the seam for textual inversion: it maps the token ids of a trigger word
    to the token ids that replace it (tokens an embeddings loader registered in the tokenizer and
    text encoder, as diffusers' ``load_textual_inversion`` does). Loading is not done here.
    """

    tokenizer: Any
    text_encoder: torch.nn.Module
    clip_skip_style: ClipSkipStyle = ClipSkipStyle.FINAL_NORM
    provides_pooled: bool = False
    embedding_tokens: Mapping[tuple[int, ...], tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptEmbedding:
    """Encoded text: ``embeds`` [1, chunks * 77, dim]; ``pooled`` [1, dim] for SDXL, else None."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None

    @property
    def chunk_count(self) -> int:
        return self.embeds.shape[1] // ROWS_PER_CHUNK


@dataclass(frozen=True)
class ScheduledEmbedding:
    """The embedding in force up to and including ``end_at_step``: A1111's 0-based model call ``step`` takes the
    first entry with ``step <= end_at_step`` (so ``[a:b:10]`` feeds ``a`` to calls 0-10)."""

    end_at_step: int
    embedding: PromptEmbedding


@dataclass(frozen=True)
class SubPromptConditioning:
    """One AND part: its weight and its schedule of embeddings."""

    weight: float
    schedule: tuple[ScheduledEmbedding, ...]

    def at_step(self, step: int) -> PromptEmbedding:
        """The embedding for 0-based model call ``step`` (the last one past the end)."""
        for entry in self.schedule:
            if step <= entry.end_at_step:
                return entry.embedding
        return self.schedule[-1].embedding


@dataclass(frozen=True)
class PromptConditioning:
    """A whole prompt encoded: per AND part a schedule of embeddings, plus the extra-network tags."""

    plan: PromptPlan
    sub_prompts: tuple[SubPromptConditioning, ...]

    @property
    def chunk_count(self) -> int:
        return max(entry.embedding.chunk_count for part in self.sub_prompts for entry in part.schedule)

    @property
    def is_static(self) -> bool:
        """True when the conditioning never changes during sampling."""
        return all(len(part.schedule) == 1 for part in self.sub_prompts)

    @property
    def is_composable(self) -> bool:
        """True when the prompt has several AND parts (or one with a weight other than 1)."""
        return len(self.sub_prompts) > 1 or self.sub_prompts[0].weight != 1.0

    def switch_steps(self) -> list[int]:
        """Model calls after which some embedding changes: call ``s`` still uses the old one, ``s + 1`` the new."""
        ends = {entry.end_at_step for part in self.sub_prompts for entry in part.schedule[:-1]}
        return sorted(ends)

    def at_step(self, step: int) -> list[tuple[PromptEmbedding, float]]:
        """``(embedding, weight)`` per AND part for 0-based model call ``step`` (A1111's CFG wrapper count)."""
        return [(part.at_step(step), part.weight) for part in self.sub_prompts]


class EncodingCache:
    """Bounded LRU of encoded texts keyed by (model key, text, clip skip, emphasis)."""

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self.entries: OrderedDict[tuple[str, str, int, str], PromptEmbedding] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str, int, str]) -> PromptEmbedding | None:
        found = self.entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(key)
        return found

    def put(self, key: tuple[str, str, int, str], value: PromptEmbedding) -> None:
        self.entries[key] = value
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        self.entries.clear()


def _hidden_state(part: TextEncoderPart, outputs: Any, clip_skip: int) -> torch.Tensor:
    hidden_states = outputs.hidden_states
    if part.clip_skip_style is ClipSkipStyle.PENULTIMATE:
        index = clip_skip + 1
        if index > len(hidden_states):
            raise PromptEncodingError(f"Clip skip {clip_skip} is too large for a {len(hidden_states) - 1}-layer CLIP")
        return hidden_states[-index]
    if clip_skip <= 1:
        return outputs.last_hidden_state
    if clip_skip >= len(hidden_states):
        raise PromptEncodingError(f"Clip skip {clip_skip} is too large for a {len(hidden_states) - 1}-layer CLIP")
    return _final_layer_norm(part.text_encoder)(hidden_states[-clip_skip])


def _final_layer_norm(text_encoder: torch.nn.Module) -> torch.nn.Module:
    """transformers 5 keeps it on the model; older versions under ``text_model``."""
    owner = getattr(text_encoder, "text_model", text_encoder)
    return owner.final_layer_norm


def apply_emphasis(hidden: torch.Tensor, multipliers: torch.Tensor, emphasis: Emphasis) -> torch.Tensor:
    """Weight ``hidden`` [chunks, 77, dim] by ``multipliers`` [chunks, 77] (A1111's emphasis modes)."""
    if emphasis is Emphasis.NONE or bool((multipliers == 1.0).all()):
        return hidden
    weighted = hidden * multipliers.unsqueeze(-1).to(hidden.dtype)
    if emphasis is Emphasis.NO_NORM:
        return weighted
    original_mean = hidden.mean(dim=(1, 2), keepdim=True)
    new_mean = weighted.mean(dim=(1, 2), keepdim=True)
    return weighted * (original_mean / new_mean)


class PromptEncoder:
    """Encodes prompts for one model (1 or 2 text encoders), with a cache shared by all its calls."""

    def __init__(
        self,
        parts: Sequence[TextEncoderPart],
        model_key: str,
        cache: EncodingCache | None = None,
        comma_backtrack: int = DEFAULT_COMMA_BACKTRACK,
    ) -> None:
        if not parts:
            raise ValueError("a PromptEncoder needs at least one text encoder")
        self.parts = tuple(parts)
        self.model_key = model_key
        self.cache = cache if cache is not None else EncodingCache()
        self.comma_backtrack = comma_backtrack

    @classmethod
    def for_pipeline(cls, pipeline: Any, model_key: str, cache: EncodingCache | None = None) -> PromptEncoder:
        """Build from a diffusers pipeline's tokenizer(s) and text encoder(s) (SD 1.x/2.x or SDXL)."""
        text_encoder_2 = getattr(pipeline, "text_encoder_2", None)
        if text_encoder_2 is None:
            return cls([TextEncoderPart(pipeline.tokenizer, pipeline.text_encoder)], model_key, cache)
        parts = []
        if getattr(pipeline, "text_encoder", None) is not None:
            parts.append(TextEncoderPart(pipeline.tokenizer, pipeline.text_encoder, ClipSkipStyle.PENULTIMATE))
        parts.append(TextEncoderPart(pipeline.tokenizer_2, text_encoder_2, ClipSkipStyle.PENULTIMATE, True))
        return cls(parts, model_key, cache)

    def chunk_text(self, text: str, part_index: int = 0, emphasis: Emphasis = Emphasis.ORIGINAL) -> list[TokenChunk]:
        """Token chunks (77 ids + multipliers each) of ``text`` for one text encoder."""
        part = self.parts[part_index]
        pieces = parse_prompt_attention(text) if emphasis is not Emphasis.NONE else [[text, 1.0]]
        texts = [str(piece[0]) for piece in pieces]
        token_lists = part.tokenizer(texts, truncation=False, add_special_tokens=False, verbose=False)["input_ids"]
        weighted = [
            (None if is_break(piece) else tokens, float(piece[1]))
            for piece, tokens in zip(pieces, token_lists, strict=True)
        ]
        return build_chunks(
            weighted,
            bos=part.tokenizer.bos_token_id,
            eos=part.tokenizer.eos_token_id,
            pad=part.tokenizer.pad_token_id if part.tokenizer.pad_token_id is not None else part.tokenizer.eos_token_id,
            comma=part.tokenizer.get_vocab().get(",</w>"),
            comma_backtrack=self.comma_backtrack,
            embedding_tokens=part.embedding_tokens,
        )

    def count_tokens(self, prompt: str, steps: int = 20) -> tuple[int, int]:
        """A1111's token counter: (tokens used, limit), the limit growing 75, 150, ... with chunks.

        Like A1111, extra-network tags are left out and the longest text of any AND part at any step
        of its schedule counts.
        """
        plan = plan_prompt(prompt, max(1, steps))
        used = 0
        for part in plan.sub_prompts:
            for entry in part.schedule:
                chunks = self.chunk_text(entry.text)
                used = max(used, CHUNK_LENGTH * (len(chunks) - 1) + chunks[-1].content_length)
        return used, CHUNK_LENGTH * max(1, math.ceil(used / CHUNK_LENGTH))

    def encode(self, text: str, clip_skip: int = 1, emphasis: Emphasis = Emphasis.ORIGINAL) -> PromptEmbedding:
        """Encode one (already schedule-resolved) prompt text; cached."""
        key = (self.model_key, text, clip_skip, str(emphasis))
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        embedding = self._encode_uncached(text, clip_skip, emphasis)
        self.cache.put(key, embedding)
        logger.debug("prompt encoded chunks=%d clip_skip=%d emphasis=%s", embedding.chunk_count, clip_skip, emphasis)
        return embedding

    @torch.no_grad()
    def _encode_uncached(self, text: str, clip_skip: int, emphasis: Emphasis) -> PromptEmbedding:
        if clip_skip < 1:
            raise PromptEncodingError(f"Clip skip must be 1 or more, got {clip_skip}")
        chunk_lists = [self.chunk_text(text, index, emphasis) for index in range(len(self.parts))]
        chunk_count = max(len(chunks) for chunks in chunk_lists)
        hidden_per_part: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        for part, chunks in zip(self.parts, chunk_lists, strict=True):
            hidden, part_pooled = self._encode_chunks(part, chunks, clip_skip, emphasis)
            hidden_per_part.append(_pad_rows(hidden, chunk_count))
            pooled = part_pooled if part_pooled is not None else pooled
        embeds = torch.cat(hidden_per_part, dim=-1)
        return PromptEmbedding(embeds=embeds, pooled=pooled)

    def _encode_chunks(
        self, part: TextEncoderPart, chunks: list[TokenChunk], clip_skip: int, emphasis: Emphasis
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = next(part.text_encoder.parameters()).device
        input_ids = torch.tensor([chunk.tokens for chunk in chunks], dtype=torch.long, device=device)
        multipliers = torch.tensor([chunk.multipliers for chunk in chunks], device=device)
        outputs = part.text_encoder(input_ids, output_hidden_states=True)
        hidden = apply_emphasis(_hidden_state(part, outputs, clip_skip), multipliers, emphasis)
        pooled = outputs.text_embeds[:1] if part.provides_pooled else None
        return hidden.reshape(1, -1, hidden.shape[-1]), pooled

    def empty_chunk(self, clip_skip: int = 1) -> PromptEmbedding:
        """The encoded empty prompt (one chunk): what shorter conditionings are padded with."""
        return self.encode("", clip_skip, Emphasis.ORIGINAL)

    def pad_to_chunks(self, embedding: PromptEmbedding, chunk_count: int, clip_skip: int = 1) -> PromptEmbedding:
        """Append encoded empty chunks until ``embedding`` has ``chunk_count`` chunks."""
        missing = chunk_count - embedding.chunk_count
        if missing <= 0:
            return embedding
        empty = self.empty_chunk(clip_skip).embeds.to(embedding.embeds.device, embedding.embeds.dtype)
        embeds = torch.cat([embedding.embeds, empty.repeat(1, missing, 1)], dim=1)
        return PromptEmbedding(embeds=embeds, pooled=embedding.pooled)

    def encode_conditioning(
        self,
        prompt: str,
        steps: int,
        hires_steps: int | None = None,
        clip_skip: int = 1,
        emphasis: Emphasis = Emphasis.ORIGINAL,
        split_and: bool = True,
        use_old_scheduling: bool = False,
    ) -> PromptConditioning:
        """Parse and encode ``prompt`` for a pass of ``steps`` (see parser.plan_prompt for hires rules).

        Use ``split_and=False`` for the negative prompt.
        """
        plan = plan_prompt(prompt, steps, hires_steps, use_old_scheduling, split_and)
        sub_prompts = tuple(
            SubPromptConditioning(
                weight=part.weight,
                schedule=tuple(
                    ScheduledEmbedding(entry.end_at_step, self.encode(entry.text, clip_skip, emphasis))
                    for entry in part.schedule
                ),
            )
            for part in plan.sub_prompts
        )
        return PromptConditioning(plan=plan, sub_prompts=sub_prompts)

    def align(self, conditionings: Sequence[PromptConditioning], clip_skip: int = 1) -> list[PromptConditioning]:
        """Pad every embedding of ``conditionings`` to the same chunk count (positive, negative, AND parts)."""
        target = max(conditioning.chunk_count for conditioning in conditionings)
        return [self._padded(conditioning, target, clip_skip) for conditioning in conditionings]

    def _padded(self, conditioning: PromptConditioning, chunk_count: int, clip_skip: int) -> PromptConditioning:
        sub_prompts = tuple(
            SubPromptConditioning(
                part.weight,
                tuple(
                    ScheduledEmbedding(entry.end_at_step, self.pad_to_chunks(entry.embedding, chunk_count, clip_skip))
                    for entry in part.schedule
                ),
            )
            for part in conditioning.sub_prompts
        )
        return PromptConditioning(plan=conditioning.plan, sub_prompts=sub_prompts)


def _pad_rows(hidden: torch.Tensor, chunk_count: int) -> torch.Tensor:
    """Two encoders can chunk differently only through embeddings; repeat the last row to align."""
    missing = chunk_count * ROWS_PER_CHUNK - hidden.shape[1]
    if missing <= 0:
        return hidden
    return torch.cat([hidden, hidden[:, -1:].repeat(1, missing, 1)], dim=1)


ENCODER_ATTACHMENT = "prompt_encoder"


def prompt_encoder_of(model: Any) -> PromptEncoder:
    """The prompt encoder of a loaded model, made on first use and kept with the model (its cache is per model,
    shared by every task pipeline); ``model`` is a ``LoadedModel`` (its ``attachments`` hold the encoder)."""
    encoder = model.attachments.get(ENCODER_ATTACHMENT)
    if encoder is None:
        encoder = PromptEncoder.for_pipeline(model.pipeline, model_key=model.sha256)
        encoder = model.attachments.setdefault(ENCODER_ATTACHMENT, encoder)
    return encoder
