"""img2img > Batch (A1111's process_batch): every image of a server folder through the job queue, one job each.

Folders follow the settings policy (modules.settings_policy), as Extras > Batch from Directory: off with
``--listen`` unless ``--enable-insecure-dir-access``, and inside the data dir unless ``--allow-outside-data-dir``.
With an output folder the images are saved there, named after their source (A1111: ``<stem>``, or
``<stem>-<n>`` for several per image, a number suffix when the name is taken), with their infotext; without
one they are saved as any img2img job's. No gradio here, so tests call these functions directly."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from modules.generation import GenerationService
from modules.options import Options
from modules.processing import saving
from modules.processing.infotext import parse_infotext, read_infotext
from modules.processing.requests import Img2ImgRequest
from modules.processing.run import ProcessingResult
from modules.settings_policy import SettingsPolicy
from modules.ui.handlers import JobUpdate, img2img_request, split_legacy_sampler, stream_job
from modules.ui.messages import InputError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")  # A1111's batch input extensions
# A1111's "PNG info" choices: what the infotext of each input image sets in its job.
PNG_INFO_PROPS: tuple[str, ...] = ("Prompt", "Negative prompt", "Seed", "CFG scale", "Sampler", "Steps", "Model hash")
CheckpointForHash = Callable[[str], str | None]


@dataclass
class BatchItem:
    """One input image's job."""

    source: Path
    request: Img2ImgRequest


@dataclass
class BatchJob:
    """The jobs of one batch run, where they are saved, and what was skipped (with the reason)."""

    items: list[BatchItem]
    output_dir: Path | None = None
    skipped: list[str] = field(default_factory=list)


def folder_value(values: Mapping[str, Any], name: str, policy: SettingsPolicy) -> Path | None:
    text = str(values.get(name) or "").strip()
    return policy.user_folder(text) if text else None


def image_files(folder: Path) -> list[Path]:
    """The images of ``folder`` and its subfolders (A1111 walks the input folder), sorted."""
    if not folder.is_dir():
        raise InputError(f"Batch: input directory not found: {folder}")
    return sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS)


def read_image(path: Path) -> Image.Image:
    with Image.open(path) as opened:
        opened.load()
        return ImageOps.exif_transpose(opened)  # phones' orientation, as A1111


def mask_for(image_path: Path, masks: Sequence[Path], mask_dir: Path) -> Path | None:
    """A1111: a single mask serves every image; else the mask with the image's stem (any extension)."""
    if len(masks) == 1:
        return masks[0]
    return next((mask for mask in sorted(mask_dir.glob(f"{image_path.stem}.*")) if mask.is_file()), None)


def png_info_fields(
    infotext: str | None, props: Sequence[str], base: Mapping[str, Any], checkpoint_for_hash: CheckpointForHash
) -> dict[str, Any]:
    """The request changes A1111 makes from an input image's infotext: its prompts are appended to the tab's,
    seed, CFG scale, sampler and steps replace the tab's, and a known model hash picks that checkpoint."""
    if not infotext:
        return {}
    parsed = {key: value for key, value in parse_infotext(infotext).items() if key in props}
    fields: dict[str, Any] = {}
    if "Prompt" in parsed:
        fields["prompt"] = f"{base.get('prompt') or ''} {parsed['Prompt']}"
    if "Negative prompt" in parsed:
        fields["negative_prompt"] = f"{base.get('negative_prompt') or ''} {parsed['Negative prompt']}"
    for key, name, kind in (("Seed", "seed", int), ("CFG scale", "cfg_scale", float), ("Steps", "steps", int)):
        if key in parsed:
            fields[name] = kind(float(str(parsed[key])))
    if "Sampler" in parsed:
        sampler = {"sampler_name": str(parsed["Sampler"]), "scheduler": base.get("scheduler", "Automatic")}
        split_legacy_sampler(sampler, "sampler_name", "scheduler")
        fields.update(sampler)
    if "Model hash" in parsed:
        checkpoint = checkpoint_for_hash(str(parsed["Model hash"]))
        if checkpoint is not None:
            fields["checkpoint"] = checkpoint
    return fields


