"""X/Y/Z plot (A1111's ``scripts/xyz_grid.py`` behaviour, own code): one image per combination of up to three
axes' values, a grid with legends per Z value, the Z sub-grids side by side as the main grid.

Returned images: the main grid, then the sub-grids (``include_sub_grids``), then each cell's first image
(``include_lone_images``); ``first_image_index`` 1. The grid's infotext is the first cell's with
``Script: X/Y/Z plot``, the axes and values (and the fixed seeds unless "Keep -1 for seeds")."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from modules.processing import saving
from modules.processing.infotext import add_parameters, parse_infotext
from modules.processing.processing import ProcessingContext
from modules.processing.requests import GenerationRequest
from modules.processing.run import MAX_RANDOM_SEED, ProcessingResult
from modules.scripts.base import Script, ScriptArgs, ScriptError, ScriptJob, fixed_seed
from modules.scripts.builtin.xyz_axes import Axis, axes_for, confirm, parse_values, values_to_csv
from modules.scripts.controls import Checkbox, Control, Dropdown, Slider, Textbox
from modules.scripts.grid import annotated_grid, side_by_side

logger = logging.getLogger(__name__)

TITLE = "X/Y/Z plot"
MAX_GRID_MEGAPIXELS = 200  # A1111's img_max_size_mp default
SEED_AXES = ("Seed", "Var. seed")


@dataclass
class AxisChoice:
    axis: Axis
    text: str  # the values as the infotext writes them
    values: list[Any]


class XYZPlot(Script):
    def __init__(self, context: ProcessingContext) -> None:
        self.context = context

    def title(self) -> str:
        return TITLE

    def ui(self, is_img2img: bool) -> Sequence[Control]:
        labels = [axis.label for axis in axes_for(is_img2img)]
        controls: list[Control] = []
        for letter, default in (("x", "Seed"), ("y", "Nothing"), ("z", "Nothing")):
            upper = letter.upper()
            controls += [
                Dropdown(f"{letter}_type", f"{upper} type", default, f"{upper} Type", choices=labels, by_index=True),
                Textbox(f"{letter}_values", f"{upper} values", "", f"{upper} Values", lines=1),
                Dropdown(
                    f"{letter}_values_dropdown", f"{upper} values", [], multiselect=True, choices_from=f"{letter}_type"
                ),
            ]
        return [
            *controls,
            Checkbox("draw_legend", "Draw legend", True),
            Checkbox("include_lone_images", "Include Sub Images", False),
            Checkbox("include_sub_grids", "Include Sub Grids", False),
            Checkbox("no_fixed_seeds", "Keep -1 for seeds", False),
            Checkbox("vary_seeds_x", "Vary seeds for X", False, "X Vary seeds"),
            Checkbox("vary_seeds_y", "Vary seeds for Y", False, "Y Vary seeds"),
            Checkbox("vary_seeds_z", "Vary seeds for Z", False, "Z Vary seeds"),
            Slider("margin_size", "Grid margins (px)", 0, minimum=0, maximum=500, step=2),
            Checkbox("csv_mode", "Use text inputs instead of dropdowns", False, "XYZ Plot csv mode"),
        ]

    def dynamic_choices(self, is_img2img: bool, control: str, source_value: Any) -> list[str] | None:
        """The values an axis offers in its dropdown (None: they are typed)."""
        axes = axes_for(is_img2img)
        labels = [axis.label for axis in axes]
        index = labels.index(source_value) if source_value in labels else int(source_value or 0)
        axis = axes[index]
        return axis.choices(self.context) if axis.choices is not None else None

    def run(self, job: ScriptJob, args: ScriptArgs) -> ProcessingResult:
        request = job.request
        base = fixed_seed(request) if not args["no_fixed_seeds"] else request
        axes = [self.read_axis(job, base, args, letter) for letter in "xyz"]
        xs, ys, zs = (choice.values for choice in axes)
        cells = len(xs) * len(ys) * len(zs)
        megapixels = round(cells * base.width * base.height / 1_000_000)
        if megapixels >= MAX_GRID_MEGAPIXELS:
            raise ScriptError(f"Resulting grid would be too large ({megapixels} MPixels) (max {MAX_GRID_MEGAPIXELS})")
        logger.info("xyz plot cells=%d x=%s y=%s z=%s", cells, *(choice.axis.label for choice in axes))
        results = self.run_cells(job, base, axes, args)
        return self.assemble(job, base, axes, results, args)

    def read_axis(self, job: ScriptJob, request: GenerationRequest, args: ScriptArgs, letter: str) -> AxisChoice:
        axis = axes_for(job.is_img2img)[args[f"{letter}_type"]]
        csv_mode = args["csv_mode"]
        dropdown = list(args[f"{letter}_values_dropdown"] or [])
        text = values_to_csv(dropdown) if axis.choices is not None and not csv_mode else args[f"{letter}_values"]
        values = parse_values(axis, args[f"{letter}_values"], dropdown, csv_mode)
        if axis.label != "Nothing":
            confirm(axis, values, request, self.context)
        if axis.label in SEED_AXES and not args["no_fixed_seeds"]:
            values = [random.randrange(MAX_RANDOM_SEED) if value in (None, "", -1) else value for value in values]
        return AxisChoice(axis, text, values)

    def run_cells(
        self, job: ScriptJob, base: GenerationRequest, axes: list[AxisChoice], args: ScriptArgs
    ) -> list[ProcessingResult]:
        """Every cell in A1111's order (X fastest, then Y, then Z); stops early when interrupted."""
        x, y, z = axes
        results = []
        for iz, z_value in enumerate(z.values):
            for iy, y_value in enumerate(y.values):
                for ix, x_value in enumerate(x.values):
                    if job.control.interrupted:
                        return results
                    fields: dict[str, Any] = dict(base)
                    fields["save_grid"] = False
                    for choice, value in ((x, x_value), (y, y_value), (z, z_value)):
                        assert choice.axis.apply is not None
                        choice.axis.apply(fields, value, choice.values)
                    fields["seed"] = varied_seed(fields["seed"], (ix, iy, iz), axes, args)
                    cell = type(base).model_validate(fields)
                    results.append(job.process(cell))
        return results

    def assemble(
        self,
        job: ScriptJob,
        base: GenerationRequest,
        axes: list[AxisChoice],
        results: list[ProcessingResult],
        args: ScriptArgs,
    ) -> ProcessingResult:
        x, y, z = axes
        produced = [result for result in results if result.images]
        if not produced:
            return ProcessingResult(interrupted=True, notes=["X/Y/Z plot: no image was made"])
        blank = Image.new("RGB", produced[0].images[0].size, (0, 0, 0))
        cells = [cell_image(result) if result.images else blank for result in results]
        cells += [blank] * (len(x.values) * len(y.values) * len(z.values) - len(cells))
        per_grid = len(x.values) * len(y.values)
        legend = args["draw_legend"]
        sub_grids = [
            annotated_grid(
                cells[index * per_grid : (index + 1) * per_grid],
                len(x.values),
                [x.axis.label_for(value) if legend else "" for value in x.values],
                [y.axis.label_for(value) if legend else "" for value in y.values],
                args["margin_size"],
            )
            for index in range(len(z.values))
        ]
        if len(sub_grids) == 1:
            main = sub_grids[0]
        elif legend:
            main = annotated_grid(sub_grids, len(sub_grids), [z.axis.label_for(v) for v in z.values], [""])
        else:
            main = side_by_side(sub_grids, args["margin_size"])
        first = produced[0]
        grid_text = add_parameters(first.infotexts[0], axes_infotext(axes, args, main_grid=True))
        sub_text = add_parameters(first.infotexts[0], axes_infotext(axes, args, main_grid=False))
        result = ProcessingResult(first_image_index=1, interrupted=job.control.interrupted)
        add_image(result, main, grid_text, first)
        if args["include_sub_grids"]:
            for grid in sub_grids:
                add_image(result, grid, sub_text, first)
        if args["include_lone_images"]:
            for cell in produced:
                add_image(result, cell.images[0], cell.infotexts[0], cell)
        for cell in produced:
            result.saved_paths.extend(cell.saved_paths)
            result.notes.extend(note for note in cell.notes if note not in result.notes)
        result.grid_path = job.save_grid(main, grid_text, base)
        result.parameters = parse_infotext(grid_text)
        return result


