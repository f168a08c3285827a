"""Which UNet calls a unit acts on: the hires-fix option of a unit (Both / Low res only / High res only), and
"ControlNet is more important" giving the control to the prompt rows only (AND prompts, the original backend's
separate cond / uncond calls), as the extension does."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modules.backends.registry import create_backend
from modules.controlnet.models import ControlNetLibrary
from modules.models.hashing import HashCache
from modules.processing.processing import ProcessingContext
from modules.scripts.builtin.controlnet import ControlNetScript
from modules.scripts.runner import ScriptCatalogue
from modules.tiny_model import build_tiny_controlnet
from tests.helpers import tiny_request

NAME = "tiny_passes"
LONG_PROMPT = " ".join(["a red cube on a blue table"] * 14)  # over 75 tokens: two chunks, the negative one


def encoded(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def unit(**fields) -> dict:
    array = np.zeros((64, 64, 3), dtype=np.uint8)
    array[8:40, 16:48] = (250, 120, 30)
    return {"enabled": True, "model": NAME, "module": "none", "image": encoded(Image.fromarray(array)), **fields}


@pytest.fixture(scope="module")
def library(context, tmp_path_factory) -> ControlNetLibrary:
    folder = tmp_path_factory.mktemp("ControlNet")
    build_tiny_controlnet(context.models.ensure_loaded().pipeline.unet, seed=6).save_pretrained(folder / NAME)
    library = ControlNetLibrary([folder], HashCache(folder / "cache.json"), Path("configs"), cache_size=1)
    library.refresh()
    return library


def generate(context: ProcessingContext, library: ControlNetLibrary, request, units: list[dict], backend: str):
    context = ProcessingContext(
        models=context.models,
        backend=create_backend(backend),
        options=context.options,
        paths=context.paths,
        postprocessor=context.postprocessor,
    )
    catalogue = ScriptCatalogue([ControlNetScript(library, lambda: 2)])
    tab = catalogue.tab(False)
    script = tab.always_on[0]
    return tab.bind(always_on={id(script): tab.arguments(script, units)}).execute(request, context)


@contextmanager
def recorded_calls(module: torch.nn.Module) -> Iterator[list[dict]]:
    """The keyword arguments (and the sample) of each forward call of ``module``."""
    calls: list[dict] = []
    hook = module.register_forward_pre_hook(
        lambda _, args, kwargs: calls.append({"sample": args[0] if args else kwargs["sample"], **kwargs}),
        with_kwargs=True,
    )
    try:
        yield calls
    finally:
        hook.remove()


@pytest.mark.parametrize(
    ("option", "low_res_calls", "high_res_calls"),
    [("Both", True, True), ("Low res only", True, False), ("High res only", False, True)],
)
def test_the_hires_option_chooses_the_passes_the_unit_acts_in(
    hires_context, library, option, low_res_calls, high_res_calls
):
    request = tiny_request(steps=2, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", hr_second_pass_steps=2)
    controlnet = library.load(NAME)[1]
    unet = hires_context.models.ensure_loaded().pipeline.unet
    with recorded_calls(controlnet) as control_calls, recorded_calls(unet) as unet_calls:
        generate(hires_context, library, request, [unit(hr_option=option)], "diffusers")
    widths = [call["sample"].shape[-1] for call in control_calls]
    assert {call["sample"].shape[-1] for call in unet_calls} == {8, 12}  # 64 px then 96 px latents
    assert widths.count(8) == (2 if low_res_calls else 0)
    assert widths.count(12) == (2 if high_res_calls else 0)


@pytest.mark.parametrize("backend", ["diffusers", "original"])
def test_controlnet_is_more_important_gives_no_control_to_the_negative_rows_of_and_prompts(context, library, backend):
    """A prompt of two AND parts: three rows per call (two prompt rows, one negative row); only the negative row's
    residuals are zero (diffusers puts it first, A1111's guidance last)."""
    request = tiny_request(prompt="a red cube AND a blue sphere", steps=2, cfg_scale=5.0)
    unet = context.models.ensure_loaded().pipeline.unet
    with recorded_calls(unet) as calls:
        generate(context, library, request, [unit(control_mode="ControlNet is more important")], backend)
    negative_row = 0 if backend == "diffusers" else 2
    assert len(calls) == 2
    for call in calls:
        mid = call["mid_block_additional_residual"]
        assert mid.shape[0] == 3
        zero_rows = [row for row in range(3) if not mid[row].abs().sum()]
        assert zero_rows == [negative_row]
    with recorded_calls(unet) as calls:
        generate(context, library, request, [unit()], "original")
    assert all(call["mid_block_additional_residual"].abs().flatten(1).sum(1).all() for call in calls)  # Balanced


def test_the_original_backends_separate_negative_call_gets_no_control_with_controlnet_more_important(context, library):
    """A two-chunk prompt and a one-chunk negative prompt: separate UNet calls; the negative call runs without the
    ControlNet in "ControlNet is more important", with it in Balanced mode."""
    request = tiny_request(prompt=LONG_PROMPT, steps=2, cfg_scale=5.0)
    unet = context.models.ensure_loaded().pipeline.unet
    controlnet = library.load(NAME)[1]
    for mode, negative_controlled in (("ControlNet is more important", False), ("Balanced", True)):
        with recorded_calls(unet) as calls, recorded_calls(controlnet) as control_calls:
            generate(context, library, request, [unit(control_mode=mode)], "original")
        negative = [call for call in calls if call["encoder_hidden_states"].shape[1] == 77]
        prompt = [call for call in calls if call["encoder_hidden_states"].shape[1] == 154]
        assert len(negative) == len(prompt) == 2
        assert all("mid_block_additional_residual" in call for call in prompt)
        assert all(("mid_block_additional_residual" in call) == negative_controlled for call in negative)
        assert len(control_calls) == (4 if negative_controlled else 2)


def test_the_txt2img_unit_has_the_hires_fix_option_widget_and_its_value_reaches_the_unit(library):
    from modules.controlnet.units import HiresOption

    script = ControlNetScript(library, lambda: 1)
    txt2img, img2img = script.ui(False)[0], script.ui(True)[0]
    option = next(child for child in txt2img.children if child.name == "hr_option")
    assert (option.label, option.value, tuple(option.choices)) == (
        "Hires-Fix Option",
        "Both",
        ("Both", "Low res only", "High res only"),
    )
    assert "hr_option" not in {child.name for child in img2img.children}
    values = {child.name: child.value for child in txt2img.children} | {"hr_option": "Low res only"}
    assert txt2img.convert(values).hr_option is HiresOption.LOW_RES_ONLY
