"""``/sdapi/v1/extra-single-image`` and ``extra-batch-images`` through Easel's Extras (the Extras tab's operation).

Model upscalers, the second upscaler and GFPGAN / CodeFormer work as in the UI. The work runs as a queue task,
so it never overlaps a generation. Results are not saved (A1111's API passes ``save_output=False``).
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Sequence

from PIL import Image
from pydantic import ValidationError

from modules.api.errors import ApiError, BadInputError, validation_text
from modules.api.images import ImageLimits, decode_image
from modules.api.models import (
    ExtrasBatchImagesBody,
    ExtrasBatchImagesResponse,
    ExtrasBody,
    ExtrasSingleImageBody,
    ExtrasSingleImageResponse,
)
from modules.application import Application
from modules.postprocess.upscalers import UpscalerNotFoundError, UpscalerUnsupportedError
from modules.processing.extras import (
    NO_UPSCALER,
    ExtrasError,
    ExtrasOutput,
    ExtrasRequest,
    ExtrasResult,
    extras_pnginfo,
    plan_upscale,
    save_keywords,
    sources_from_images,
)

logger = logging.getLogger(__name__)

MAX_UPSCALE_SIDE = 8192


def extras_request(body: ExtrasBody) -> ExtrasRequest:
    """A1111's API names (``upscaler_1``, ...) -> the Extras request (its ranges checked: a 400 naming the field)."""
    return ExtrasRequest(
        resize_mode=body.resize_mode,
        upscaling_resize=body.upscaling_resize,
        upscaling_resize_w=body.upscaling_resize_w,
        upscaling_resize_h=body.upscaling_resize_h,
        upscaling_crop=body.upscaling_crop,
        extras_upscaler_1=body.upscaler_1,
        extras_upscaler_2=body.upscaler_2,
        extras_upscaler_2_visibility=body.extras_upscaler_2_visibility,
        gfpgan_visibility=body.gfpgan_visibility,
        codeformer_visibility=body.codeformer_visibility,
        codeformer_weight=body.codeformer_weight,
    )


def check_output_size(images: Sequence[Image.Image], request: ExtrasRequest) -> None:
    """Refuse, before any work, an upscale whose result would be over MAX_UPSCALE_SIDE pixels a side."""
    if request.extras_upscaler_1 == NO_UPSCALER:
        return
    for image in images:
        width, height = plan_upscale(image.size, request).size
        if width > MAX_UPSCALE_SIDE or height > MAX_UPSCALE_SIDE:
            raise BadInputError(f"upscaled size {width}x{height} is over {MAX_UPSCALE_SIDE} pixels per side")


def encode_output(output: ExtrasOutput) -> str:
    """Base64 PNG with the source's "parameters" and the extras chunks, as the Extras tab saves them."""
    assert output.image is not None, "the API keeps result images"
    buffer = io.BytesIO()
    output.image.save(buffer, format="PNG", **save_keywords("PNG", extras_pnginfo(output)))
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def html_info(result: ExtrasResult) -> str:
    """The last result's infotext and any notes, as HTML (A1111's ``html_info``)."""
    lines = [result.outputs[-1].infotext] if result.outputs else []
    for output in result.outputs:
        lines.extend(note for note in output.notes if note not in lines)
    lines.extend(result.skipped)
    return "<br>".join(html.escape(line) for line in lines if line)


class ExtrasRoutes:
    """Runs API extras requests with the application's postprocessor, one at a time in the job queue."""

    def __init__(self, application: Application) -> None:
        self.application = application
        self.extras = application.extras()

    def run(self, images: Sequence[Image.Image], body: ExtrasBody) -> ExtrasResult:
        try:
            request = extras_request(body)
        except ValidationError as error:
            raise BadInputError(validation_text(error)) from error
        check_output_size(images, request)
        sources = sources_from_images(list(images))
        try:
            return self.application.service.run_task(
                lambda: self.extras.run(request, sources, save=False), kind="extras"
            )
        except (ExtrasError, UpscalerNotFoundError, UpscalerUnsupportedError) as error:
            raise BadInputError(str(error)) from error
        except FileNotFoundError as error:  # face restore or upscaler weights absent (and not downloadable)
            raise ApiError(str(error), status_code=404) from error

    def single(self, body: ExtrasSingleImageBody, limits: ImageLimits) -> ExtrasSingleImageResponse:
        image = decode_image(body.image, limits, "image")
        result = self.run([image], body)
        return ExtrasSingleImageResponse(html_info=html_info(result), image=encode_output(result.outputs[0]))

    def batch(self, body: ExtrasBatchImagesBody, limits: ImageLimits) -> ExtrasBatchImagesResponse:
        images = [decode_image(item.data, limits, f"imageList[{index}]") for index, item in enumerate(body.imageList)]
        result = self.run(images, body)
        return ExtrasBatchImagesResponse(
            html_info=html_info(result), images=[encode_output(output) for output in result.outputs]
        )
