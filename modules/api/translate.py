"""A1111 request bodies -> Easel's typed requests. Unsupported fields are listed, never silently pretended.

``override_settings`` become fields of the one request (checkpoint, clip_skip, saving); the application's
options are never changed by a generation request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from modules.api.errors import BadInputError
from modules.api.images import ImageLimits, decode_image
from modules.api.models import GenerationBody, Img2ImgBody, Txt2ImgBody
from modules.extension_settings import ExtensionSettings, infotext_overrides
from modules.models.errors import CheckpointNotFoundError
from modules.models.families import ModelFamily
from modules.models.registry import CheckpointRegistry
from modules.options import SAMPLER_OPTION_NAMES, Options
from modules.processing.infotext import infotext_to_request_fields, parse_infotext
from modules.processing.requests import GenerationRequest, Img2ImgRequest, MaskedContent, ResizeMode, Txt2ImgRequest
from modules.samplers import AUTOMATIC, SamplerError, SamplerSupport, resolve

logger = logging.getLogger(__name__)

DEFAULT_SAMPLER = "Euler"  # A1111's API default (sampler_index)

# override_settings values that ask for nothing.
NEUTRAL_OVERRIDES: Mapping[str, tuple[Any, ...]] = {
    "sd_vae": ("", None),
    "sd_model_checkpoint": ("", None),
}
# Fields that are unsupported when they differ from these values (A1111's "off" values).
NEUTRAL_VALUES: Mapping[str, tuple[Any, ...]] = {
    "restore_faces": (None, False),
    "tiling": (None, False),
    "s_min_uncond": (None, 0, 0.0),
    "refiner_checkpoint": (None, "", "None"),
    "refiner_switch_at": (None,),
    "styles": (None, []),
    "enable_hr": (False,),
    "image_cfg_scale": (None,),
    "initial_noise_multiplier": (None,),
    "latent_mask": (None, ""),
    "firstpass_image": (None, ""),
}


@dataclass(frozen=True)
class TranslationContext:
    """What translation reads: the options (defaults), the registry (checkpoint names), image limits."""

    options: Options
    registry: CheckpointRegistry
    limits: ImageLimits = field(default_factory=ImageLimits)
    default_checkpoint: str | None = None
    support: SamplerSupport | None = None  # the samplers of the backend a request gets by default
    supports: Mapping[str, SamplerSupport] = field(default_factory=dict)  # every backend's, by name
    extension_settings: ExtensionSettings | None = None  # settings extensions added (override_settings may set them)
    # the model family of a checkpoint title (None: the one a request without a choice gets); None when unknown
    family_of: Callable[[str | None], ModelFamily | None] | None = None

    def support_for(self, backend: str | None) -> SamplerSupport | None:
        """The samplers of ``backend`` (None: the default one); an unknown name is a 400."""
        if not backend:
            return self.support
        if self.supports and backend not in self.supports:
            raise BadInputError(f"unknown sampler backend {backend!r}; choose one of: {', '.join(self.supports)}")
        return self.supports.get(backend, self.support)

    def default_sampler(self, checkpoint: str | None) -> str:
        """The sampler of a request that names none: the first of the checkpoint's family's own samplers (FLUX.1 and
        SD 3.5: Euler; Kandinsky 2.2 and DeepFloyd IF: DDIM), else A1111's API default, Euler."""
        model_family = self.family_of(checkpoint) if self.family_of is not None else None
        return model_family.samplers[0] if model_family is not None and model_family.samplers else DEFAULT_SAMPLER

    def checkpoint_for_request(self) -> str | None:
        """The setting's checkpoint (not whatever an earlier override left loaded); None when it is not found."""
        if not self.default_checkpoint:
            return None
        try:
            return self.registry.find(self.default_checkpoint).title
        except CheckpointNotFoundError:
            logger.warning("default checkpoint not found name=%s; using the loaded one", self.default_checkpoint)
            return None


@dataclass
class Translation:
    request: Txt2ImgRequest | Img2ImgRequest
    unsupported: list[str]
    sampler_name: str
    scheduler: str


# Body fields passed on as they are when the typed request has a field of that name (hires fix, face restore).
PASSED_FIELDS: tuple[str, ...] = (
    "styles",
    "restore_faces",
    "tiling",
    "enable_hr",
    "hr_scale",
    "hr_resize_x",
    "hr_resize_y",
    "hr_upscaler",
    "hr_second_pass_steps",
    "hr_sampler_name",
    "hr_scheduler",
    "hr_prompt",
    "hr_negative_prompt",
    "hr_checkpoint_name",
    "initial_noise_multiplier",
    "subseed_strength",
    "seed_resize_from_w",
    "seed_resize_from_h",
    "eta",
    "s_churn",
    "s_tmin",
    "s_tmax",
    "s_noise",
    "image_cfg_scale",
    "refiner_checkpoint",
    "refiner_switch_at",
)
HIRES_PREFIX = "hr_"


