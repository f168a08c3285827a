"""SD 2.x: does the UNet predict v (the 768-v models) or the noise (the 512 "base" models)?

The keys are the same for both, so A1111 (``sd_models_config.is_using_v_parameterization_for_sd2``) runs the
UNet once on a constant input at the last timestep: an epsilon model answers with something near the noise
it sees, a v model with something near minus the input, so ``mean(output - input)`` falls below -1 only for
v. Easel runs the same probe on the loaded diffusers UNet (no second copy of the weights) and keeps the
answer per file hash in cache.json (section ``sd2-prediction``), so a file is probed once.
"""

from __future__ import annotations

import logging

import torch
from diffusers import DiffusionPipeline

from modules.models.detection import ModelArchitecture
from modules.models.hashing import HashCache

logger = logging.getLogger(__name__)

CACHE_SECTION = "sd2-prediction"
PROBE_TIMESTEP = 999
PROBE_VALUE = 0.5
V_THRESHOLD = -1.0


def probe_is_v_prediction(unet: torch.nn.Module) -> bool:
    """One forward pass on an 8x8 latent of 0.5s with a 2-token context of 0.5s at timestep 999."""
    parameter = next(unet.parameters())
    device, dtype = parameter.device, parameter.dtype
    width = int(unet.config.cross_attention_dim)
    sample = torch.full((1, unet.config.in_channels, 8, 8), PROBE_VALUE, device=device, dtype=dtype)
    context = torch.full((1, 2, width), PROBE_VALUE, device=device, dtype=dtype)
    with torch.inference_mode():
        output = unet(sample, torch.tensor([PROBE_TIMESTEP], device=device), encoder_hidden_states=context).sample
    difference = (output.float() - sample.float()).mean().item()
    logger.info("sd2 prediction probe mean_difference=%.4f v_prediction=%s", difference, difference < V_THRESHOLD)
    return difference < V_THRESHOLD


def resolve_sd2_prediction(
    pipeline: DiffusionPipeline, architecture: ModelArchitecture | None, sha256: str, cache: HashCache
) -> ModelArchitecture | None:
    """SD2_V (as detected from the keys) becomes SD2 when the UNet predicts epsilon; the pipeline's scheduler
    then gets ``prediction_type="epsilon"``. Other architectures pass through unchanged."""
    if architecture is not ModelArchitecture.SD2_V:
        return architecture
    cached = cache.read_section(CACHE_SECTION).get(sha256)
    if cached in ("v_prediction", "epsilon"):
        prediction = cached
    else:
        prediction = "v_prediction" if probe_is_v_prediction(pipeline.unet) else "epsilon"
        cache.store_section(CACHE_SECTION, sha256, prediction)
    pipeline.scheduler = type(pipeline.scheduler).from_config(pipeline.scheduler.config, prediction_type=prediction)
    logger.info("sd2 prediction type=%s cached=%s", prediction, cached is not None)
    return ModelArchitecture.SD2_V if prediction == "v_prediction" else ModelArchitecture.SD2
