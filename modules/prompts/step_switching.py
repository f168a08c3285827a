"""Feed scheduled conditioning (prompt editing, alternation) to a diffusers pipeline.

diffusers' only hook inside the denoising loop is ``callback_on_step_end``; SD and SDXL pipelines
accept ``prompt_embeds`` (and SDXL ``add_text_embeds``) back from it. With classifier-free guidance
the pipeline has already concatenated ``[negative..., positive...]`` on the batch axis, so the
callback returns that layout. Composable diffusion (AND) needs one noise prediction per part, which
no diffusers pipeline call does: the diffusers backend wraps the UNet for that (``ComposableGuidanceUNet``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from modules.prompts.conditioning import PromptConditioning, PromptEmbedding

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineEmbeddings:
    """The embedding arguments of a diffusers SD / SDXL ``__call__`` (pooled ones None for SD)."""

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None
    pooled_prompt_embeds: torch.Tensor | None = None
    negative_pooled_prompt_embeds: torch.Tensor | None = None

    def as_kwargs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for the pipeline call (None values left out)."""
        values = {
            "prompt_embeds": self.prompt_embeds,
            "negative_prompt_embeds": self.negative_prompt_embeds,
            "pooled_prompt_embeds": self.pooled_prompt_embeds,
            "negative_pooled_prompt_embeds": self.negative_pooled_prompt_embeds,
        }
        return {key: value for key, value in values.items() if value is not None}


def _single_part(conditioning: PromptConditioning) -> None:
    if conditioning.is_composable:
        raise ValueError(
            "AND prompts need one noise prediction per part; a plain diffusers pipeline call cannot do that "
            "(the diffusers backend runs them through its ComposableGuidanceUNet)"
        )


def _stack(embeddings: Sequence[PromptEmbedding]) -> tuple[torch.Tensor, torch.Tensor | None]:
    embeds = torch.cat([embedding.embeds for embedding in embeddings])
    pooled = [embedding.pooled for embedding in embeddings]
    return embeds, (torch.cat(pooled) if all(item is not None for item in pooled) else None)


class ScheduledEmbeddings:
    """Embeddings for every sampling step of a batch; also a ``callback_on_step_end`` for diffusers.

    ``positives`` and ``negatives`` hold one conditioning per image of the batch, in batch order,
    already aligned to one chunk count (``PromptEncoder.align``). Steps are A1111's: the 0-based model call
    ``step`` takes the first schedule entry with ``step <= end_at_step`` (``reconstruct_cond_batch``), so
    ``a [b:3]`` uses ``a`` for calls 0-3 and ``b`` from call 4, as on the original backend. diffusers calls
    ``callback_on_step_end`` once per loop iteration, which is once per model call (Heun's two calls per step
    are two iterations there), so the callback's ``step_index`` counts what A1111's CFG wrapper counts.
    ``first_call`` is A1111's count at the pipeline call's first model call (a refiner's part: the base part's calls).
    """

    def __init__(
        self,
        positives: Sequence[PromptConditioning],
        negatives: Sequence[PromptConditioning] | None,
        first_call: int = 0,
    ) -> None:
        if not positives or (negatives is not None and len(negatives) != len(positives)):
            raise ValueError("need one positive (and one negative, if any) conditioning per image")
        for conditioning in (*positives, *(negatives or ())):
            _single_part(conditioning)
        self.positives = tuple(positives)
        self.negatives = tuple(negatives) if negatives is not None else None
        self.first_call = first_call
        self.switch_steps = sorted(
            {step for item in (*self.positives, *(self.negatives or ())) for step in item.switch_steps()}
        )

    @property
    def tensor_inputs(self) -> list[str]:
        """What to pass as ``callback_on_step_end_tensor_inputs``."""
        has_pooled = self.at_step(0).pooled_prompt_embeds is not None
        return ["prompt_embeds", "add_text_embeds"] if has_pooled else ["prompt_embeds"]

    def at_step(self, step: int) -> PipelineEmbeddings:
        """The pipeline's embedding arguments for 0-based model call ``step``."""
        embeds, pooled = _stack([item.at_step(step)[0][0] for item in self.positives])
        if self.negatives is None:
            return PipelineEmbeddings(embeds, None, pooled, None)
        negative_embeds, negative_pooled = _stack([item.at_step(step)[0][0] for item in self.negatives])
        return PipelineEmbeddings(embeds, negative_embeds, pooled, negative_pooled)

    def __call__(self, pipeline: Any, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
        """After the pipeline's 0-based call ``step_index`` (A1111's call ``first_call + step_index``) comes the
        next one; switch if its embedding changes."""
        call = self.first_call + step_index
        if call not in self.switch_steps:
            return {}
        embeddings = self.at_step(call + 1)
        current = callback_kwargs["prompt_embeds"]
        guided = embeddings.negative_prompt_embeds is not None and current.shape[0] == 2 * len(self.positives)
        outputs: dict[str, torch.Tensor] = {}
        if guided:
            outputs["prompt_embeds"] = torch.cat([embeddings.negative_prompt_embeds, embeddings.prompt_embeds])
        else:
            outputs["prompt_embeds"] = embeddings.prompt_embeds
        outputs["prompt_embeds"] = outputs["prompt_embeds"].to(current.device, current.dtype)
        if embeddings.pooled_prompt_embeds is not None and "add_text_embeds" in callback_kwargs:
            pooled = embeddings.pooled_prompt_embeds
            if guided and embeddings.negative_pooled_prompt_embeds is not None:
                pooled = torch.cat([embeddings.negative_pooled_prompt_embeds, pooled])
            outputs["add_text_embeds"] = pooled.to(callback_kwargs["add_text_embeds"].device)
        logger.debug("prompt schedule switched step=%d", call + 1)
        return outputs
