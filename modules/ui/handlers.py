"""What the UI's buttons do, as plain functions of values (no gradio here, so tests call them directly)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import wait
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from PIL import Image, ImageChops, ImageEnhance, ImageFilter

from modules.generation import GenerationService, QueueError
from modules.processing.infotext import infotext_to_request_fields, parse_infotext, settings_from_pairs
from modules.processing.inputs import outpaint_request
from modules.processing.processing import ProcessingResult
from modules.processing.requests import Img2ImgRequest, MaskedContent, ResizeMode, Txt2ImgRequest
from modules.samplers import SamplerError, split_sampler_name
from modules.scripts.runner import BoundScripts
from modules.ui.messages import InputError, error_message, progress_text

logger = logging.getLogger(__name__)

# Choice labels as A1111 shows them; the position is the request's enum value.
RESIZE_MODES: tuple[str, ...] = ("Just resize", "Crop and resize", "Resize and fill")
MASKED_CONTENT: tuple[str, ...] = ("fill", "original", "latent noise", "latent nothing")
INPAINT_AREAS: tuple[str, ...] = ("Whole picture", "Only masked")
MASK_MODES: tuple[str, ...] = ("Inpaint masked", "Inpaint not masked")
# The inner tabs of the img2img and inpaint tabs (A1111's img2img modes, split over Easel's two tabs).
IMG2IMG_MODE, SKETCH_MODE, BATCH_MODE = "img2img", "Sketch", "Batch"
INPAINT_MODE, INPAINT_SKETCH_MODE = "Inpaint", "Inpaint sketch"

COMMON_FIELDS: tuple[str, ...] = (
    "checkpoint",  # the top bar's choice (None: whatever is loaded)
    "prompt",
    "negative_prompt",
    "styles",
    "steps",
    "sampler_name",
    "scheduler",
    "cfg_scale",
    "width",
    "height",
    "seed",
    "batch_size",
    "n_iter",
    "clip_skip",
    "restore_faces",
    "sampling_backend",
    "subseed",
    "subseed_strength",
    "seed_resize_from_w",
    "seed_resize_from_h",
    "override_settings",  # A1111's "Override settings" entries ("ENSD: 31337"), for this job only
)
# The "Extra" seed controls: used only while the Extra box is ticked (A1111's seed_checkbox).
EXTRA_SEED_FIELDS: tuple[str, ...] = ("subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h")
# txt2img's hires fix controls (A1111's labels in the comments of txt2img.py); "Use same ..." choices mean None.
HIRES_FIELDS: tuple[str, ...] = (
    "enable_hr",
    "hr_upscaler",
    "hr_second_pass_steps",
    "denoising_strength",
    "hr_scale",
    "hr_resize_x",
    "hr_resize_y",
    "hr_checkpoint_name",
    "hr_sampler_name",
    "hr_scheduler",
    "hr_prompt",
    "hr_negative_prompt",
)
USE_SAME_CHECKPOINT = "Use same checkpoint"
USE_SAME_SAMPLER = "Use same sampler"
USE_SAME_SCHEDULER = "Use same scheduler"
SAME_CHOICES = MappingProxyType(
    {
        "hr_checkpoint_name": USE_SAME_CHECKPOINT,
        "hr_sampler_name": USE_SAME_SAMPLER,
        "hr_scheduler": USE_SAME_SCHEDULER,
    }
)
IMG2IMG_FIELDS: tuple[str, ...] = (*COMMON_FIELDS, "denoising_strength")
REFINER_FIELDS: tuple[str, ...] = ("refiner_enabled", "refiner_checkpoint", "refiner_switch_at")
INPAINT_FIELDS: tuple[str, ...] = (*IMG2IMG_FIELDS, "mask_blur", "inpaint_full_res_padding")
OUTPAINT_SIDES: tuple[str, ...] = ("outpaint_left", "outpaint_right", "outpaint_up", "outpaint_down")


# --- requests from control values ----------------------------------------------------------------------------


def pick_fields(values: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The request fields among the control values; numbers from sliders come as floats, ints stay ints.

    The variation seed and seed resize controls count only while "Extra" is ticked."""
    picked = {}
    skipped = () if values.get("seed_extra") else EXTRA_SEED_FIELDS
    for name in names:
        if name in skipped:
            continue
        if name not in values or values[name] is None:
            continue
        value = values[name]
        if name == "override_settings":
            value = settings_from_pairs(value)
        picked[name] = int(value) if isinstance(value, float) and value.is_integer() else value
    return picked


def choice_index(choices: Sequence[str], label: str, what: str) -> int:
    if label not in choices:
        raise InputError(f"{what}: {label!r} is not one of {', '.join(choices)}")
    return choices.index(label)


