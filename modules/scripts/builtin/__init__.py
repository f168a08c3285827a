"""Easel's built-in scripts, in A1111's order of its ``scripts/`` folder (file names sorted)."""

from __future__ import annotations

from modules.processing.processing import ProcessingContext
from modules.scripts.base import Script
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


def builtin_scripts(context: ProcessingContext, allow_code: bool = False) -> list[Script]:
    """A1111's scripts/ order: custom_code, loopback, outpainting_mk_2, poor_mans_outpainting, prompt_matrix,
    prompts_from_file, sd_upscale, xyz_grid."""
    scripts: list[Script] = [CustomCode()] if allow_code else []
    scripts += [
        Loopback(),
        OutpaintingMk2(),
        PoorMansOutpainting(),
        PromptMatrix(),
        PromptsFromFile(),
        SDUpscale(upscaler_names(context)),
        XYZPlot(context),
    ]
    return scripts
