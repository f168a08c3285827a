"""The generation tabs follow the model family of the top bar's checkpoint, through the UI's own handlers (no
browser): the sampler, schedule type and backend dropdowns list what the family runs, the negative prompt and CLIP
skip say what it does not take, a pasted sampler it does not run is refused with its message, and an SD model lists
everything again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modules.application import Application
from modules.cmd_args import build_parser
from modules.models.detection import ModelArchitecture
from modules.models.families import FamilyError, family
from modules.samplers import AUTOMATIC, sampler_names
from modules.ui import handlers
from modules.ui.app import create_ui
from modules.ui.common import UiContext, backend_supports, fields_for_family, sampler_choices_for_backend
from modules.ui.family_controls import applicable_fields
from modules.ui.ui_config import UiConfig

FAMILY_FOLDERS = (ModelArchitecture.FLUX, ModelArchitecture.KANDINSKY22, ModelArchitecture.DEEPFLOYD_IF)


@pytest.fixture(scope="module")
def family_application(tmp_path_factory: pytest.TempPathFactory, tiny_pipeline) -> Application:
    from modules.tiny_model import build_tiny_pipeline, write_diffusers

    data_dir = tmp_path_factory.mktemp("ui-families")
    checkpoints_dir = data_dir / "models" / "Stable-diffusion"
    write_diffusers(tiny_pipeline, checkpoints_dir / "tiny-sd")
    for architecture in FAMILY_FOLDERS:
        write_diffusers(build_tiny_pipeline(architecture=architecture), checkpoints_dir / architecture.value)
    application = Application.create(build_parser().parse_args(["--data-dir", str(data_dir)]))
    yield application
    application.service.shutdown()


@pytest.fixture(scope="module")
def follow_handlers(family_application: Application) -> dict[str, Any]:
    """The UI's family handler of each generation tab (registered for page load and checkpoint change), by tab,
    with the control names of its inputs and outputs."""
    blocks = create_ui(family_application)
    found = {}
    for function in blocks.fns.values():
        if getattr(function.fn, "__name__", "") != "follow_family":
            continue
        inputs = [block.elem_id for block in function.inputs]
        assert inputs[0] == "setting_sd_model_checkpoint"
        tab = inputs[1].split("_")[0]
        found[tab] = (function.fn, inputs, [block.elem_id for block in function.outputs])
    return found


def follow(handlers_by_tab: dict[str, Any], tab: str, checkpoint: str, **values: Any) -> dict[str, Any]:
    """Call a tab's handler as the page does (the checkpoint, then its sampling controls), by output elem_id."""
    function, inputs, outputs = handlers_by_tab[tab]
    arguments = [values[elem_id.removeprefix(f"{tab}_")] for elem_id in inputs[1:]]
    return dict(zip(outputs, function(checkpoint, *arguments), strict=True))


SD_VALUES = {
    "sampling_backend": "original",
    "sampling": "DPM++ 2M",
    "scheduler": "Karras",
    "hr_sampler_name": "DPM++ 2M",
    "hr_scheduler": "Karras",
}


def test_the_checkpoint_family_is_read_without_loading(family_application: Application) -> None:
    assert family_application.checkpoint_family("flux").key == "flux"
    assert family_application.checkpoint_family("kandinsky22").key == "kandinsky22"
    assert family_application.checkpoint_family("tiny-sd").key == "sd1"
    assert family_application.checkpoint_family("no such model") is None
    assert family_application.models.current is None


def test_every_generation_tab_follows_the_family(follow_handlers: dict[str, Any]) -> None:
    assert sorted(follow_handlers) == ["img2img", "inpaint", "txt2img"]


def test_flux_lists_its_sampler_and_says_what_it_does_not_take(follow_handlers: dict[str, Any]) -> None:
    updates = follow(follow_handlers, "txt2img", "flux", **SD_VALUES)
    assert updates["txt2img_sampling_backend"]["choices"] == ["diffusers"]
    assert updates["txt2img_sampling_backend"]["value"] == "diffusers"
    assert updates["txt2img_sampling"]["choices"] == ["Euler"] and updates["txt2img_sampling"]["value"] == "Euler"
    assert updates["txt2img_scheduler"]["choices"] == [AUTOMATIC]
    assert updates["txt2img_scheduler"]["value"] == AUTOMATIC
    assert "own flow-matching schedule" in updates["txt2img_scheduler"]["info"]
    assert updates["txt2img_hr_sampler_name"]["choices"] == [handlers.USE_SAME_SAMPLER, "Euler"]
    assert updates["txt2img_hr_sampler_name"]["value"] == handlers.USE_SAME_SAMPLER
    assert updates["txt2img_hr_scheduler"]["choices"] == [handlers.USE_SAME_SCHEDULER, AUTOMATIC]
    assert "FLUX.1 takes no negative prompt" in updates["txt2img_neg_prompt"]["placeholder"]
    assert "CLIP skip does not apply to FLUX.1" in updates["txt2img_clip_skip"]["info"]
    assert "txt2img_width" not in updates and "txt2img_height" not in updates


