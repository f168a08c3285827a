"""The Extras operation (A1111's postprocessing): upscale "by" a factor or "to" a size with one upscaler, blend a
second one in, then GFPGAN and CodeFormer; for one image, several images, or every image of a folder.

Results keep the source's infotext and add the extras parameters with A1111's keys ("Postprocess upscale by",
"Postprocess upscaler", "GFPGAN visibility", ...). As A1111 writes them, a PNG holds the source infotext in its
"parameters" chunk, unchanged, and the extras parameters in "postprocessing" and "extras" chunks. JPEG and WEBP
carry one text only (EXIF UserComment): the source infotext with the extras keys appended to its parameter line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, PngImagePlugin, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from modules.options import Options
from modules.postprocess.service import Postprocessor
from modules.processing import saving
from modules.processing.images import centred_paste, to_rgb
from modules.processing.infotext import (
    PARAMETER_PATTERN,
    build_user_comment_exif,
    format_number,
    quote_value,
    read_infotext,
)

logger = logging.getLogger(__name__)

RESIZE_BY = 0  # A1111's upscale_mode / resize_mode: 0 "Scale by", 1 "Scale to"
RESIZE_TO = 1
NO_UPSCALER = "None"
EXTRAS_TEXT_CHUNKS = ("postprocessing", "extras")  # A1111's PNG chunks for the extras parameters


class ExtrasError(ValueError):
    """Something missing or wrong in what the user asked of Extras; the message says what to do."""


class ExtrasRequest(BaseModel):
    """Extras settings, with the field names of A1111's /sdapi/v1/extra-single-image (and its defaults)."""

    model_config = ConfigDict(extra="forbid")

    resize_mode: int = Field(RESIZE_BY, ge=0, le=1, description="0: scale by upscaling_resize; 1: scale to w x h")
    upscaling_resize: float = Field(2.0, gt=0.0, le=8.0, description="Scale by this factor")
    max_side_length: int = Field(0, ge=0, le=16384, description="Scale by: fit the longer side into this (0: off)")
    upscaling_resize_w: int = Field(512, ge=1, le=16384, description="Scale to this width")
    upscaling_resize_h: int = Field(512, ge=1, le=16384, description="Scale to this height")
    upscaling_crop: bool = Field(True, description="Scale to: crop to fit the exact size")
    extras_upscaler_1: str = Field(NO_UPSCALER, description="Upscaler 1 ('None': no upscaling)")
    extras_upscaler_2: str = Field(NO_UPSCALER, description="Upscaler 2, blended over upscaler 1")
    extras_upscaler_2_visibility: float = Field(0.0, ge=0.0, le=1.0, description="Upscaler 2 visibility")
    gfpgan_visibility: float = Field(0.0, ge=0.0, le=1.0, description="GFPGAN visibility (0: off)")
    codeformer_visibility: float = Field(0.0, ge=0.0, le=1.0, description="CodeFormer visibility (0: off)")
    codeformer_weight: float = Field(0.0, ge=0.0, le=1.0, description="CodeFormer weight (0: maximum effect)")


@dataclass
class ExtrasSource:
    """One input: an image in memory, or a file opened when its turn comes; ``name`` keeps the file's stem."""

    image: Image.Image | None = None
    path: Path | None = None
    name: str | None = None

    def open(self) -> tuple[Image.Image, str | None]:
        """The image and its infotext (read before any conversion drops it)."""
        if self.image is not None:
            return self.image, read_infotext(self.image)
        if self.path is None:
            raise ExtrasError("an Extras input has neither an image nor a file")
        with Image.open(self.path) as opened:
            opened.load()
            return opened.copy(), read_infotext(opened)


@dataclass
class ExtrasOutput:
    """One result: the image (None when results are not kept), the source infotext and the extras parameters."""

    image: Image.Image | None
    name: str | None
    parameters: str | None
    postprocessing: str
    path: Path | None = None
    notes: tuple[str, ...] = ()

    @property
    def infotext(self) -> str:
        return combined_infotext(self.parameters, self.postprocessing)


@dataclass
class ExtrasResult:
    outputs: list[ExtrasOutput] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def images(self) -> list[Image.Image]:
        return [output.image for output in self.outputs if output.image is not None]

    @property
    def saved_paths(self) -> list[Path]:
        return [output.path for output in self.outputs if output.path is not None]


# --- inputs --------------------------------------------------------------------------------------------------


def sources_from_images(images: Sequence[Image.Image | Path | str]) -> list[ExtrasSource]:
    """Sources for uploads: images in memory (no name) or files (named by their stem)."""
    sources = []
    for item in images:
        if isinstance(item, Image.Image):
            sources.append(ExtrasSource(image=item))
        else:
            path = Path(item)
            sources.append(ExtrasSource(path=path, name=path.stem))
    return sources


def sources_from_folder(folder: Path) -> list[ExtrasSource]:
    """Every file of ``folder`` (not its subfolders), by name, as A1111's batch from directory lists them."""
    if not str(folder).strip() or not folder.is_dir():
        raise ExtrasError(f"input directory not found: {folder}; enter a folder that holds the images")
    return [ExtrasSource(path=path, name=path.stem) for path in sorted(folder.iterdir()) if path.is_file()]


