"""Easel's prompt conditioning as A1111's CFG wrapper reads it: a MultiCond and uncond rows per sampling step.

A1111's ``reconstruct_multicond_batch`` / ``reconstruct_cond_batch``: at model call ``step`` (0-based) each
image's AND parts take the schedule entry with ``step <= end_at_step``; rows of different token counts are
padded to the longest by repeating their last token vector. Prompt and negative are not padded to each other
(A1111's ``pad_cond_uncond`` is off by default: different lengths mean separate UNet calls).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from modules.backends.original.denoiser import Conditioning, MultiCond
from modules.backends.original.unet import CROSSATTN, TIME_IDS, VECTOR
from modules.prompts.conditioning import PromptConditioning, PromptEmbedding


def pad_tokens(embeds: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each (1, tokens, dim) tensor padded to the longest by repeating its last token vector (A1111's rule)."""
    longest = max(item.shape[1] for item in embeds)
    return [
        item if item.shape[1] == longest else torch.cat([item, item[:, -1:].repeat(1, longest - item.shape[1], 1)], 1)
        for item in embeds
    ]


def stack_rows(
    embeddings: Sequence[PromptEmbedding],
    device: torch.device,
    dtype: torch.dtype,
    time_ids: torch.Tensor | None = None,
) -> Conditioning:
    """One row per embedding: a tensor, or SDXL's {crossattn, vector[, time_ids]} mapping when the embeddings are
    pooled (``time_ids`` (1, n), repeated for every row)."""
    hidden = torch.cat(pad_tokens([item.embeds for item in embeddings])).to(device, dtype)
    if embeddings[0].pooled is None:
        return hidden
    pooled = torch.cat([item.pooled for item in embeddings]).to(device, dtype)  # type: ignore[misc]
    rows: dict[str, torch.Tensor] = {CROSSATTN: hidden, VECTOR: pooled}
    if time_ids is not None:
        rows[TIME_IDS] = time_ids.to(device, dtype).expand(hidden.shape[0], -1)
    return rows


@dataclass
class BatchConditioning:
    """The positives (with AND parts) and negatives of one batch; per-step rows are built once and kept.

    ``time_ids``: SDXL's added conditions of the prompt rows and of the negative rows (they differ for the refiner,
    whose aesthetic score is high for the prompt and low for the negative prompt)."""

    positives: Sequence[PromptConditioning]
    negatives: Sequence[PromptConditioning]
    device: torch.device
    dtype: torch.dtype = torch.float32
    time_ids: tuple[torch.Tensor, torch.Tensor] | None = None
    # A1111's SDXL rule (``force_zero_negative_prompt``): when every negative prompt of the batch is empty, the
    # negative rows' text embeddings (cross-attention and pooled) are zeros; the time ids stay.
    zero_negative: bool = False
    _conds: dict[tuple[int, ...], MultiCond] = field(default_factory=dict, repr=False)
    _unconds: dict[tuple[int, ...], Conditioning] = field(default_factory=dict, repr=False)

    @property
    def is_static(self) -> bool:
        return all(item.is_static for item in (*self.positives, *self.negatives))

    def cond(self, step: int) -> MultiCond:
        """The cond rows and per-image (row, weight) pairs at 0-based model call ``step``."""
        parts = [conditioning.at_step(step) for conditioning in self.positives]
        key = tuple(id(embedding) for image_parts in parts for embedding, _ in image_parts)
        if key not in self._conds:
            flat = [embedding for image_parts in parts for embedding, _ in image_parts]
            weights: list[list[tuple[int, float]]] = []
            row = 0
            for image_parts in parts:
                weights.append([(row + index, weight) for index, (_, weight) in enumerate(image_parts)])
                row += len(image_parts)
            self._conds[key] = MultiCond(stack_rows(flat, self.device, self.dtype, self._time_ids(0)), weights)
        return self._conds[key]

    def uncond(self, step: int) -> Conditioning:
        """The negative rows at 0-based model call ``step`` (a negative prompt has one part)."""
        embeddings = [conditioning.at_step(step)[0][0] for conditioning in self.negatives]
        key = tuple(id(embedding) for embedding in embeddings)
        if key not in self._unconds:
            rows = stack_rows(embeddings, self.device, self.dtype, self._time_ids(1))
            if self.zero_negative and not isinstance(rows, torch.Tensor):
                rows = {name: torch.zeros_like(value) if name != TIME_IDS else value for name, value in rows.items()}
            self._unconds[key] = rows
        return self._unconds[key]

    def _time_ids(self, side: int) -> torch.Tensor | None:
        return None if self.time_ids is None else self.time_ids[side]
