"""The built-in scripts besides X/Y/Z plot on the tiny model: Prompt matrix, Prompts from file, Loopback, SD
upscale, Poor man's outpainting, Custom code (only with --allow-code)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modules.processing.infotext import parse_infotext
from modules.processing.processing import ProcessingError
from modules.scripts.builtin import builtin_scripts
from modules.scripts.builtin.prompt_matrix import combinations
from modules.scripts.builtin.prompts_from_file import line_fields, parse_line
from modules.scripts.builtin.sd_upscale import combine_tiles, split_tiles, tile_starts
from modules.scripts.runner import ScriptCatalogue
from tests.helpers import tiny_img2img, tiny_request


def run_script(context, request, name, args, allow_code=False):
    tab = ScriptCatalogue(builtin_scripts(context, allow_code)).tab(request.task.value != "txt2img")
    script = tab.find_selectable(name)
    return tab.bind(selected=(script, tab.arguments(script, args))).execute(request, context)


def test_scripts_per_tab_in_a1111_order(context):
    catalogue = ScriptCatalogue(builtin_scripts(context))
    assert [s.api_name for s in catalogue.tab(False).selectable] == [
        "prompt matrix",
        "prompts from file or textbox",
        "x/y/z plot",
    ]
    assert [s.api_name for s in catalogue.tab(True).selectable] == [
        "loopback",
        "outpainting mk2",
        "poor man's outpainting",
        "prompt matrix",
        "prompts from file or textbox",
        "sd upscale",
        "x/y/z plot",
    ]
    with_code = ScriptCatalogue(builtin_scripts(context, allow_code=True))
    assert with_code.tab(False).selectable[0].api_name == "custom code"


def test_prompt_matrix_combinations_and_grid(context):
    prompts, options = combinations("a fox|red|in snow", False, ", ")
    assert prompts == ["a fox", "a fox, red", "a fox, in snow", "a fox, red, in snow"]
    assert options == ["red", "in snow"]
    assert combinations("a|b", True, " ")[0] == ["a", "b a"]
    result = run_script(context, tiny_request(prompt="a fox|red|in snow", seed=-1), "Prompt matrix", [])
    assert len(result.images) == 5 and result.first_image_index == 1
    assert result.prompts[1:] == prompts
    assert len(set(result.seeds)) == 1
    assert result.images[0].width == 64 * 2 + 64 * 3 // 4


def test_prompts_from_file_line_syntax():
    assert parse_line('--prompt "a red fox" in snow --steps 2 --cfg_scale 5 --do_not_save_samples true') == {
        "prompt": "a red fox in snow",
        "steps": 2,
        "cfg_scale": 5.0,
        "save_images": False,
    }
    assert line_fields("just a prompt") == {"prompt": "just a prompt"}
    assert line_fields("--nope 1 -- x") == {"prompt": "--nope 1 -- x"}  # A1111 takes a bad line as a prompt


def test_prompts_from_file_runs_each_line(context):
    text = "a cat\n\n--prompt dog --steps 2 --negative_prompt ugly\n"
    args = {"checkbox_iterate": True, "prompt_txt": text, "prompt_position": "end"}
    result = run_script(context, tiny_request(seed=5, negative_prompt=""), "Prompts from file or textbox", args)
    assert result.prompts == ["a red fox a cat", "a red fox dog"]
    assert result.seeds == [5, 6]
    second = parse_infotext(result.infotexts[1])
    assert second["Steps"] == "2" and second["Negative prompt"] == "ugly"


def test_loopback_feeds_each_output_back(context):
    args = {"loops": 2, "final_denoising_strength": 0.3}
    result = run_script(context, tiny_img2img(seed=3), "Loopback", args)
    assert len(result.images) == 3 and result.first_image_index == 1
    assert result.seeds[1:] == [3, 4]
    second = parse_infotext(result.infotexts[2])
    assert float(second["Denoising strength"]) == 0.3 and second["Denoising curve"] == "Linear"


def test_sd_upscale_tiles_cover_the_image_and_blend_back():
    assert tile_starts(160, 64, 16) == [0, 48, 96]
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 160, 3), dtype=np.uint8))
    tiles = split_tiles(image, 64, 64, 16)
    crops = [image.crop((t.left, t.top, t.left + 64, t.top + 64)) for t in tiles]
    assert np.array_equal(np.asarray(combine_tiles(image.size, tiles, crops, 16)), np.asarray(image))


def test_sd_upscale_and_poor_mans_outpainting_run(context):
    upscaled = run_script(context, tiny_img2img(), "SD upscale", ["", 16, "Lanczos", 1.5])
    assert upscaled.images[0].size == (96, 96)
    assert parse_infotext(upscaled.infotexts[0])["SD upscale upscaler"] == "Lanczos"
    outpainted = run_script(context, tiny_img2img(), "Poor man's outpainting", [16, 4, 1, ["left"]])
    assert outpainted.images[0].size == (80, 64)


def test_custom_code_only_with_allow_code(context):
    with pytest.raises(Exception, match="Script 'custom code' not found"):
        run_script(context, tiny_request(), "custom code", [])
    with pytest.raises(ProcessingError, match="Custom code failed: name 'updated_steps' is not defined"):
        run_script(context, tiny_request(), "custom code", ["request = updated_steps(request)\n"], True)


def test_custom_code_runs_the_users_code(context):
    code = 'request = request.model_copy(update={"steps": 2})'
    result = run_script(context, tiny_request(), "custom code", [code], allow_code=True)
    assert parse_infotext(result.infotexts[0])["Steps"] == "2"
    with pytest.raises(ProcessingError, match="syntax error"):
        run_script(context, tiny_request(), "custom code", ["def ("], allow_code=True)


def test_outpainting_mk2_grows_each_direction_from_matched_noise(context):
    import numpy as np

    from modules.scripts.builtin.outpainting_mk2 import grow, matched_noise

    image = Image.new("RGB", (64, 64), (200, 40, 40))
    canvas, mask, known = grow(image, "left", 12)
    assert canvas.size == (80, 64) and known[:, 16:].all() and not known[:, :16].any()
    assert mask.getpixel((0, 0)) == 255 and mask.getpixel((20, 0)) == 0
    noised = matched_noise(np.asarray(canvas) / 255.0, known, 1.0, 0.0, np.random.default_rng(0))
    assert abs(noised[:, :16, 0].mean() - 200 / 255) < 0.05  # the new strip takes the picture's colour
    result = run_script(context, tiny_img2img(), "Outpainting mk2", ["", 8, 4, ["left", "down"], 1.0, 0.05])
    assert result.images[0].size == (72, 72)