def refiner_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """The Refiner accordion: its checkpoint and switch point when the switch is on and a checkpoint chosen."""
    checkpoint = values.get("refiner_checkpoint")
    if not values.get("refiner_enabled") or checkpoint in (None, "", "None"):
        return {}
    return {"refiner_checkpoint": checkpoint, "refiner_switch_at": float(values.get("refiner_switch_at", 0.8))}


def build_txt2img_request(values: Mapping[str, Any]) -> Txt2ImgRequest:
    fields = pick_fields(values, (*COMMON_FIELDS, *HIRES_FIELDS))
    for name, same in SAME_CHOICES.items():
        if fields.get(name) in {same, ""}:
            fields[name] = None
    return Txt2ImgRequest(**fields, **refiner_fields(values))


def build_img2img_request(values: Mapping[str, Any]) -> Img2ImgRequest:
    """img2img from the uploaded image, or Sketch: the image with the painted colours is the init image."""
    if values.get("mode", IMG2IMG_MODE) == SKETCH_MODE:
        image = sketch_composite(values.get("sketch"))
        if image is None:
            raise InputError("Upload an image into the Sketch editor (and paint on it) first.")
    else:
        image = values.get("init_image")
        if image is None:
            raise InputError("Upload an image to start from (img2img needs an input image).")
    return img2img_request(values, image)


def img2img_request(values: Mapping[str, Any], image: Image.Image, **extra: Any) -> Img2ImgRequest:
    """The img2img request of the tab's values with ``image`` (and ``extra`` fields: a batch mask, saving)."""
    return Img2ImgRequest(
        **pick_fields(values, (*IMG2IMG_FIELDS, "image_cfg_scale")),
        **refiner_fields(values),
        init_image=image,
        resize_mode=ResizeMode(choice_index(RESIZE_MODES, values.get("resize_mode", RESIZE_MODES[0]), "Resize mode")),
        **extra,
    )


def inpaint_image_and_mask(values: Mapping[str, Any]) -> tuple[Image.Image | None, Image.Image | None]:
    """Inpaint: the editor's image and painted mask (or the uploaded mask); Inpaint sketch: the image with the
    colours blended in and the mask of the strokes."""
    if values.get("mode", INPAINT_MODE) == INPAINT_SKETCH_MODE:
        return inpaint_sketch_inputs(
            values.get("inpaint_sketch"), float(values.get("mask_alpha") or 0), int(values.get("mask_blur") or 0)
        )
    image, painted = split_editor_value(values.get("editor"))
    uploaded = values.get("mask_upload")
    return image, uploaded if uploaded is not None else painted  # processing reads its alpha or grays


def build_inpaint_request(values: Mapping[str, Any]) -> Img2ImgRequest:
    """From the editor (image + painted mask), an uploaded mask or the colour sketch; outpaint sizes grow the
    canvas instead."""
    image, mask = inpaint_image_and_mask(values)
    if image is None:
        raise InputError("Upload an image into the inpaint editor first.")
    grow = [int(values.get(side) or 0) for side in OUTPAINT_SIDES]
    if mask is None and not any(grow):
        raise InputError("Paint the area to change on the image (or upload a mask), or set an outpaint size.")
    request = Img2ImgRequest(
        **pick_fields(values, INPAINT_FIELDS),
        init_image=image,
        mask=mask,
        resize_mode=ResizeMode(choice_index(RESIZE_MODES, values.get("resize_mode", RESIZE_MODES[0]), "Resize mode")),
        inpainting_fill=MaskedContent(
            choice_index(MASKED_CONTENT, values.get("inpainting_fill", "original"), "Masked content")
        ),
        inpaint_full_res=choice_index(INPAINT_AREAS, values.get("inpaint_area", INPAINT_AREAS[0]), "Inpaint area") == 1,
        inpainting_mask_invert=choice_index(MASK_MODES, values.get("mask_mode", MASK_MODES[0]), "Mask mode") == 1,
    )
    if any(grow):
        return outpaint_request(request, *grow)
    return request


# --- images from the editor and uploads ----------------------------------------------------------------------


def split_editor_value(value: Mapping[str, Any] | None) -> tuple[Image.Image | None, Image.Image | None]:
    """gr.ImageEditor's value {background, layers, composite} -> (image, mask painted on the layers or None)."""
    if not value:
        return None, None
    background = value.get("background")
    if background is None:
        return None, None
    return drop_opaque_alpha(background), mask_from_layers(value.get("layers") or [], background.size)


def sketch_composite(value: Mapping[str, Any] | None) -> Image.Image | None:
    """The image with the painted colours on it (A1111's Sketch): the editor's composite, or the background with
    the layers laid over it when the composite is missing."""
    if not value or value.get("background") is None:
        return None
    composite = value.get("composite")
    if composite is None:
        composite = flatten_layers(value["background"], value.get("layers") or [])
    return drop_opaque_alpha(composite)


