"""Processing results -> A1111 response bodies: base64 PNGs with infotext, ``parameters``, the ``info`` JSON."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from modules.api.images import encode_png
from modules.api.models import GenerationBody, GenerationResponse
from modules.api.translate import Translation, request_parameters
from modules.processing.processing import VERSION, ProcessingResult
from modules.processing.requests import Img2ImgRequest

# Infotext keys that have their own field in ``info``; the others go to extra_generation_params.
INFO_FIELDS_KEYS = frozenset(
    {
        "Prompt",
        "Negative prompt",
        "Steps",
        "Sampler",
        "CFG scale",
        "Seed",
        "Size-1",
        "Size-2",
        "Model hash",
        "Model",
        "Denoising strength",
        "Clip skip",
        "Version",
    }
)


def job_timestamp(moment: datetime) -> str:
    """A1111's job_timestamp format."""
    return moment.strftime("%Y%m%d%H%M%S")


def build_info(
    body: GenerationBody, translation: Translation, result: ProcessingResult, moment: datetime, with_grid: bool
) -> dict[str, Any]:
    request = translation.request
    parameters = result.parameters
    infotexts = ([result.infotexts[0]] if with_grid else []) + list(result.infotexts)
    seeds = result.seeds or [request.seed]
    return {
        "prompt": request.prompt,
        "all_prompts": list(result.prompts),
        "negative_prompt": request.negative_prompt,
        "all_negative_prompts": list(result.negative_prompts),
        "seed": seeds[0],
        "all_seeds": list(result.seeds),
        "subseed": result.subseeds[0] if result.subseeds else body.subseed,
        "all_subseeds": list(result.subseeds),
        "subseed_strength": request.subseed_strength,
        "width": request.width,
        "height": request.height,
        "sampler_name": str(parameters.get("Sampler", request.sampler_name)),
        "cfg_scale": request.cfg_scale,
        "steps": request.steps,
        "batch_size": request.batch_size,
        "restore_faces": bool(getattr(request, "restore_faces", False)),
        "face_restoration_model": None,
        "sd_model_name": parameters.get("Model"),
        "sd_model_hash": parameters.get("Model hash"),
        "sd_vae_name": parameters.get("VAE"),
        "sd_vae_hash": parameters.get("VAE hash"),
        "seed_resize_from_w": request.seed_resize_from_w if request.seed_resized else -1,
        "seed_resize_from_h": request.seed_resize_from_h if request.seed_resized else -1,
        "denoising_strength": getattr(request, "denoising_strength", None),
        "extra_generation_params": written_extras(result),
        "index_of_first_image": 1 if with_grid else result.first_image_index,
        "infotexts": infotexts,
        "styles": [],
        "job_timestamp": job_timestamp(moment),
        "clip_skip": request.clip_skip,
        "is_using_inpainting_conditioning": isinstance(request, Img2ImgRequest) and request.is_inpaint,
        "version": VERSION,
        "interrupted": result.interrupted,
        "notes": list(result.notes),
        "unsupported_fields": list(translation.unsupported),
        "worker": result.worker or "local",  # Easel: the Ray worker that ran the job (--ray-address), else "local"
    }


def written_extras(result: ProcessingResult) -> dict[str, object]:
    """Keys actually present in the first infotext's parameter line (not defaults filled in by parsing)."""
    if not result.infotexts:
        return {}
    last_line = result.infotexts[0].rsplit("\n", 1)[-1]
    return {
        key: value
        for key, value in result.parameters.items()
        if key not in INFO_FIELDS_KEYS and f"{key}: " in last_line and not key.startswith("Size")
    }


def build_response(
    body: GenerationBody,
    translation: Translation,
    result: ProcessingResult,
    moment: datetime,
    return_grid: bool,
) -> GenerationResponse:
    """The A1111 response; the grid comes first when the options return one (A1111's index_of_first_image)."""
    with_grid = return_grid and result.grid is not None
    images: list[str] = []
    if body.send_images:
        if with_grid:
            images.append(encode_png(result.grid, result.infotexts[0]))
        images.extend(encode_png(image, text) for image, text in zip(result.images, result.infotexts, strict=True))
    info = build_info(body, translation, result, moment, with_grid)
    return GenerationResponse(images=images, parameters=request_parameters(body), info=json.dumps(info))
