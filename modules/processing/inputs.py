"""img2img/inpaint inputs: convert, resize, mask, crop for "only masked", and paste results back."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from modules.processing import images
from modules.processing.requests import Img2ImgRequest, MaskedContent, ResizeMode


@dataclass
class PreparedInputs:
    """What the backend gets (image and mask at the generation size) and what finishing needs."""

    init_image: Image.Image | None = None
    mask: Image.Image | None = None
    masked_content: MaskedContent = MaskedContent.ORIGINAL
    width: int | None = None
    height: int | None = None
    overlay_original: Image.Image | None = None
    overlay_mask: Image.Image | None = None
    paste_box: tuple[int, int, int, int] | None = None
    notes: list[str] = field(default_factory=list)
    # Several init images (A1111's batch slots): each slot's prepared inputs, in batch order; empty for one image.
    slots: list[PreparedInputs] = field(default_factory=list)

    @property
    def batch_init_images(self) -> Image.Image | list[Image.Image] | None:
        """What the backend gets: the one init image, or one per batch slot."""
        return [slot.init_image for slot in self.slots] if self.slots else self.init_image

    def slot(self, index: int) -> PreparedInputs:
        return self.slots[index % len(self.slots)] if self.slots else self


def prepare_img2img_inputs(request: Img2ImgRequest) -> PreparedInputs:
    """img2img / inpaint inputs at the generation size; several init images are prepared one by one, the same
    way (the same mask), as A1111's batch slots."""
    first = _prepare_one(request)
    if not request.more_init_images:
        return first
    others = [_prepare_one(request.model_copy(update={"init_image": image})) for image in request.more_init_images]
    slots = [first, *others]
    return replace(first, notes=list(dict.fromkeys(note for slot in slots for note in slot.notes)), slots=slots)


def _prepare_one(request: Img2ImgRequest) -> PreparedInputs:
    """One image (and mask, blurred, inverted, cropped) at the generation size."""
    init, conversion_notes = images.to_rgb(request.init_image)
    notes = list(conversion_notes)
    if request.mask is None:
        resized = images.resize_image(init, request.resize_mode, request.width, request.height)
        return PreparedInputs(init_image=resized, notes=notes)
    mask, mask_notes = images.prepare_mask(request.mask, init.size, request.mask_blur, request.inpainting_mask_invert)
    notes.extend(mask_notes)
    if mask.getbbox() is None:
        notes.append("the mask is empty: nothing to inpaint, the image is processed as img2img")
    if request.inpaint_full_res and mask.getbbox() is not None:
        prepared = _crop_to_mask(init, mask, request)
    else:
        image = images.resize_image(init, request.resize_mode, request.width, request.height)
        mask = images.resize_image(mask, request.resize_mode, request.width, request.height)
        prepared = PreparedInputs(
            init_image=image, mask=mask, overlay_original=image, overlay_mask=images.mask_for_overlay(mask)
        )
    if request.inpainting_fill is MaskedContent.FILL:
        prepared.init_image = images.fill_masked(prepared.init_image, prepared.mask)
    prepared.masked_content = request.inpainting_fill
    prepared.notes = notes
    return prepared


def _crop_to_mask(init: Image.Image, mask: Image.Image, request: Img2ImgRequest) -> PreparedInputs:
    """A1111's "Inpaint area: only masked": work on the masked region (plus padding) at full size."""
    box = VaeImageProcessor.get_crop_region(mask, request.width, request.height, pad=request.inpaint_full_res_padding)
    size = (request.width, request.height)
    image = init.crop(box).resize(size, Image.Resampling.LANCZOS)
    crop_mask = mask.crop(box).resize(size, Image.Resampling.LANCZOS)
    return PreparedInputs(
        init_image=image,
        mask=crop_mask,
        overlay_original=init,
        overlay_mask=images.mask_for_overlay(mask),
        paste_box=tuple(box),
    )


def finish_images(generated: list[Image.Image], inputs: PreparedInputs) -> list[Image.Image]:
    """Paste crops back and composite so that pixels outside the mask are the original ones."""
    if inputs.overlay_mask is None or inputs.overlay_original is None:
        return generated
    finished = []
    for index, image in enumerate(generated):
        slot = inputs.slot(index)
        if slot.paste_box is not None:
            left, top, right, bottom = slot.paste_box
            canvas = slot.overlay_original.copy()
            canvas.paste(image.resize((right - left, bottom - top), Image.Resampling.LANCZOS), (left, top))
            image = canvas
        finished.append(images.composite_unmasked(slot.overlay_original, image, slot.overlay_mask))
    return finished


def outpaint_request(request: Img2ImgRequest, left: int, right: int, up: int, down: int) -> Img2ImgRequest:
    """Grow the canvas by the given pixels and inpaint the new area.

    The image is first brought to the request's size (its resize mode), so the canvas stays a multiple of 8.
    """
    image = images.to_rgb(request.init_image).image
    image = images.resize_image(image, request.resize_mode, request.width, request.height)
    canvas, mask = images.expand_canvas(image, left, right, up, down)
    fields = dict(request)
    fields.update(
        init_image=canvas,
        mask=mask,
        width=canvas.width,
        height=canvas.height,
        resize_mode=ResizeMode.JUST_RESIZE,
        inpaint_full_res=False,
        inpainting_mask_invert=False,
    )
    return Img2ImgRequest(**fields)
