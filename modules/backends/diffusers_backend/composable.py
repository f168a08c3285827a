"""Composable diffusion (A1111's AND) for diffusers pipelines, through a UNet wrapper.

A diffusers pipeline makes one conditional prediction per image; AND needs one per sub-prompt. The
request's pipeline view is given this wrapper as its ``unet`` (composition, no patch).
It runs the real UNet on [negatives, every part of every image] and hands the pipeline back
[uncond, uncond + sum(weight_i * (cond_i - uncond))], so the pipeline's own guidance step
``uncond + cfg * (text - uncond)`` computes A1111's ``uncond + cfg * sum(weight_i * (cond_i - uncond))``.
Written by hand: no library implements composable diffusion for diffusers pipelines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from modules.compute.unet_wrapper import WrappedUNet
from modules.prompts.conditioning import PromptConditioning, PromptEmbedding
from modules.prompts.step_switching import PipelineEmbeddings


class ComposableGuidanceUNet(WrappedUNet):
    """Wraps a UNet2DConditionModel; ``step`` (the 0-based model call, A1111's count) is advanced by the step
    callback. ``first_call``: A1111's count at the pipeline call's first model call (a refiner's part: the base
    part's calls)."""

    def __init__(
        self,
        unet: torch.nn.Module,
        positives: Sequence[PromptConditioning],
        negatives: Sequence[PromptConditioning],
        first_call: int = 0,
    ) -> None:
        super().__init__(unet)
        self.positives = tuple(positives)
        self.negatives = tuple(negatives)
        self.first_call = first_call
        self.step = first_call

    def forward(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, **kwargs: Any):
        count = len(self.positives)
        if sample.shape[0] != 2 * count:
            raise ValueError("AND prompts need classifier-free guidance (CFG scale above 1)")
        negatives = [conditioning.at_step(self.step)[0][0] for conditioning in self.negatives]
        parts = [conditioning.at_step(self.step) for conditioning in self.positives]
        image_of_part = [index for index, image_parts in enumerate(parts) for _ in image_parts]
        flat_parts = [embedding for image_parts in parts for embedding, _ in image_parts]
        rows = torch.cat([sample[:count], sample[count:][image_of_part]])
        embeds = torch.cat([item.embeds for item in (*negatives, *flat_parts)]).to(encoder_hidden_states)
        arguments = dict(kwargs)
        added = kwargs.get("added_cond_kwargs")
        if added and "text_embeds" in added:
            arguments["added_cond_kwargs"] = expanded_added_conditions(added, negatives, flat_parts, image_of_part)
        arguments["return_dict"] = False
        if getattr(self.unet, "takes_row_marks", False):  # the negative prompts' rows come first
            arguments["uncond_rows"] = torch.arange(rows.shape[0], device=rows.device) < count
        prediction = self.unet(rows, timestep, encoder_hidden_states=embeds, **arguments)[0]
        uncond = prediction[:count]
        combined = uncond.clone()
        offset = count
        for index, image_parts in enumerate(parts):
            for _, weight in image_parts:
                combined[index] += (prediction[offset] - uncond[index]) * weight
                offset += 1
        output = torch.cat([uncond, combined])
        return (output,) if not kwargs.get("return_dict", True) else _Output(output)


class _Output:
    """The ``.sample`` shape of UNet2DConditionOutput, for pipelines that read it by attribute."""

    def __init__(self, sample: torch.Tensor) -> None:
        self.sample = sample

    def __getitem__(self, index: int) -> torch.Tensor:
        return (self.sample,)[index]


def expanded_added_conditions(
    added: dict[str, torch.Tensor],
    negatives: Sequence[PromptEmbedding],
    parts: Sequence[PromptEmbedding],
    image_of_part: Sequence[int],
) -> dict[str, torch.Tensor]:
    """SDXL: pooled text embeddings per part, and the image's time ids repeated for each of its parts."""
    count = len(negatives)
    text_embeds = torch.cat([item.pooled for item in (*negatives, *parts)]).to(added["text_embeds"])
    time_ids = added["time_ids"]
    expanded_time_ids = torch.cat([time_ids[:count], time_ids[count:][list(image_of_part)]])
    return {**added, "text_embeds": text_embeds, "time_ids": expanded_time_ids}


class ComposableGuidance:
    """The step callback and the placeholder embeddings of a pipeline whose UNet is the wrapper above."""

    def __init__(self, wrapper: ComposableGuidanceUNet) -> None:
        self.wrapper = wrapper
        self.tensor_inputs: list[str] = []

    def initial_embeddings(self) -> PipelineEmbeddings:
        """Embeddings of the right shapes for the pipeline's own checks (the wrapper uses its own)."""
        first = [conditioning.at_step(0)[0][0] for conditioning in self.wrapper.positives]
        negative = [conditioning.at_step(0)[0][0] for conditioning in self.wrapper.negatives]
        pooled = first[0].pooled is not None
        return PipelineEmbeddings(
            prompt_embeds=torch.cat([item.embeds for item in first]),
            negative_prompt_embeds=torch.cat([item.embeds for item in negative]),
            pooled_prompt_embeds=torch.cat([item.pooled for item in first]) if pooled else None,
            negative_pooled_prompt_embeds=torch.cat([item.pooled for item in negative]) if pooled else None,
        )

    def __call__(self, pipeline: Any, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
        """After the pipeline's 0-based call ``step_index`` the wrapper's next call is A1111's
        ``first_call + step_index + 1``."""
        self.wrapper.step = self.wrapper.first_call + step_index + 1
        return {}