def build_batch_job(
    values: Mapping[str, Any], policy: SettingsPolicy, checkpoint_for_hash: CheckpointForHash
) -> BatchJob:
    """The jobs for the Batch tab's folders and options (values are the img2img tab's control values)."""
    input_dir = folder_value(values, "batch_input_dir", policy)
    if input_dir is None:
        raise InputError("Batch: enter the input directory (the folder that holds the images).")
    output_dir = folder_value(values, "batch_output_dir", policy)
    mask_dir = folder_value(values, "batch_inpaint_mask_dir", policy)
    info_dir = folder_value(values, "batch_png_info_dir", policy)
    masks = image_files(mask_dir) if mask_dir is not None else []
    use_png_info = bool(values.get("batch_use_png_info"))
    props = list(values.get("batch_png_info_props") or [])
    seed = int(values.get("seed") if values.get("seed") is not None else -1)
    fixed = {"seed": seed if seed != -1 else random.randrange(2**32)}  # A1111's fix_seed: one seed for the batch
    job = BatchJob(items=[], output_dir=output_dir)
    for path in image_files(input_dir):
        try:
            image = read_image(path)
        except (UnidentifiedImageError, OSError) as error:
            job.skipped.append(f"{path.name}: not an image ({error})")
            continue
        mask = mask_for(path, masks, mask_dir) if mask_dir is not None and masks else None
        if masks and mask is None:
            job.skipped.append(f"{path.name}: no mask named {path.stem}.* in {mask_dir}")
            continue
        fields = {**values, **fixed}
        if use_png_info:
            info_image = read_image(info_dir / path.name) if info_dir is not None else image
            fields.update(png_info_fields(read_infotext(info_image), props, values, checkpoint_for_hash))
        mask_image = read_image(mask) if mask is not None else None
        request = img2img_request(fields, image, mask=mask_image, save_images=output_dir is None)
        job.items.append(BatchItem(source=path, request=request))
    if not job.items:
        raise InputError(f"Batch: no image to process in {input_dir}" + "".join(f"\n{s}" for s in job.skipped))
    return job


def save_outputs(result: ProcessingResult, item: BatchItem, output_dir: Path, options: Options) -> list[Path]:
    """A1111's batch output names: ``<stem>`` (``<stem>-<n>`` for several images), "Add number suffix" when
    taken, in the samples format with the infotext (the saving settings' choices)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    settings = saving.SavingSettings.from_options(options)
    stem, several = item.source.stem, len(result.images) > 1
    paths = []
    for number, (image, infotext) in enumerate(zip(result.images, result.infotexts, strict=True), start=1):
        extension = saving.format_for_size(image, options.samples_format.lower())
        name = f"{stem}-{number}" if several else stem
        write = saving.image_writer(image, infotext, extension, settings)
        paths.append(saving.write_file_first_free(saving.suffixed_names(output_dir, name, extension), write))
    return paths


def stream_batch(
    service: GenerationService, job: BatchJob, owner: str, options: Options, poll_seconds: float = 0.4
) -> Iterator[JobUpdate]:
    """Each image as its own queued job; progress says which image; the last update holds every image made (or
    the first error). An interrupted job ends the batch, as A1111."""
    combined = ProcessingResult(notes=[f"Skipped {reason}" for reason in job.skipped])
    for index, item in enumerate(job.items, start=1):
        label = f"Batch image {index} of {len(job.items)} ({item.source.name})"
        for update in stream_job(service, item.request, owner, poll_seconds):
            if update.error is not None:
                yield JobUpdate(error=f"{label}: {update.error}")
                return
            if update.result is None:
                yield JobUpdate(progress=f"{label}\n{update.progress}", preview=update.preview)
                continue
            add_result(combined, update.result)
            if job.output_dir is not None:
                combined.saved_paths += save_outputs(update.result, item, job.output_dir, options)
        if combined.interrupted:
            break
    if job.output_dir is not None:
        combined.notes.append(f"{len(combined.saved_paths)} images saved in {job.output_dir}")
    logger.info("img2img batch done images=%d items=%d", len(combined.images), len(job.items))
    yield JobUpdate(result=combined)


def add_result(combined: ProcessingResult, result: ProcessingResult) -> None:
    combined.images += result.images
    combined.infotexts += result.infotexts
    combined.seeds += result.seeds
    combined.saved_paths += result.saved_paths
    combined.notes += [note for note in result.notes if note not in combined.notes]
    combined.interrupted = combined.interrupted or result.interrupted