# --- sizes and parameters ------------------------------------------------------------------------------------


def limit_longer_side(width: float, height: float, limit: int) -> tuple[int, int]:
    """A1111's limit_size_by_one_dimention: shrink so that the longer side is at most ``limit``."""
    if height > width and height > limit:
        return int(limit * width // height), int(limit)
    if width > limit:
        return int(limit), int(limit * height // width)
    return int(width), int(height)


@dataclass(frozen=True)
class UpscalePlan:
    """The size to upscale to, the crop size (or None) and the infotext keys describing them."""

    size: tuple[int, int]
    crop: tuple[int, int] | None
    parameters: dict[str, object]


def plan_upscale(image_size: tuple[int, int], request: ExtrasRequest) -> UpscalePlan:
    """A1111's rules: "to" scales by the larger ratio (then crops to fit when asked); "by" may be capped by the
    max side length. Sizes are rounded, not floored to multiples of 8 as A1111's upscaler does, so that "scale to"
    with crop gives the exact size without black edges (Extras has no latent-size constraint)."""
    width, height = image_size
    if request.resize_mode == RESIZE_TO:
        target = (request.upscaling_resize_w, request.upscaling_resize_h)
        scale = max(target[0] / width, target[1] / height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        parameters: dict[str, object] = {"Postprocess upscale to": f"{target[0]}x{target[1]}"}
        if request.upscaling_crop:
            size = (max(size[0], target[0]), max(size[1], target[1]))
            parameters["Postprocess crop to"] = f"{target[0]}x{target[1]}"
            return UpscalePlan(size, target, parameters)
        return UpscalePlan(size, None, parameters)
    scale = request.upscaling_resize
    parameters = {"Postprocess upscale by": format_number(scale)}
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if request.max_side_length and max(width, height) * scale > request.max_side_length:
        size = limit_longer_side(width * scale, height * scale, request.max_side_length)
        parameters["Max side length"] = request.max_side_length
    return UpscalePlan(size, None, parameters)


def extras_parameters_text(parameters: Mapping[str, object]) -> str:
    """``Key: value, ...`` as A1111 joins pp.info (a key equal to its value is written alone)."""
    return ", ".join(
        key if key == value else f"{key}: {quote_value(value)}"
        for key, value in parameters.items()
        if value is not None
    )


def combined_infotext(parameters: str | None, postprocessing: str) -> str:
    """One text holding both: the extras keys appended to the source's parameter line (or a line of their own)."""
    if not parameters or not parameters.strip():
        return postprocessing
    if not postprocessing:
        return parameters
    source = parameters.rstrip()
    last_line = source.rsplit("\n", 1)[-1]
    if len(PARAMETER_PATTERN.findall(last_line)) >= 3:
        return f"{source}, {postprocessing}"
    return f"{source}\n{postprocessing}"


# --- the operation -------------------------------------------------------------------------------------------


class Extras:
    """Runs Extras with the application's postprocessor and settings; saves where the settings say."""

    def __init__(
        self,
        postprocessor: Postprocessor,
        options: Options,
        data_dir: Path,
        listeners: saving.SaveListeners | None = None,
    ) -> None:
        self.postprocessor = postprocessor
        self.options = options
        self.data_dir = data_dir
        self.listeners = listeners or saving.SaveListeners()  # around each save, as A1111's images.save_image

    def process_image(self, image: Image.Image, request: ExtrasRequest) -> tuple[Image.Image, dict[str, object]]:
        """Upscale (and blend upscaler 2), then GFPGAN, then CodeFormer (A1111's order); returns the image and keys."""
        parameters: dict[str, object] = {}
        image = self.upscale(image, request, parameters)
        if request.gfpgan_visibility > 0:
            image = self.postprocessor.restore_faces(image, "GFPGAN", visibility=request.gfpgan_visibility)
            parameters["GFPGAN visibility"] = round(request.gfpgan_visibility, 3)
        if request.codeformer_visibility > 0:
            image = self.postprocessor.restore_faces(
                image,
                "CodeFormer",
                codeformer_weight=request.codeformer_weight,
                visibility=request.codeformer_visibility,
            )
            parameters["CodeFormer visibility"] = round(request.codeformer_visibility, 3)
            parameters["CodeFormer weight"] = round(request.codeformer_weight, 3)
        return image, parameters

    def upscale(self, image: Image.Image, request: ExtrasRequest, parameters: dict[str, object]) -> Image.Image:
        if request.extras_upscaler_1 == NO_UPSCALER:
            return image
        plan = plan_upscale(image.size, request)
        upscaled = self.upscale_with(image, request.extras_upscaler_1, plan)
        parameters.update(plan.parameters)
        parameters["Postprocess upscaler"] = request.extras_upscaler_1
        if request.extras_upscaler_2 != NO_UPSCALER and request.extras_upscaler_2_visibility > 0:
            second = self.upscale_with(image, request.extras_upscaler_2, plan)
            upscaled = Image.blend(upscaled, second.convert(upscaled.mode), request.extras_upscaler_2_visibility)
            parameters["Postprocess upscaler 2"] = request.extras_upscaler_2
        return upscaled

    def upscale_with(self, image: Image.Image, upscaler: str, plan: UpscalePlan) -> Image.Image:
        upscaled = self.postprocessor.upscale(image, upscaler, plan.size)
        if plan.crop is None:
            return upscaled
        return centred_paste(upscaled, *plan.crop)[0]  # A1111 pastes the upscaled image centred on the crop size

    def run(
        self,
        request: ExtrasRequest,
        sources: Iterable[ExtrasSource],
        output_dir: Path | None = None,
        save: bool = True,
        keep_images: bool = True,
    ) -> ExtrasResult:
        """Process every source in turn; an unreadable file is skipped and named in ``skipped``."""
        result = ExtrasResult()
        folder = self.output_folder(output_dir)
        for source in sources:
            try:
                image, parameters = source.open()
            except (OSError, UnidentifiedImageError) as error:
                logger.warning("extras input skipped path=%s error=%s", source.path, error)
                result.skipped.append(f"{source.path}: not a readable image")
                continue
            converted = to_rgb(image)
            processed, keys = self.process_image(converted.image, request)
            if processed is image:
                processed = processed.copy()  # nothing changed it: never write texts onto the caller's image
            output = ExtrasOutput(
                image=processed if keep_images else None,
                name=source.name,
                parameters=parameters,
                postprocessing=extras_parameters_text(keys),
                notes=converted.notes,
            )
            if output.image is not None:
                attach_infotext(output.image, output)
            if save:
                output.path = self.save(processed, output, folder)
            result.outputs.append(output)
            logger.info("extras done name=%s size=%dx%d", source.name or "-", processed.width, processed.height)
        return result

    def output_folder(self, output_dir: Path | None) -> Path:
        """The batch output folder when given (relative to the data folder), else the extras outputs folder."""
        if output_dir is not None and str(output_dir).strip():
            return output_dir if output_dir.is_absolute() else self.data_dir / output_dir
        return self.data_dir / (self.options.outdir_samples or self.options.outdir_extras_samples)

    def save(self, image: Image.Image, output: ExtrasOutput, folder: Path) -> Path:
        """``NNNNN.ext``, or the source's name for named inputs (``name-NNNN.ext`` when taken: never overwrite).

        No date subfolder, as A1111 saves extras. Written here rather than with saving.save_image, which writes
        one text chunk; the extras need the source's "parameters" plus their own chunks. The save listeners
        (A1111's on_before_image_saved / on_image_saved, with no p) see it as A1111's save_image shows them: a
        before listener may change the image, the file name and the texts."""
        extension = self.options.samples_format.lower().lstrip(".")
        format_name = saving.pillow_format(extension)
        path = folder / f"{output.name}.{extension}" if output.name else None
        if path is None or path.exists():
            path = saving.free_file_name(folder, output.name or "", "", extension)
        event = saving.ImageSaveEvent(image, None, str(path), extras_pnginfo(output))
        for listener in self.listeners.before:
            listener(event)
        path = Path(event.filename)
        prepared = saving.prepare_for_format(event.image, format_name)
        options = save_keywords(format_name, event.pnginfo)
        saving.write_file_atomic(path, lambda file: prepared.save(file, format=format_name, **options))
        logger.info("extras image saved path=%s", path)
        for listener in self.listeners.after:
            listener(event)
        return path


def extras_pnginfo(output: ExtrasOutput) -> dict[str, str]:
    """The texts an Extras result is saved with: the source's "parameters" and the extras chunks."""
    texts = {"parameters": output.parameters} if output.parameters else {}
    if output.postprocessing:
        texts.update(dict.fromkeys(EXTRAS_TEXT_CHUNKS, output.postprocessing))
    return texts


def save_keywords(format_name: str, pnginfo: Mapping[str, object]) -> dict[str, object]:
    """PNG: every text as a chunk ("parameters", the extras chunks, any a listener added); JPEG/WEBP: the source
    infotext with the extras parameters, in EXIF."""
    if format_name != "PNG":
        parameters, postprocessing = pnginfo.get("parameters"), pnginfo.get(EXTRAS_TEXT_CHUNKS[0])
        text = combined_infotext(None if parameters is None else str(parameters), str(postprocessing or ""))
        return {"quality": saving.JPEG_QUALITY, "exif": build_user_comment_exif(text)}
    png_info = PngImagePlugin.PngInfo()
    for key, value in pnginfo.items():
        png_info.add_text(str(key), str(value))
    return {"pnginfo": png_info}


def attach_infotext(image: Image.Image, output: ExtrasOutput) -> None:
    """Put the texts on the image in memory too, so a PNG made from it (the gallery's) carries them."""
    if output.parameters:
        image.info["parameters"] = output.parameters
    if output.postprocessing:
        for chunk in EXTRAS_TEXT_CHUNKS:
            image.info[chunk] = output.postprocessing
