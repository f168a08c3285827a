"""The sd-webui-controlnet extension's routes (``/controlnet/*``, its paths and answer shapes), so its clients
(webuiapi, the Krita and Photoshop plug-ins, bots) work unchanged."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from modules.api.auth import BasicAuth
from modules.api.errors import ApiError
from modules.api.images import ImageLimits, decode_image, encode_png
from modules.application import Application
from modules.controlnet.annotators import AnnotatorRunner
from modules.controlnet.models import ControlNetLibrary
from modules.controlnet.preprocessors import (
    CONTROL_TYPES,
    PREPROCESSORS,
    PreprocessorError,
    control_type,
    find_preprocessor,
    run_preprocessor,
)

logger = logging.getLogger(__name__)

API_VERSION = 3  # the extension's external_code.get_api_version()


def library_of(application: Application) -> ControlNetLibrary:
    if application.controlnet is None:
        raise ApiError("ControlNet is not set up in this application", 503)
    return application.controlnet


def module_list(alias_names: bool) -> dict[str, Any]:
    names = [item.title if alias_names else item.name for item in PREPROCESSORS]
    details = {item.title if alias_names else item.name: item.details() for item in PREPROCESSORS}
    return {"module_list": names, "module_detail": details}


def detect_images(
    module: str,
    images: list[str],
    resolution: int,
    threshold_a: float,
    threshold_b: float,
    limits: ImageLimits,
    annotators: AnnotatorRunner | None = None,
) -> dict[str, Any]:
    """``POST /controlnet/detect``: each image through the preprocessor, as base64 PNGs."""
    try:
        preprocessor = find_preprocessor(module)
    except PreprocessorError as error:
        raise ApiError("Module not available", 422) from error
    if not images:
        raise ApiError("No image selected", 422)
    logger.info("controlnet detect module=%s images=%d", preprocessor.name, len(images))
    results = []
    for index, text in enumerate(images):
        image = decode_image(text, limits, f"controlnet_input_images[{index}]")
        try:
            detected = run_preprocessor(
                preprocessor.name, image, resolution, threshold_a, threshold_b, annotators=annotators
            )
            results.append(encode_png(detected))
        except PreprocessorError as error:
            raise ApiError(str(error), 422) from error
    return {"images": results, "info": "Success"}


class DetectBody(BaseModel):
    """The extension's ``/controlnet/detect`` fields (masks and low VRAM are accepted; the model-free
    preprocessors use neither)."""

    controlnet_module: str = "none"
    controlnet_input_images: list[str] = Field(default_factory=list)
    controlnet_images: list[str] = Field(default_factory=list, description="older name (webuiapi sends it)")
    controlnet_processor_res: int = -1
    controlnet_threshold_a: float = -1
    controlnet_threshold_b: float = -1
    controlnet_masks: list[str] = Field(default_factory=list)
    low_vram: bool = False


def controlnet_router(application: Application, auth: BasicAuth, limits: Callable[[], ImageLimits]) -> APIRouter:
    router = APIRouter(prefix="/controlnet", tags=["controlnet"], dependencies=[Depends(auth)])

    @router.get("/version")
    def version() -> dict[str, int]:
        return {"version": API_VERSION}

    @router.get("/model_list")
    def model_list(update: bool = True) -> dict[str, list[str]]:
        library = library_of(application)
        if update:
            library.refresh()
        return {"model_list": library.titles()}

    @router.get("/module_list")
    def modules(alias_names: bool = False) -> dict[str, Any]:
        return module_list(alias_names)

    @router.get("/control_types")
    def control_types() -> dict[str, Any]:
        titles = library_of(application).titles()
        return {"control_types": {name: control_type(name, titles) for name in CONTROL_TYPES}}

    @router.get("/settings")
    def settings() -> dict[str, int]:
        return {"control_net_unit_count": application.options.control_net_unit_count}

    @router.post("/detect")
    def detect(body: DetectBody) -> dict[str, Any]:
        return detect_images(
            body.controlnet_module,
            body.controlnet_input_images or body.controlnet_images,
            body.controlnet_processor_res,
            body.controlnet_threshold_a,
            body.controlnet_threshold_b,
            limits(),
            library_of(application).annotators,
        )

    return router
