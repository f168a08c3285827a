"""Poor man's outpainting (img2img, A1111's ``scripts/poor_mans_outpainting.py`` behaviour): grow the canvas in
the chosen directions and inpaint the new border, with the chosen masked-content fill. Easel's canvas growing and
inpainting do the work (``modules.processing.inputs.outpaint_request``)."""

from __future__ import annotations

from collections.abc import Sequence

from modules.backends.base import MaskedContent
from modules.processing.inputs import outpaint_request
from modules.processing.requests import Img2ImgRequest
from modules.processing.run import ProcessingResult
from modules.scripts.base import Script, ScriptArgs, ScriptError, ScriptJob, Visibility, fixed_seed, updated
from modules.scripts.controls import Control, Dropdown, Radio, Slider

DIRECTIONS = ("left", "right", "up", "down")
# A1111's radio order ('fill', 'original', 'latent noise', 'latent nothing') is Easel's MaskedContent order.
FILLS = ("fill", "original", "latent noise", "latent nothing")


class PoorMansOutpainting(Script):
    def title(self) -> str:
        return "Poor man's outpainting"

    def show(self, is_img2img: bool) -> Visibility:
        return Visibility.SELECTABLE if is_img2img else Visibility.HIDDEN

    def ui(self, is_img2img: bool) -> Sequence[Control]:
        return [
            Slider("pixels", "Pixels to expand", 128, minimum=8, maximum=256, step=8),
            Slider("mask_blur", "Mask blur", 4, minimum=0, maximum=64, step=1),
            Radio("inpainting_fill", "Masked content", "fill", choices=FILLS, by_index=True),
            Dropdown("direction", "Outpainting direction", list(DIRECTIONS), choices=DIRECTIONS, multiselect=True),
        ]

    def run(self, job: ScriptJob, args: ScriptArgs) -> ProcessingResult:
        request = job.request
        if not isinstance(request, Img2ImgRequest):
            raise ScriptError("Poor man's outpainting needs an img2img request")
        directions = set(args["direction"])
        if not directions or not directions <= set(DIRECTIONS):
            raise ScriptError(f"Outpainting direction: choose among {', '.join(DIRECTIONS)}")
        pixels = int(args["pixels"])
        amounts = [pixels if direction in directions else 0 for direction in DIRECTIONS]
        fill = MaskedContent(int(args["inpainting_fill"]))
        base = updated(fixed_seed(request), mask_blur=int(args["mask_blur"]), inpainting_fill=fill)
        return job.process(outpaint_request(base, *amounts))
