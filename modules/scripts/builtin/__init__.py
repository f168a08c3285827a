"""Easel's built-in scripts, in A1111's order of its ``scripts/`` folder (file names sorted)."""

from __future__ import annotations

from modules.controlnet.models import ControlNetLibrary
from modules.models.hashing import HashCache
from modules.processing.processing import ProcessingContext
from modules.scripts.base import Script
from modules.scripts.builtin.controlnet import ControlNetScript
from modules.scripts.builtin.custom_code import CustomCode
from modules.scripts.builtin.loopback import Loopback
from modules.scripts.builtin.outpainting import PoorMansOutpainting
from modules.scripts.builtin.outpainting_mk2 import OutpaintingMk2
from modules.scripts.builtin.prompt_matrix import PromptMatrix
from modules.scripts.builtin.prompts_from_file import PromptsFromFile
from modules.scripts.builtin.sd_upscale import PLAIN_UPSCALERS, SDUpscale
from modules.scripts.builtin.xyz_grid import XYZPlot


def upscaler_names(context: ProcessingContext) -> list[str]:
    if context.postprocessor is None:
        return list(PLAIN_UPSCALERS)
    return [info.name for info in context.postprocessor.upscalers.upscalers() if info.supported]


def controlnet_library(context: ProcessingContext) -> ControlNetLibrary:
    """The ControlNet models of ``models/ControlNet`` (when the composition root gives no library of its own)."""
    library = ControlNetLibrary(
        [context.paths.controlnet_dir],
        HashCache(context.paths.cache_file),
        context.paths.configs_dir,
        cache_size=context.options.control_net_model_cache_size,
        clip_vision_dir=context.paths.clip_vision_dir,
    )
    library.refresh()
    return library


def builtin_scripts(
    context: ProcessingContext, allow_code: bool = False, controlnet: ControlNetLibrary | None = None
) -> list[Script]:
    """A1111's scripts/ order: custom_code, loopback, outpainting_mk_2, poor_mans_outpainting, prompt_matrix,
    prompts_from_file, sd_upscale, xyz_grid; then ControlNet (an extension's script, after the built-in ones)."""
    scripts: list[Script] = [CustomCode()] if allow_code else []
    scripts += [
        Loopback(),
        OutpaintingMk2(),
        PoorMansOutpainting(),
        PromptMatrix(),
        PromptsFromFile(),
        SDUpscale(upscaler_names(context)),
        XYZPlot(context),
        ControlNetScript(controlnet or controlnet_library(context), lambda: context.options.control_net_unit_count),
    ]
    return scripts
