"""The compute settings from the Settings tab's options and the command-line flags (a flag turns a setting on)."""

from __future__ import annotations

from typing import Any

from modules.compute.settings import ComputeSettings

# Option name -> ComputeSettings field.
OPTION_FIELDS = {
    "compute_compile_unet": "compile_unet",
    "compute_compile_vae": "compile_vae",
    "compute_compile_mode": "compile_mode",
    "compute_compile_dynamic": "compile_dynamic",
    "compute_compile_warmup": "warmup",
    "compute_channels_last": "channels_last",
    "compute_fuse_qkv": "fuse_qkv",
    "compute_cudnn_benchmark": "cudnn_benchmark",
    "compute_tf32": "tf32",
    "fp8_storage": "fp8_storage",
    "token_merging_ratio": "token_merging_ratio",
    "deepcache_interval": "deepcache_interval",
}


def compute_settings_from(options: Any, args: Any = None) -> ComputeSettings:
    """``options`` is modules.options.Options (any object with the option names); ``args`` the parsed flags."""
    values = {field: getattr(options, name) for name, field in OPTION_FIELDS.items()}
    if getattr(args, "opt_channelslast", False):
        values["channels_last"] = True
    return ComputeSettings(**values)
