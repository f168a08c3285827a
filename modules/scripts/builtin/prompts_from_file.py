"""Prompts from file or textbox (A1111's ``scripts/prompts_from_file.py`` behaviour): one job per line; a line is
a prompt, or A1111's options ``--prompt "a cat" --steps 10 --cfg_scale 5 ...`` for that line."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Sequence
from typing import Any

from modules.processing.run import ProcessingResult
from modules.scripts.base import Script, ScriptArgs, ScriptError, ScriptJob, fixed_seed, merge_results, updated
from modules.scripts.controls import Checkbox, Control, Radio, Textbox

logger = logging.getLogger(__name__)


def to_bool(text: str) -> bool:
    return text == "true"


# A1111's per-line options with the request field each sets (None: A1111's own name); the others it knows
# (outpath_samples, outpath_grids, prompt_for_display, subseed_strength, seed_resize_from_*, tiling) are refused.
LINE_OPTIONS: dict[str, tuple[Callable[[str], Any], str]] = {
    "sd_model": (str, "checkpoint"),
    "prompt": (str, "prompt"),
    "negative_prompt": (str, "negative_prompt"),
    "styles": (str, "styles"),
    "seed": (int, "seed"),
    "subseed": (int, "subseed"),
    "sampler_name": (str, "sampler_name"),
    "batch_size": (int, "batch_size"),
    "n_iter": (int, "n_iter"),
    "steps": (int, "steps"),
    "cfg_scale": (float, "cfg_scale"),
    "width": (int, "width"),
    "height": (int, "height"),
    "restore_faces": (to_bool, "restore_faces"),
    "do_not_save_samples": (to_bool, "save_images"),
    "do_not_save_grid": (to_bool, "save_grid"),
}
NEGATED = ("do_not_save_samples", "do_not_save_grid")


def parse_line(line: str) -> dict[str, Any]:
    """A1111's ``cmdargs``: ``--name value`` pairs; a prompt takes every word up to the next ``--``."""
    words = shlex.split(line)
    fields: dict[str, Any] = {}
    position = 0
    while position < len(words):
        word = words[position]
        if not word.startswith("--"):
            raise ScriptError(f'must start with "--": {word}')
        if position + 1 >= len(words):
            raise ScriptError(f"missing argument for command line option {word}")
        tag = word[2:]
        if tag not in LINE_OPTIONS:
            raise ScriptError(f"unknown commandline option: {word}")
        convert, name = LINE_OPTIONS[tag]
        if tag in ("prompt", "negative_prompt"):
            position += 1
            text = [words[position]]
            position += 1
            while position < len(words) and not words[position].startswith("--"):
                text.append(words[position])
                position += 1
            fields[name] = " ".join(text)
            continue
        value = convert(words[position + 1])
        if tag == "styles":
            value = [value]
        fields[name] = (not value) if tag in NEGATED else value
        position += 2
    return fields


def line_fields(line: str) -> dict[str, Any]:
    """A line's fields: options when it has ``--``, else the whole line is the prompt (A1111: a line whose options
    do not parse is taken as a prompt, and the error logged)."""
    if "--" not in line:
        return {"prompt": line}
    try:
        return parse_line(line)
    except (ScriptError, ValueError) as error:
        logger.warning("prompts from file: line taken as a prompt line=%r error=%s", line, error)
        return {"prompt": line}


class PromptsFromFile(Script):
    def title(self) -> str:
        return "Prompts from file or textbox"

    def ui(self, is_img2img: bool) -> Sequence[Control]:
        return [
            Checkbox("checkbox_iterate", "Iterate seed every line", False),
            Checkbox("checkbox_iterate_batch", "Use same random seed for all lines", False),
            Radio("prompt_position", "Insert prompts at the", "start", choices=("start", "end")),
            Textbox("prompt_txt", "List of prompt inputs", "", lines=7),
        ]

    def run(self, job: ScriptJob, args: ScriptArgs) -> ProcessingResult:
        lines = [line.strip() for line in str(args["prompt_txt"]).splitlines() if line.strip()]
        if not lines:
            raise ScriptError("List of prompt inputs is empty")
        request = job.request
        if args["checkbox_iterate"] or args["checkbox_iterate_batch"]:
            request = fixed_seed(request)
        seed = request.seed
        results = []
        for line in lines:
            if job.control.interrupted:
                break
            fields = {"seed": seed, "save_grid": False, **line_fields(line)}
            for name in ("prompt", "negative_prompt"):
                given, base = fields.get(name), getattr(request, name)
                if given and base:
                    fields[name] = f"{given} {base}" if args["prompt_position"] == "start" else f"{base} {given}"
            line_request = updated(request, **fields)
            results.append(job.process(line_request))
            if args["checkbox_iterate"]:
                seed += request.batch_size * request.n_iter
        return merge_results(results)