def passed_fields(body: GenerationBody, request_class: type[GenerationRequest]) -> dict[str, Any]:
    """The fields the request model supports, given and not None; hires ones only when hires fix is on."""
    supported = request_class.model_fields
    hires_on = bool(getattr(body, "enable_hr", False))
    return {
        name: getattr(body, name)
        for name in PASSED_FIELDS
        if name in supported
        and name in type(body).model_fields
        and getattr(body, name) is not None
        and (hires_on or not name.startswith(HIRES_PREFIX))
    }


def unsupported_fields(body: GenerationBody, request_class: type[GenerationRequest]) -> list[str]:
    """The given fields Easel does not act on (reported in the response's ``info``)."""
    found = [
        name
        for name, neutral in NEUTRAL_VALUES.items()
        if name in type(body).model_fields
        and name not in request_class.model_fields
        and getattr(body, name) not in neutral
    ]
    if isinstance(body, Img2ImgBody):
        if body.resize_mode == 3:
            found.append("resize_mode 3 (latent upscale; resized as mode 0)")
        if body.mask_blur is None and body.mask_blur_x != body.mask_blur_y:
            found.append("mask_blur_x/mask_blur_y (one blur radius, mask_blur_x, is used)")
    return found


def apply_infotext(body: GenerationBody) -> tuple[GenerationBody, dict[str, Any]]:
    """A1111's ``infotext`` field: its parameters fill the fields the body does not set itself."""
    if not body.infotext:
        return body, {}
    parsed = infotext_to_request_fields(parse_infotext(body.infotext))
    given = body.model_fields_set
    updates = {name: value for name, value in parsed.items() if name in type(body).model_fields and name not in given}
    extra = {name: value for name, value in parsed.items() if name not in type(body).model_fields}
    return body.model_copy(update=updates), extra


def apply_overrides(
    fields: dict[str, Any],
    overrides: Mapping[str, Any],
    options: Options,
    registry: CheckpointRegistry,
    request_fields: Mapping[str, Any] | None = None,
    extension_settings: ExtensionSettings | None = None,
) -> list[str]:
    """Map override_settings onto request fields; returns the keys that had no effect (unsupported). An extension's
    setting goes into the request's ``extension_settings`` (a bad value is a 400)."""
    unsupported = []
    request_fields = request_fields or {}
    for key, value in overrides.items():
        if key in NEUTRAL_OVERRIDES and value in NEUTRAL_OVERRIDES[key]:
            continue
        if extension_settings is not None and key in extension_settings:
            try:
                fields.setdefault("extension_settings", {}).update(extension_settings.converted({key: value}))
            except ValueError as error:
                raise BadInputError(f"override_settings: {error}") from error
            continue
        if key == "sd_model_checkpoint":
            fields["checkpoint"] = registry.find(str(value)).title  # CheckpointNotFoundError -> 404
        elif key == "sd_vae":
            fields["sd_vae"] = str(value)  # applied for this request's passes; the setting does not change
        elif key == "CLIP_stop_at_last_layers":
            fields["clip_skip"] = value
        elif key == "samples_save":
            fields["save_images"] = fields["save_images"] and bool(value)
        elif key == "grid_save":
            fields["save_grid"] = fields["save_grid"] and bool(value)
        elif key == "initial_noise_multiplier" and key in request_fields:
            fields[key] = value
        elif key == "sd_sampling_backend":
            fields["sampling_backend"] = str(value) or None
        elif key in SAMPLER_OPTION_NAMES:
            fields.setdefault("override_settings", {})[key] = value
        elif key in type(options).model_fields and options.model_dump().get(key) == value:
            continue  # the same value as the current setting: nothing to override
        else:
            unsupported.append(f"override_settings.{key}")
    return unsupported


def sampler_of(
    body: GenerationBody, support: SamplerSupport | None = None, default: str = DEFAULT_SAMPLER
) -> tuple[str, str]:
    """(sampler, schedule) as the client asked, checked now (against the backend's samplers) so that a bad name is a
    400 before queueing. A body that names no sampler (no ``sampler_name``, ``sampler_index`` not given) gets
    ``default``."""
    index = body.sampler_index if "sampler_index" in body.model_fields_set else ""
    name = body.sampler_name or index or default
    scheduler = body.scheduler or AUTOMATIC
    try:
        resolve(name, scheduler, support)
    except SamplerError as error:
        raise BadInputError(str(error)) from error
    return name, scheduler


def common_fields(body: GenerationBody, options: Options) -> dict[str, Any]:
    save = body.save_images and not body.do_not_save_samples
    return {
        "prompt": body.prompt or "",
        "negative_prompt": body.negative_prompt or "",
        "steps": body.steps,
        "cfg_scale": body.cfg_scale,
        "width": body.width,
        "height": body.height,
        "seed": body.seed,
        "subseed": body.subseed,
        "batch_size": body.batch_size,
        "n_iter": body.n_iter,
        "clip_skip": options.CLIP_stop_at_last_layers,
        "save_images": save,
        "save_grid": save and not body.do_not_save_grid,
    }


