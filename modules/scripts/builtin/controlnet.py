"""ControlNet as a built-in always-on script (the sd-webui-controlnet extension's title, units and API fields).

Each unit is one script argument (the API's ``alwayson_scripts.controlnet.args`` is a list of unit objects, as
the extension takes them); ``process`` loads each active unit's model, runs its preprocessor and hands the run
its ``ControlPlan``s, which every pass's backend applies; the infotext gets one ``ControlNet N`` entry per unit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from PIL import Image

from modules.controlnet.annotators import AnnotatorRunner
from modules.controlnet.ip_adapter import IPAdapterError, IPAdapterWeights
from modules.controlnet.models import ControlNetError, ControlNetLibrary
from modules.controlnet.preprocessors import (
    PreprocessorError,
    pixel_perfect_resolution,
    preprocessor_names,
    run_preprocessor,
)
from modules.controlnet.residuals import ControlPlan
from modules.controlnet.units import (
    INFOTEXT_FIELDS,
    ControlMode,
    ControlUnit,
    HiresOption,
    ResizeMode,
    UnitError,
    as_unit,
    parse_infotext,
)
from modules.processing.run import GenerationRun
from modules.scripts.base import Script, ScriptArgs, ScriptError, Visibility
from modules.scripts.controls import (
    Checkbox,
    Control,
    Dropdown,
    Group,
    GroupAction,
    ImageInput,
    Number,
    Radio,
    Slider,
)

logger = logging.getLogger(__name__)

TITLE = "ControlNet"


@dataclass(frozen=True)
class UnitControl(Group):
    """One ControlNet unit: the API gives an object of the extension's fields (or an infotext string); the UI
    one widget per field (the children, named as the fields)."""

    value: ControlUnit = field(default_factory=ControlUnit)

    def info(self) -> dict[str, Any]:
        """/script-info: the default unit as the API takes it."""
        return {**Control.info(self), "value": self.value.api_fields()}

    def convert(self, value: Any) -> ControlUnit:
        try:
            return as_unit(value)
        except UnitError as error:
            raise ValueError(f"{self.label}: {error}") from error

    def pasted(self, text: str) -> dict[str, Any]:
        try:
            fields_ = parse_infotext(text).api_fields()
        except UnitError:
            return {}
        names = {child.name for child in self.children}
        return {
            name: value for name, value in fields_.items() if name in names and name in (*INFOTEXT_FIELDS, "enabled")
        }


def unit_children(models: Sequence[str], is_img2img: bool = False) -> tuple[Control, ...]:
    """The unit's widgets, with the extension's labels and ranges (the hires-fix option in txt2img only)."""
    options = tuple(option.value for option in HiresOption)
    hires_option = Radio("hr_option", "Hires-Fix Option", value=HiresOption.BOTH.value, choices=options)
    hires = () if is_img2img else (hires_option,)
    return (
        Checkbox("enabled", "Enable", value=False),
        Checkbox("pixel_perfect", "Pixel Perfect", value=False),
        Checkbox("low_vram", "Low VRAM", value=False),
        ImageInput("image", "Image (empty: the img2img image)"),
        ImageInput("mask", "Effective region mask (optional: white where the unit acts)"),
        Dropdown("module", "Preprocessor", value="none", choices=tuple(preprocessor_names())),
        Dropdown("model", "Model", value="None", choices=("None", *models)),
        Slider("weight", "Control Weight", value=1.0, minimum=0.0, maximum=2.0, step=0.05),
        Slider("guidance_start", "Starting Control Step", value=0.0, minimum=0.0, maximum=1.0, step=0.01),
        Slider("guidance_end", "Ending Control Step", value=1.0, minimum=0.0, maximum=1.0, step=0.01),
        Slider("processor_res", "Preprocessor Resolution", value=512, minimum=64, maximum=2048, step=1),
        Number("threshold_a", "Threshold A (-1: the preprocessor's default)", value=-1),
        Number("threshold_b", "Threshold B (-1: the preprocessor's default)", value=-1),
        Radio(
            "control_mode",
            "Control Mode",
            value=ControlMode.BALANCED.value,
            choices=tuple(m.value for m in ControlMode),
        ),
        Radio(
            "resize_mode", "Resize Mode", value=ResizeMode.INNER_FIT.value, choices=tuple(m.value for m in ResizeMode)
        ),
        *hires,
    )


def unit_name(index: int) -> str:
    return f"unit_{index}"


class ControlNetScript(Script):
    """The ControlNet units; ``unit_count`` is read when the controls are built (the setting needs a restart)."""

    def __init__(self, library: ControlNetLibrary, unit_count: Callable[[], int]) -> None:
        self.library = library
        self.unit_count = unit_count

    def title(self) -> str:
        return TITLE

    def show(self, is_img2img: bool) -> Visibility:
        return Visibility.ALWAYS_ON

    def ui(self, is_img2img: bool) -> Sequence[Control]:
        children = unit_children(self.library.titles(), is_img2img)
        actions = (
            GroupAction("preview", "Preview preprocessor result", partial(preview, annotators=self.library.annotators)),
        )
        return [
            UnitControl(
                name=unit_name(index),
                label=f"ControlNet Unit {index}",
                infotext=f"ControlNet {index}",
                children=children,
                actions=actions,
            )
            for index in range(max(1, self.unit_count()))
        ]

    def process(self, run: GenerationRun, args: ScriptArgs) -> None:
        count = sum(1 for name in args if name.startswith("unit_"))
        units = [(index, as_unit(args.get(unit_name(index)))) for index in range(count)]
        plans = []
        for index, unit in units:
            if not unit.active:
                continue
            plan, model_title = self.unit_plan(run, index, unit)
            plans.append(plan)
            run.extra_generation_params[f"ControlNet {index}"] = replace(unit, model=model_title).serialize()
        run.controlnet = tuple(plans)
        if plans:
            logger.info("controlnet units=%d models=%s", len(plans), ",".join(plan.model_name for plan in plans))

    def unit_plan(self, run: GenerationRun, index: int, unit: ControlUnit) -> tuple[ControlPlan, str]:
        source = unit.image if unit.image is not None else img2img_source(run)
        if source is None:
            raise ScriptError(f"unit {index}: no image (give one, or use img2img, whose image a unit may use)")
        image_embeds = None
        try:
            info, model = self.library.load(unit.model)
            if isinstance(model, IPAdapterWeights):  # the image goes to the CLIP vision encoder as it is
                image_embeds = self.library.clip_vision.encoder_for(model.image_dim).embed(source)
                control_map = source
            else:
                control_map = detect(unit, source, run.width, run.height, run.seed, self.library.annotators)
        except (ControlNetError, PreprocessorError, IPAdapterError) as error:
            raise ScriptError(f"unit {index}: {error}") from error
        plan = ControlPlan(
            model_name=info.title,
            model=model,
            image=control_map,
            weight=unit.weight,
            guidance_start=unit.guidance_start,
            guidance_end=unit.guidance_end,
            control_mode=unit.control_mode,
            resize_mode=unit.resize_mode,
            hr_option=unit.hr_option,
            low_vram=unit.low_vram,
            region=unit.mask,
            image_embeds=image_embeds,
        )
        return plan, info.title


def preview(values: Mapping[str, Any], annotators: AnnotatorRunner | None = None) -> Image.Image:
    """The preview button: the unit's preprocessor on its image (a ValueError says what is missing)."""
    unit = as_unit({**values, "enabled": True})
    if unit.image is None:
        raise UnitError("upload an image to preview the preprocessor")
    try:
        return detect(unit, unit.image, unit.image.width, unit.image.height, annotators=annotators)
    except PreprocessorError as error:
        raise UnitError(str(error)) from error


def img2img_source(run: GenerationRun) -> Image.Image | None:
    image = getattr(run.request, "init_image", None)
    return image if isinstance(image, Image.Image) else None


def detect(
    unit: ControlUnit,
    image: Image.Image,
    width: int,
    height: int,
    seed: int = 0,
    annotators: AnnotatorRunner | None = None,
) -> Image.Image:
    """The unit's preprocessor on its image (pixel perfect: the resolution that fits the generation size)."""
    resolution = unit.processor_res
    if unit.pixel_perfect:
        resolution = pixel_perfect_resolution(image.size, (width, height), unit.resize_mode)
    return run_preprocessor(unit.module, image, resolution, unit.threshold_a, unit.threshold_b, seed, annotators)
