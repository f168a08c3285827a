"""Compute settings applied to a loaded model: compile, channels_last, fused QKV, FP8 weight, token merging,
DeepCache, TF32 and cudnn benchmark (Settings > Compute; ``--opt-channelslast``)."""

from modules.compute.deepcache import DeepCacheUNet
from modules.compute.prepare import ComputeState, WarmupRecord, apply_backend_flags, prepare_pipeline, warm_up
from modules.compute.settings import COMPILE_MODES, FP8_STORAGE_CHOICES, ComputeSettings

__all__ = [
    "COMPILE_MODES",
    "FP8_STORAGE_CHOICES",
    "ComputeSettings",
    "ComputeState",
    "DeepCacheUNet",
    "WarmupRecord",
    "apply_backend_flags",
    "prepare_pipeline",
    "warm_up",
]