def build_fields(
    body: GenerationBody, context: TranslationContext, request_class: type[GenerationRequest]
) -> tuple[dict[str, Any], list[str], str, str]:
    body, infotext_extra = apply_infotext(body)
    overrides = dict(body.override_settings or {})
    backend = str(overrides.get("sd_sampling_backend") or infotext_extra.get("sampling_backend") or "") or None
    support = context.support_for(backend)
    fields = common_fields(body, context.options)
    fields["checkpoint"] = context.checkpoint_for_request()
    fields.update(passed_fields(body, request_class))
    if isinstance(body, Txt2ImgBody) and body.enable_hr and body.denoising_strength is not None:
        fields["denoising_strength"] = body.denoising_strength
    if backend is not None:
        fields["sampling_backend"] = backend
    for key, value in dict(infotext_extra.get("override_settings") or {}).items():
        overrides.setdefault(key, value)
    if "clip_skip" in infotext_extra:
        overrides.setdefault("CLIP_stop_at_last_layers", infotext_extra["clip_skip"])
    if body.infotext and context.extension_settings is not None:
        pasted = infotext_overrides(context.extension_settings, parse_infotext(body.infotext))
        for key, value in pasted.items():
            overrides.setdefault(key, value)
    unsupported = unsupported_fields(body, request_class) + apply_overrides(
        fields, overrides, context.options, context.registry, request_class.model_fields, context.extension_settings
    )
    fields["extra"] = {"unsupported_fields": unsupported} if unsupported else {}
    # after the overrides: the sampler a body leaves out follows the family of the checkpoint it runs on
    sampler_name, scheduler = sampler_of(body, support, context.default_sampler(fields["checkpoint"]))
    fields.update(sampler_name=sampler_name, scheduler=scheduler)
    return fields, unsupported, sampler_name, scheduler


def translate_txt2img(body: Txt2ImgBody, context: TranslationContext) -> Translation:
    """A txt2img body -> a Txt2ImgRequest; raises BadInputError / ValidationError (400) on bad values."""
    fields, unsupported, sampler_name, scheduler = build_fields(body, context, Txt2ImgRequest)
    return Translation(Txt2ImgRequest(**fields), unsupported, sampler_name, scheduler)


def decode_inputs(body: Img2ImgBody, limits: ImageLimits) -> tuple[list[Image.Image], Image.Image | None]:
    """The init images (one per batch slot when several, as A1111) and the mask."""
    if not body.init_images:
        raise BadInputError("init_images: give at least one base64 image")
    batch_size = body.batch_size or 1
    if len(body.init_images) > batch_size:
        raise BadInputError(f"bad number of images passed: {len(body.init_images)}; expecting {batch_size} or less")
    init_images = [decode_image(data, limits, f"init_images[{index}]") for index, data in enumerate(body.init_images)]
    mask = decode_image(body.mask, limits, "mask") if body.mask else None
    return init_images, mask


def enum_value(enum: Callable[[int], Any], value: int, field_name: str, choices: str) -> Any:
    try:
        return enum(value)
    except ValueError as error:
        raise BadInputError(f"{field_name}: must be one of {choices} (got {value})") from error


def translate_img2img(body: Img2ImgBody, context: TranslationContext) -> Translation:
    """An img2img body (init image, optional mask) -> an Img2ImgRequest; images are decoded here."""
    fields, unsupported, sampler_name, scheduler = build_fields(body, context, Img2ImgRequest)
    init_images, mask = decode_inputs(body, context.limits)
    resize = 0 if body.resize_mode == 3 else body.resize_mode
    fields.update(
        init_image=init_images[0],
        more_init_images=init_images[1:],
        mask=mask,
        resize_mode=enum_value(ResizeMode, resize, "resize_mode", "0, 1, 2, 3"),
        denoising_strength=0.75 if body.denoising_strength is None else body.denoising_strength,
        mask_blur=body.mask_blur if body.mask_blur is not None else body.mask_blur_x,
        inpainting_fill=enum_value(MaskedContent, body.inpainting_fill, "inpainting_fill", "0, 1, 2, 3"),
        inpaint_full_res=body.inpaint_full_res,
        inpaint_full_res_padding=body.inpaint_full_res_padding,
        inpainting_mask_invert=bool(body.inpainting_mask_invert),
    )
    return Translation(Img2ImgRequest(**fields), unsupported, sampler_name, scheduler)


def request_parameters(body: GenerationBody) -> dict[str, Any]:
    """The response's ``parameters``: the request with A1111's names (init images only when asked)."""
    parameters = body.model_dump()
    if isinstance(body, Img2ImgBody) and not body.include_init_images:
        parameters["init_images"] = None
        parameters["mask"] = None
    return parameters
