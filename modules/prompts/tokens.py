"""A1111's token chunking: 75 tokens a chunk, BREAK, comma backtracking (pure Python, no torch).

Written by hand (no library does A1111's chunking). Rules, as in A1111 webui 1.9/1.10:
- a chunk holds 75 prompt tokens and is framed as BOS + tokens + EOS, then padded to 77 with the
  tokenizer's pad token (EOS for SD 1.x, "!" for OpenCLIP / SDXL's second tokenizer);
- when a chunk is full and the next token is not a comma, and a comma lies within the last
  ``comma_backtrack`` tokens, the tokens after that comma move to the next chunk;
- BREAK closes the current chunk (an empty chunk too, e.g. a prompt starting with BREAK);
- a textual-inversion embedding is never split across chunks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

CHUNK_LENGTH = 75


@dataclass(frozen=True)
class TokenChunk:
    """77 token ids (BOS + 75 + EOS/pad) and one weight per id."""

    tokens: tuple[int, ...]
    multipliers: tuple[float, ...]
    content_length: int


@dataclass
class _ChunkBuilder:
    bos: int
    eos: int
    pad: int
    chunks: list[TokenChunk] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    last_comma: int = -1

    def close(self) -> None:
        padding = CHUNK_LENGTH - len(self.tokens)
        tokens = (self.bos, *self.tokens, self.eos, *([self.pad] * padding))
        multipliers = (1.0, *self.multipliers, 1.0, *([1.0] * padding))
        self.chunks.append(TokenChunk(tokens, multipliers, len(self.tokens)))
        self.tokens, self.multipliers, self.last_comma = [], [], -1

    def move_after_last_comma(self) -> None:
        """Close the chunk at the last comma; the tokens after it start the next chunk."""
        split = self.last_comma + 1
        moved_tokens, moved_multipliers = self.tokens[split:], self.multipliers[split:]
        self.tokens, self.multipliers = self.tokens[:split], self.multipliers[:split]
        self.close()
        self.tokens, self.multipliers = moved_tokens, moved_multipliers


def _embedding_at(
    tokens: Sequence[int], position: int, embedding_tokens: Mapping[tuple[int, ...], tuple[int, ...]]
) -> tuple[tuple[int, ...], int] | None:
    """The longest embedding trigger starting at ``position``: (replacement ids, trigger length)."""
    best: tuple[tuple[int, ...], int] | None = None
    for trigger, replacement in embedding_tokens.items():
        length = len(trigger)
        if tuple(tokens[position : position + length]) == trigger and (best is None or length > best[1]):
            best = (replacement, length)
    return best


def build_chunks(
    pieces: Sequence[tuple[Sequence[int] | None, float]],
    bos: int,
    eos: int,
    pad: int,
    comma: int | None,
    comma_backtrack: int = 20,
    embedding_tokens: Mapping[tuple[int, ...], tuple[int, ...]] | None = None,
) -> list[TokenChunk]:
    """Chunk weighted token pieces; a piece of ``None`` tokens is a BREAK."""
    builder = _ChunkBuilder(bos, eos, pad)
    for tokens, weight in pieces:
        if tokens is None:
            builder.close()
            continue
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == comma:
                builder.last_comma = len(builder.tokens)
            elif (
                comma_backtrack > 0
                and len(builder.tokens) == CHUNK_LENGTH
                and builder.last_comma != -1
                and len(builder.tokens) - builder.last_comma <= comma_backtrack
            ):
                builder.move_after_last_comma()
            if len(builder.tokens) == CHUNK_LENGTH:
                builder.close()
            embedding = _embedding_at(tokens, position, embedding_tokens) if embedding_tokens else None
            if embedding is None:
                builder.tokens.append(token)
                builder.multipliers.append(weight)
                position += 1
                continue
            replacement, trigger_length = embedding
            if len(builder.tokens) + len(replacement) > CHUNK_LENGTH:
                builder.close()
            builder.tokens.extend(replacement)
            builder.multipliers.extend([weight] * len(replacement))
            position += trigger_length
    if builder.tokens or not builder.chunks:
        builder.close()
    return builder.chunks
