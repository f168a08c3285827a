"""SD upscale (img2img, A1111's ``scripts/sd_upscale.py`` behaviour): upscale the init image, cut it into tiles of
the request's size that overlap, img2img every tile, and blend the tiles back together over the overlaps.

The tile layout and the feathered blending are written here by hand: no library splits and re-joins images this
way (A1111's ``split_grid`` / ``combine_grid`` do the same job)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from modules.processing.infotext import add_parameters
from modules.processing.requests import Img2ImgRequest
from modules.processing.run import ProcessingResult
from modules.scripts.base import Script, ScriptArgs, ScriptError, ScriptJob, Visibility, fixed_seed, updated
from modules.scripts.controls import Control, Info, Radio, Slider

PLAIN_UPSCALERS = ("None", "Lanczos", "Nearest")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread tile positions along one side so that neighbours overlap by at least ``overlap``."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    spacing = (length - tile) / (count - 1)
    return [int(index * spacing) for index in range(count)]


@dataclass(frozen=True)
class Tile:
    left: int
    top: int


def split_tiles(image: Image.Image, width: int, height: int, overlap: int) -> list[Tile]:
    return [
        Tile(left, top)
        for top in tile_starts(image.height, height, overlap)
        for left in tile_starts(image.width, width, overlap)
    ]


def feather(width: int, height: int, overlap: int) -> np.ndarray:
    """A tile's weight: 1 inside, ramping down towards its edges over the overlap."""
    if overlap <= 0:
        return np.ones((height, width), dtype=np.float64)

    def ramp(size: int) -> np.ndarray:
        positions = np.arange(size, dtype=np.float64)
        return np.clip(np.minimum(positions + 1, size - positions) / overlap, 1e-3, 1.0)

    return np.outer(ramp(height), ramp(width))


def combine_tiles(size: tuple[int, int], tiles: list[Tile], images: list[Image.Image], overlap: int) -> Image.Image:
    width, height = size
    total = np.zeros((height, width, 3), dtype=np.float64)
    weights = np.zeros((height, width, 1), dtype=np.float64)
    for tile, image in zip(tiles, images, strict=True):
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
        tile_height, tile_width = pixels.shape[:2]
        weight = feather(tile_width, tile_height, overlap)[..., None]
        area = (slice(tile.top, tile.top + tile_height), slice(tile.left, tile.left + tile_width))
        total[area] += pixels * weight
        weights[area] += weight
    return Image.fromarray(np.clip(total / np.maximum(weights, 1e-9) + 0.5, 0, 255).astype(np.uint8))


class SDUpscale(Script):
    def __init__(self, upscaler_names: Sequence[str] = PLAIN_UPSCALERS) -> None:
        self.upscaler_names = tuple(upscaler_names)

    def title(self) -> str:
        return "SD upscale"

    def show(self, is_img2img: bool) -> Visibility:
        return Visibility.SELECTABLE if is_img2img else Visibility.HIDDEN

    def ui(self, is_img2img: bool) -> Sequence[Control]:
        return [
            Info(
                "info",
                "Will upscale the image by the selected scale factor; use width and height sliders to set tile size",
            ),
            Slider("overlap", "Tile overlap", 64, minimum=0, maximum=256, step=16),
            Radio("upscaler_index", "Upscaler", self.upscaler_names[0], choices=self.upscaler_names, by_index=True),
            Slider("scale_factor", "Scale Factor", 2.0, minimum=1.0, maximum=4.0, step=0.05),
        ]

    def run(self, job: ScriptJob, args: ScriptArgs) -> ProcessingResult:
        request = job.request
        if not isinstance(request, Img2ImgRequest):
            raise ScriptError("SD upscale needs an img2img request")
        request = fixed_seed(request)
        overlap, scale = int(args["overlap"]), float(args["scale_factor"])
        if overlap >= min(request.width, request.height):
            raise ScriptError(
                f"Tile overlap {overlap} must be smaller than the tile ({request.width}x{request.height})"
            )
        upscaler = self.upscaler_names[args["upscaler_index"]]
        image = self.upscaled(job, request.init_image.convert("RGB"), upscaler, scale)
        tiles = split_tiles(image, request.width, request.height, overlap)
        result = ProcessingResult()
        for batch in range(request.n_iter):
            done = []
            for index, tile in enumerate(tiles):
                if job.control.interrupted:
                    break
                crop = image.crop((tile.left, tile.top, tile.left + request.width, tile.top + request.height))
                tile_request = updated(
                    request,
                    init_image=crop,
                    seed=request.seed + batch + index,
                    n_iter=1,
                    batch_size=1,
                    save_images=False,
                    save_grid=False,
                )
                done.append(job.process(tile_request))
            if len(done) < len(tiles):
                break
            combined = combine_tiles(image.size, tiles, [tile_result.images[0] for tile_result in done], overlap)
            self.record(job, result, combined, done[0], request, upscaler, overlap)
        result.interrupted = job.control.interrupted
        return result

    def upscaled(self, job: ScriptJob, image: Image.Image, upscaler: str, scale: float) -> Image.Image:
        if upscaler == "None":
            return image
        size = (int(image.width * scale), int(image.height * scale))
        if job.context.postprocessor is None:
            return image.resize(size, Image.Resampling.LANCZOS if upscaler == "Lanczos" else Image.Resampling.NEAREST)
        return job.context.postprocessor.upscale(image, upscaler, size)

    def record(
        self,
        job: ScriptJob,
        result: ProcessingResult,
        image: Image.Image,
        first: ProcessingResult,
        request: Img2ImgRequest,
        upscaler: str,
        overlap: int,
    ) -> None:
        text = add_parameters(first.infotexts[0], {"SD upscale overlap": overlap, "SD upscale upscaler": upscaler})
        result.images.append(image)
        result.infotexts.append(text)
        for name in ("seeds", "subseeds", "prompts", "negative_prompts"):
            getattr(result, name).append(getattr(first, name)[0])
        if request.save_images and job.context.options.samples_save:
            result.saved_paths.append(job.save_sample(image, text, request, first.seeds[0]))
