"""Prompt encoding for the families whose pipelines encode plain-text prompts (FLUX.1, SD 3.5, DeepFloyd IF).

Easel calls the pipeline's own ``encode_prompt`` and hands the embeddings to the pipeline call, instead of the
prompts, for two reasons: under --medvram / --lowvram the text encoders of these families stay in CPU RAM (the
model manager keeps them out of the offload hooks; T5-XXL alone is 8.9 GiB in fp16), so the prompts are encoded
on the CPU and only the embeddings go to the GPU; and a cascade (IF) encodes once for every stage, as diffusers'
IF guide does, so stage II loads no T5 of its own. The pipeline's denoising call then runs on a view without text
encoders, whose execution device is the denoiser's.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from diffusers import DiffusionPipeline

from modules.devices import execution_device
from modules.models.families import ModelFamily
from modules.models.manager import text_encoder_names


def without_text_encoders(pipeline: DiffusionPipeline) -> dict[str, None]:
    """Overrides that leave the text encoders out of a pipeline view that is given embeddings."""
    return dict.fromkeys(text_encoder_names(pipeline))


def encode_prompts(
    pipeline: DiffusionPipeline,
    model_family: ModelFamily,
    prompts: list[str],
    negative_prompts: list[str] | None,
    text_device: torch.device | None,
    target: torch.nn.Module,
) -> dict[str, torch.Tensor]:
    """The pipeline call's embedding arguments for one prompt (and negative prompt) per image, encoded on
    ``text_device`` (None: the pipeline's execution device) and moved to ``target``'s execution device.
    Negative embeddings are always made where the pipeline takes them: it uses them only when its guidance scale
    is above 1, as it would have made them."""
    accepted = inspect.signature(pipeline.encode_prompt).parameters
    arguments: dict[str, Any] = {
        "prompt": prompts,
        "prompt_2": None,  # SD 3.5 and FLUX give the same prompt to every encoder when these are None
        "prompt_3": None,
        "negative_prompt": negative_prompts,
        "device": text_device,
        "num_images_per_prompt": 1,
        "do_classifier_free_guidance": True,
        "clean_caption": False,  # IF: needs bs4 and ftfy; Easel's prompts are plain already
    }
    results = pipeline.encode_prompt(**{name: value for name, value in arguments.items() if name in accepted})
    device = execution_device(target)
    return {
        name: value.to(device)
        for name, value in zip(model_family.prompt_embedding_names, results, strict=True)
        if name is not None and value is not None
    }