def fix_seeds(request: GenerationRequest) -> GenerationRequest:
    """A1111's ``fix_seed``: a random seed (-1) is drawn once so every cell uses the same one."""
    updates = {name: random.randrange(MAX_RANDOM_SEED) for name in ("seed", "subseed") if getattr(request, name) == -1}
    return request.model_copy(update=updates) if updates else request


def varied_seed(seed: int, position: tuple[int, int, int], axes: list[AxisChoice], args: ScriptArgs) -> int:
    """ "Vary seeds for X/Y/Z": the seed moves on with the cell's position along the chosen axes."""
    if seed == -1:
        return seed
    ix, iy, iz = position
    x_size = len(axes[0].values) if args["vary_seeds_x"] else 1
    y_size = len(axes[1].values) if args["vary_seeds_y"] else 1
    if args["vary_seeds_x"]:
        seed += ix
    if args["vary_seeds_y"]:
        seed += iy * x_size
    if args["vary_seeds_z"]:
        seed += iz * x_size * y_size
    return seed


def cell_image(result: ProcessingResult) -> Image.Image:
    """A cell shows its image, or its batch as a grid."""
    return result.images[0] if len(result.images) == 1 else saving.make_grid(result.images)


def axes_infotext(axes: list[AxisChoice], args: ScriptArgs, main_grid: bool) -> dict[str, object]:
    parameters: dict[str, object] = {"Script": TITLE}
    letters = "XYZ" if main_grid else "XY"
    for letter, choice in zip(letters, axes, strict=False):
        if choice.axis.label == "Nothing":
            continue
        parameters[f"{letter} Type"] = choice.axis.label
        parameters[f"{letter} Values"] = choice.text
        if choice.axis.label in SEED_AXES and not args["no_fixed_seeds"]:
            parameters[f"Fixed {letter} Values"] = ", ".join(str(value) for value in choice.values)
    return parameters


def add_image(result: ProcessingResult, image: Image.Image, infotext: str, source: ProcessingResult) -> None:
    result.images.append(image)
    result.infotexts.append(infotext)
    result.seeds.append(source.seeds[0])
    result.subseeds.append(source.subseeds[0] if source.subseeds else -1)
    result.prompts.append(source.prompts[0])
    result.negative_prompts.append(source.negative_prompts[0])