def flatten_layers(background: Image.Image, layers: Sequence[Image.Image]) -> Image.Image:
    flat = background.convert("RGBA")
    for layer in layers:
        layer = layer.convert("RGBA")
        if layer.size != flat.size:
            layer = layer.resize(flat.size, Image.Resampling.NEAREST)
        flat = Image.alpha_composite(flat, layer)
    return flat


def inpaint_sketch_inputs(
    value: Mapping[str, Any] | None, mask_alpha: float, mask_blur: int
) -> tuple[Image.Image | None, Image.Image | None]:
    """A1111's Inpaint sketch: the mask is where colour was painted, dimmed by "Mask transparency" (percent);
    the init image is the painted image blended over the original through the blurred mask."""
    painted = sketch_composite(value)
    if painted is None or value is None:
        return None, None
    original = drop_opaque_alpha(value["background"])
    mask = mask_from_layers(value.get("layers") or [], original.size)
    if mask is None:
        return original, None
    mask = ImageEnhance.Brightness(mask).enhance(1 - mask_alpha / 100)
    blur = ImageFilter.GaussianBlur(mask_blur)
    painted, original = painted.convert("RGB"), original.convert("RGB")
    return Image.composite(painted.filter(blur), original, mask.filter(blur)), mask


def drop_opaque_alpha(image: Image.Image) -> Image.Image:
    """The editor hands RGBA; an alpha that is opaque everywhere carries nothing, so RGB loses nothing.

    Any real transparency is kept, so that processing converts it and says so."""
    if image.mode == "RGBA" and image.getchannel("A").getextrema() == (255, 255):
        return image.convert("RGB")
    return image


def mask_from_layers(layers: Sequence[Image.Image], size: tuple[int, int]) -> Image.Image | None:
    """White where any layer was painted (alpha > 0); None when nothing was painted."""
    mask = Image.new("L", size, 0)
    for layer in layers:
        alpha = layer.getchannel("A") if "A" in layer.getbands() else layer.convert("L")
        if alpha.size != size:
            alpha = alpha.resize(size, Image.Resampling.NEAREST)
        mask = ImageChops.lighter(mask, alpha.point(lambda value: 255 if value > 0 else 0))
    return mask if mask.getbbox() is not None else None


# --- running a job ------------------------------------------------------------------------------------------


@dataclass
class GalleryResult:
    """What the gallery shows, with the infotext and seed of each entry (the grid first, as A1111)."""

    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    subseeds: list[int] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        return {
            "infotexts": list(self.infotexts),
            "seeds": list(self.seeds),
            "subseeds": list(self.subseeds),
            "selected": 0,
        }


def with_infotext(image: Image.Image, infotext: str) -> Image.Image:
    """A copy carrying the infotext, so that the PNG the browser gets (and downloads) keeps it."""
    copy = image.copy()
    copy.info["parameters"] = infotext
    return copy


def gallery_from_result(result: ProcessingResult, show_grid: bool) -> GalleryResult:
    gallery = GalleryResult()
    if show_grid and result.grid is not None and result.infotexts:
        gallery.images.append(with_infotext(result.grid, result.infotexts[0]))
        gallery.infotexts.append(result.infotexts[0])
        gallery.seeds.append(result.seeds[0])
        gallery.subseeds.append(result.subseeds[0] if result.subseeds else -1)
    subseeds = result.subseeds if len(result.subseeds) == len(result.seeds) else [-1] * len(result.seeds)
    for image, text, seed, subseed in zip(result.images, result.infotexts, result.seeds, subseeds, strict=True):
        gallery.images.append(with_infotext(image, text))
        gallery.infotexts.append(text)
        gallery.seeds.append(seed)
        gallery.subseeds.append(subseed)
    return gallery


@dataclass
class JobUpdate:
    """One step of a running generation as the UI shows it. ``preview`` is None when it has not changed."""

    progress: str = ""
    preview: Image.Image | None = None
    result: ProcessingResult | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.result is not None or self.error is not None


def stream_job(
    service: GenerationService,
    request: Txt2ImgRequest | Img2ImgRequest,
    owner: str,
    poll_seconds: float = 0.4,
    scripts: BoundScripts | None = None,
) -> Iterator[JobUpdate]:
    """Submit the request (with the tab's scripts), then report progress and new previews until the job ends; the
    last update has the result or the error message."""
    try:
        job = service.submit(request, owner, scripts=scripts)
    except QueueError as error:  # over the per-login limit of waiting jobs
        yield JobUpdate(error=error_message(error))
        return
    logger.info("ui job submitted id=%s owner=%s", job.id, owner or "-")
    last_preview: Image.Image | None = None
    try:
        while not job.done:
            wait([job.future], timeout=poll_seconds)
            if job.done:
                break
            snapshot = job.control.snapshot()
            preview = snapshot.preview if snapshot.preview is not last_preview else None
            last_preview = snapshot.preview
            yield JobUpdate(progress=progress_text(snapshot, service.position(job)), preview=preview)
    except GeneratorExit:  # the page went away (Gradio closes the stream): a job that has not started is cancelled
        if service.cancel(job.id, owner, reason="the page was closed before the job started"):
            logger.info("ui job cancelled id=%s (page closed while queued)", job.id)
        raise
    error = job.future.exception()
    if error is not None:
        yield JobUpdate(error=error_message(error))
        return
    yield JobUpdate(result=job.future.result())


