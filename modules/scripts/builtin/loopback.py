"""Loopback (img2img, A1111's ``scripts/loopback.py`` behaviour): each output is the next loop's input, the
denoising strength moving from the request's to the final one along the chosen curve."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image

from modules.processing import saving
from modules.processing.infotext import add_parameters
from modules.processing.requests import Img2ImgRequest
from modules.processing.run import ProcessingResult
from modules.scripts.base import Script, ScriptArgs, ScriptError, ScriptJob, Visibility, fixed_seed, updated
from modules.scripts.controls import Control, Dropdown, Slider


def strength_at(loop: int, loops: int, initial: float, final: float, curve: str) -> float:
    """A1111's curves: Linear, Aggressive (sine) and Lazy (1 - cosine) from the initial to the final strength."""
    if loops == 1:
        return initial
    progress = loop / (loops - 1)
    if curve == "Aggressive":
        shape = math.sin(progress * math.pi * 0.5)
    elif curve == "Lazy":
        shape = 1 - math.cos(progress * math.pi * 0.5)
    else:
        shape = progress
    return initial + (final - initial) * shape


class Loopback(Script):
    def title(self) -> str:
        return "Loopback"

    def show(self, is_img2img: bool) -> Visibility:
        return Visibility.SELECTABLE if is_img2img else Visibility.HIDDEN

    def ui(self, is_img2img: bool) -> Sequence[Control]:
        return [
            Slider("loops", "Loops", 4, minimum=1, maximum=32, step=1),
            Slider("final_denoising_strength", "Final denoising strength", 0.5, minimum=0, maximum=1, step=0.01),
            Dropdown("denoising_curve", "Denoising strength curve", "Linear", choices=("Aggressive", "Linear", "Lazy")),
            Dropdown("append_interrogation", "Append interrogated prompt at each iteration", "None", choices=("None",)),
        ]

    def run(self, job: ScriptJob, args: ScriptArgs) -> ProcessingResult:
        request = job.request
        if not isinstance(request, Img2ImgRequest):
            raise ScriptError("Loopback needs an img2img request")
        if args["append_interrogation"] != "None":
            raise ScriptError("Easel has no interrogator: choose None")
        request = fixed_seed(request)
        loops, final, curve = int(args["loops"]), float(args["final_denoising_strength"]), args["denoising_curve"]
        extra = {"Final denoising strength": final, "Denoising curve": curve}
        result = ProcessingResult()
        grids = []
        grid_listeners = job.context.listeners.grid  # on_image_grid, as A1111's images.image_grid
        for batch in range(request.n_iter):
            image, seed, strength = request.init_image, request.seed + batch, request.denoising_strength
            history = []
            for loop in range(loops):
                if job.control.interrupted:
                    break
                step = updated(
                    request,
                    init_image=image,
                    seed=seed,
                    denoising_strength=strength,
                    n_iter=1,
                    batch_size=1,
                    save_grid=False,
                )
                step_result = job.process(step)
                if not step_result.images:
                    break
                image = step_result.images[0]
                history.append((image, step_result))
                seed, strength = seed + 1, strength_at(loop + 1, loops, request.denoising_strength, final, curve)
            for image, step_result in history:
                add_loop_image(result, image, step_result, extra)
            if len(history) > 1:
                grids.append(saving.make_grid([image for image, _ in history], rows=1, listeners=grid_listeners))
        result.interrupted = job.control.interrupted
        if grids:
            grid = grids[0] if len(grids) == 1 else saving.make_grid(grids, rows=len(grids), listeners=grid_listeners)
            text = result.infotexts[0]
            result.grid_path = job.save_grid(grid, text, request)
            result.images.insert(0, grid)
            for name, value in (
                ("infotexts", text),
                ("seeds", result.seeds[0]),
                ("subseeds", result.subseeds[0]),
                ("prompts", result.prompts[0]),
                ("negative_prompts", result.negative_prompts[0]),
            ):
                getattr(result, name).insert(0, value)
            result.first_image_index = 1
        return result


def add_loop_image(
    result: ProcessingResult, image: Image.Image, step_result: ProcessingResult, extra: dict[str, object]
) -> None:
    result.images.append(image)
    result.infotexts.append(add_parameters(step_result.infotexts[0], extra))
    result.seeds.append(step_result.seeds[0])
    result.subseeds.append(step_result.subseeds[0])
    result.prompts.append(step_result.prompts[0])
    result.negative_prompts.append(step_result.negative_prompts[0])
    result.saved_paths += step_result.saved_paths
    result.notes += [note for note in step_result.notes if note not in result.notes]