def test_kandinsky_and_if_list_ddim_with_its_schedules(follow_handlers: dict[str, Any]) -> None:
    for checkpoint in ("kandinsky22", "deepfloyd-if"):
        updates = follow(follow_handlers, "img2img", checkpoint, **{**SD_VALUES, "sampling_backend": "diffusers"})
        assert updates["img2img_sampling"]["choices"] == ["DDIM"] and updates["img2img_sampling"]["value"] == "DDIM"
        assert updates["img2img_scheduler"]["choices"] == [AUTOMATIC, "Uniform"]
        assert updates["img2img_scheduler"]["value"] == AUTOMATIC
        assert updates["img2img_neg_prompt"]["placeholder"] == ""  # they take a negative prompt


def test_back_to_sd_lists_everything_and_keeps_the_choices(
    follow_handlers: dict[str, Any], family_application: Application
) -> None:
    flux = follow(follow_handlers, "txt2img", "flux", **SD_VALUES)
    after_flux = {
        "sampling_backend": flux["txt2img_sampling_backend"]["value"],
        "sampling": flux["txt2img_sampling"]["value"],
        "scheduler": flux["txt2img_scheduler"]["value"],
        "hr_sampler_name": flux["txt2img_hr_sampler_name"]["value"],
        "hr_scheduler": flux["txt2img_hr_scheduler"]["value"],
    }
    updates = follow(follow_handlers, "txt2img", "tiny-sd", **after_flux)
    supports = backend_supports(family_application)
    assert updates["txt2img_sampling_backend"]["choices"] == list(supports)
    assert updates["txt2img_sampling"]["choices"] == sampler_names(supports["diffusers"])
    assert updates["txt2img_sampling"]["value"] == "Euler"  # still applies: kept
    assert "Karras" in updates["txt2img_scheduler"]["choices"]
    assert updates["txt2img_neg_prompt"]["placeholder"] == "" and updates["txt2img_clip_skip"]["info"] == ""
    assert updates["txt2img_sampling"]["info"] == "" and updates["txt2img_scheduler"]["info"] == ""
    # the user's own SD choices stay as they are
    kept = follow(follow_handlers, "txt2img", "tiny-sd", **SD_VALUES)
    assert (kept["txt2img_sampling"]["value"], kept["txt2img_scheduler"]["value"]) == ("DPM++ 2M", "Karras")
    assert kept["txt2img_sampling_backend"]["value"] == "original"


def test_a_backend_change_keeps_to_the_family(family_application: Application) -> None:
    context = UiContext(application=family_application, ui_config=UiConfig.load(Path("/nonexistent/ui.json")))
    supports = backend_supports(family_application)
    sampler, schedule = sampler_choices_for_backend(context, supports, "diffusers", "Euler a", "Karras", "kandinsky22")
    assert (sampler["choices"], sampler["value"], schedule["value"]) == (["DDIM"], "DDIM", AUTOMATIC)
    sampler, _ = sampler_choices_for_backend(context, supports, "diffusers", "Euler a", "Karras", "tiny-sd")
    assert sampler["value"] == "Euler a" and len(sampler["choices"]) > 10


def test_a_pasted_sampler_the_family_does_not_run_is_refused_with_its_message(
    family_application: Application,
) -> None:
    pasted = {"prompt": "a fox", "sampler_name": "DPM++ 2M", "scheduler": "Karras", "sampling_backend": "original"}
    with pytest.raises(FamilyError) as refusal:
        family("flux").check_sampler("DPM++ 2M")
    with pytest.warns(UserWarning) as shown:  # gr.Warning outside a page event is a Python warning
        taken = fields_for_family(family_application, "flux", pasted)
    assert taken == {"prompt": "a fox"}
    warnings = [str(warning.message) for warning in shown]
    assert f"Not pasted: {refusal.value}" in warnings
    assert any("diffusers backend only" in warning for warning in warnings)
    assert applicable_fields(family("sd1"), pasted) == (pasted, [])
    assert applicable_fields(family("flux"), {"sampler_name": "Euler"}) == ({"sampler_name": "Euler"}, [])
    kandinsky, messages = applicable_fields(family("kandinsky22"), pasted)
    assert kandinsky == {"prompt": "a fox"} and len(messages) == 2  # the sampler's schedule type goes with it


def test_the_clip_skip_quicksetting_says_it_does_not_apply(family_application: Application) -> None:
    blocks = create_ui(family_application)
    functions = [function.fn for function in blocks.fns.values()]
    notes = [function for function in functions if getattr(function, "__name__", "") == "clip_skip_note"]
    assert len(notes) == 1
    assert "CLIP skip does not apply to Kandinsky 2.2" in notes[0]("kandinsky22")["info"]
    assert notes[0]("tiny-sd")["info"] == ""
