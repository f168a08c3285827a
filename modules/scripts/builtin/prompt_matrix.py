"""Prompt matrix (A1111's ``scripts/prompt_matrix.py`` behaviour): ``base|a|b`` makes every combination of the
optional parts (2^n images) and a grid with the parts on the top (first half) and the left (second half)."""

from __future__ import annotations

from collections.abc import Sequence

from modules.processing.run import ProcessingResult
from modules.scripts.base import Script, ScriptArgs, ScriptError, ScriptJob, fixed_seed, merge_results, updated
from modules.scripts.controls import Checkbox, Control, Radio, Slider
from modules.scripts.grid import annotated_grid


def combinations(prompt: str, put_at_start: bool, delimiter: str) -> tuple[list[str], list[str]]:
    """(every prompt, the optional parts): combination i has optional part n when bit n of i is set."""
    parts = prompt.split("|")
    options = parts[1:]
    prompts = []
    for number in range(2 ** len(options)):
        chosen = [text.strip().strip(",") for bit, text in enumerate(options) if number & (1 << bit)]
        ordered = [*chosen, parts[0]] if put_at_start else [parts[0], *chosen]
        prompts.append(delimiter.join(ordered))
    return prompts, [text.strip().strip(",") for text in options]


def legend(options: list[str], bits: range, number: int) -> str:
    """The label of a row or column: its options, "-" before the ones it leaves out."""
    return "\n".join(f"{'' if number & (1 << bit) else '- '}{options[bit]}" for bit in bits)


class PromptMatrix(Script):
    def title(self) -> str:
        return "Prompt matrix"

    def ui(self, is_img2img: bool) -> Sequence[Control]:
        return [
            Checkbox("put_at_start", "Put variable parts at start of prompt", False),
            Checkbox("different_seeds", "Use different seed for each picture", False),
            Radio("prompt_type", "Select prompt", "positive", choices=("positive", "negative")),
            Radio("variations_delimiter", "Select joining char", "comma", choices=("comma", "space")),
            Slider("margin_size", "Grid margins (px)", 0, minimum=0, maximum=500, step=2),
        ]

    def run(self, job: ScriptJob, args: ScriptArgs) -> ProcessingResult:
        if args["prompt_type"] not in ("positive", "negative"):
            raise ScriptError(f"Unknown prompt type {args['prompt_type']}")
        if args["variations_delimiter"] not in ("comma", "space"):
            raise ScriptError(f"Unknown variations delimiter {args['variations_delimiter']}")
        request = fixed_seed(job.request)
        field = "prompt" if args["prompt_type"] == "positive" else "negative_prompt"
        delimiter = ", " if args["variations_delimiter"] == "comma" else " "
        prompts, options = combinations(getattr(request, field), args["put_at_start"], delimiter)
        results = []
        for index, prompt in enumerate(prompts):
            if job.control.interrupted:
                break
            seed = request.seed + (index if args["different_seeds"] else 0)
            results.append(job.process(updated(request, **{field: prompt, "seed": seed, "save_grid": False})))
        merged = merge_results(results)
        if len(merged.images) < len(prompts):
            return merged
        column_bits = range(len(options) - len(options) // 2)
        row_bits = range(len(column_bits), len(options))
        columns = 2 ** len(column_bits)
        cells = [result.images[0] for result in results]
        grid = annotated_grid(
            cells,
            columns,
            [legend(options, column_bits, number) for number in range(columns)],
            [legend(options, row_bits, number << len(column_bits)) for number in range(2 ** len(row_bits))],
            args["margin_size"],
        )
        merged.images.insert(0, grid)
        merged.infotexts.insert(0, merged.infotexts[0])
        for name in ("seeds", "subseeds", "prompts", "negative_prompts"):
            values = getattr(merged, name)
            values.insert(0, values[0])
        merged.first_image_index = 1
        merged.grid_path = job.save_grid(grid, merged.infotexts[0], request)
        return merged
