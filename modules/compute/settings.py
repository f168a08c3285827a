"""The compute settings in force for loaded models (Settings > Compute and the flags that A1111 has for them)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, get_args

CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)
Fp8Storage = Literal["Disable", "Enable for SDXL", "Enable"]  # A1111's fp8_storage values
FP8_STORAGE_CHOICES: tuple[str, ...] = get_args(Fp8Storage)

# Settings that change the prepared weights or the compiled graph: a change reloads the checkpoint.
RELOAD_FIELDS = frozenset(
    {"compile_unet", "compile_vae", "compile_mode", "compile_dynamic", "channels_last"}
    | {
        "fuse_qkv",
        "fp8_storage",
    }
)


@dataclass(frozen=True)
class ComputeSettings:
    """How a loaded model is prepared for speed. Defaults change nothing but TF32 (A1111 turns it on)."""

    compile_unet: bool = False
    compile_vae: bool = False
    # "reduce-overhead" records CUDA graphs (one per image size); the others do not.
    compile_mode: str = "default"
    # True: one graph serves every size (no recompile when the size changes); False: one graph per size (at most
    # torch._dynamo's cache_size_limit sizes, 8 by default), each compiled on its first use.
    compile_dynamic: bool = True
    channels_last: bool = False
    fuse_qkv: bool = False
    cudnn_benchmark: bool = False
    tf32: bool = True
    fp8_storage: str = "Disable"
    token_merging_ratio: float = 0.0
    deepcache_interval: int = 1  # 1 = off: every step runs the whole UNet
    warmup: bool = True  # with compile: run the first sizes at load time, so no job waits for compilation

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile mode {self.compile_mode!r}; use one of {', '.join(COMPILE_MODES)}")
        if self.fp8_storage not in FP8_STORAGE_CHOICES:
            raise ValueError(f"unknown FP8 weight choice {self.fp8_storage!r}")
        if not 0.0 <= self.token_merging_ratio <= 0.9:
            raise ValueError("token merging ratio must be between 0 and 0.9")
        if self.deepcache_interval < 1:
            raise ValueError("DeepCache interval must be 1 (off) or more")

    @property
    def compiles(self) -> bool:
        return self.compile_unet or self.compile_vae

    def fp8_applies(self, is_xl: bool) -> bool:
        return self.fp8_storage == "Enable" or (self.fp8_storage == "Enable for SDXL" and is_xl)

    def needs_reload(self, other: ComputeSettings) -> bool:
        """True when going from ``other`` to these settings needs the weights prepared again."""
        return any(getattr(self, name) != getattr(other, name) for name in RELOAD_FIELDS)

    def infotext(self, is_xl: bool) -> dict[str, str | float | int]:
        """Infotext keys of the settings that change pixels (A1111's keys where A1111 has them). Compile,
        channels_last, fused QKV, cudnn benchmark and TF32 change nothing beyond float noise and write nothing."""
        keys: dict[str, str | float | int] = {}
        if self.token_merging_ratio > 0:
            keys["Token merging ratio"] = self.token_merging_ratio
        if self.fp8_applies(is_xl):
            keys["FP8 weight"] = self.fp8_storage
        if self.deepcache_interval > 1:
            keys["DeepCache interval"] = self.deepcache_interval
        return keys

    def describe(self) -> dict[str, object]:
        return {field.name: getattr(self, field.name) for field in fields(self)}