def result_summary(result: ProcessingResult) -> str:
    lines = [
        f"{len(result.images)} image{'s' if len(result.images) != 1 else ''}"
        + (" (interrupted)" if result.interrupted else "")
    ]
    lines += [f"Note: {note}" for note in result.notes]
    return "\n".join(lines)


# --- gallery selection, seeds, infotext -----------------------------------------------------------------------


def selected_infotext(state: Mapping[str, Any] | None, index: int) -> str:
    infotexts = (state or {}).get("infotexts") or []
    return infotexts[index] if 0 <= index < len(infotexts) else ""


def selected_subseed(state: Mapping[str, Any] | None, fallback: int = -1) -> int:
    """The variation seed of the selected gallery image ("reuse variation seed")."""
    return selected_seed(state, fallback, key="subseeds")


def selected_seed(state: Mapping[str, Any] | None, fallback: int = -1, key: str = "seeds") -> int:
    """The seed of the selected gallery image ("reuse seed"); ``fallback`` when nothing was made yet."""
    state = state or {}
    seeds = state.get(key) or []
    index = state.get("selected", 0)
    return int(seeds[index]) if 0 <= index < len(seeds) else fallback


def parsed_for_paste(text: str, listeners: Sequence[Callable[[str, dict[str, Any]], None]] = ()) -> dict[str, Any]:
    """The infotext's parameters after the infotext-pasted listeners (extensions' on_infotext_pasted, which may
    change them, as in A1111's paste)."""
    parameters = parse_infotext(text)
    for listener in listeners:
        try:
            listener(text, parameters)
        except Exception:  # an extension's callback: logged, the paste goes on
            logger.exception("infotext pasted listener failed")
    return parameters


def fields_from_infotext(text: str, listeners: Sequence[Callable[[str, dict[str, Any]], None]] = ()) -> dict[str, Any]:
    """Control values from an infotext: prompt, negative prompt, steps, sampler, schedule type, CFG, seed, size,
    restore faces and the hires fix controls (off when the infotext has no hires pass; "Use same ..." choices).

    A legacy sampler name ("DPM++ 2M Karras") is split into sampler and schedule type; an unknown sampler is
    left out (the control keeps its value), as A1111's paste does."""
    if not text.strip():
        return {}
    fields = infotext_to_request_fields(parsed_for_paste(text, listeners))
    split_legacy_sampler(fields, "sampler_name", "scheduler")
    fields.setdefault("restore_faces", False)
    fields.setdefault("enable_hr", False)
    # settings (ENSD, RNG, eta ...) stay {setting: value}: the tab's "Override settings" shows those that differ
    fields["seed_extra"] = any(name in fields for name in ("subseed_strength", "seed_resize_from_w"))
    if fields["seed_extra"]:
        fields.setdefault("subseed_strength", 0.0)
        fields.setdefault("seed_resize_from_w", 0)
        fields.setdefault("seed_resize_from_h", 0)
    fields["refiner_enabled"] = "refiner_checkpoint" in fields
    if fields["enable_hr"]:
        split_legacy_sampler(fields, "hr_sampler_name", "hr_scheduler")
        for name, first_pass in (("hr_sampler_name", "sampler_name"), ("hr_scheduler", "scheduler")):
            if name in fields and fields[name] == fields.get(first_pass):  # A1111: the same as the first pass
                fields[name] = SAME_CHOICES[name]
        for name, same in SAME_CHOICES.items():
            fields.setdefault(name, same)
    return fields


def split_legacy_sampler(fields: dict[str, Any], sampler_field: str, schedule_field: str) -> None:
    """ "DPM++ 2M Karras" -> sampler "DPM++ 2M", schedule type "Karras" (when none is given); unknown: left out."""
    if sampler_field not in fields:
        return
    try:
        spec, schedule = split_sampler_name(str(fields[sampler_field]))
    except SamplerError as error:
        logger.warning("infotext sampler ignored field=%s error=%s", sampler_field, error)
        fields.pop(sampler_field)
        return
    fields[sampler_field] = spec.name
    if schedule is not None and fields.get(schedule_field, "Automatic") in {"Automatic", USE_SAME_SCHEDULER}:
        fields[schedule_field] = schedule
