"""One request -> images + infotext. Stages: model, sampler, seeds, inputs, generate, finish, save."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from PIL import Image

from modules.backends.base import Backend, BackendError, GenerationPlan
from modules.models.manager import LoadedModel, ModelManager, Task
from modules.networks.service import AppliedNetworks, Networks
from modules.options import Options
from modules.paths import DataPaths
from modules.postprocess.service import Postprocessor
from modules.processing import infotext as infotext_module
from modules.processing import saving
from modules.processing.hires import HiresPass, hires_infotext, plan_hires, run_hires
from modules.processing.inputs import PreparedInputs, finish_images, prepare_inputs
from modules.processing.job import JobControl
from modules.processing.requests import GenerationRequest, Img2ImgRequest, Txt2ImgRequest
from modules.prompts.styles import StyleDatabase, StyleError
from modules.samplers import SamplerError, infotext_schedule, resolve

logger = logging.getLogger(__name__)

VERSION = "Easel 0.1.0"
MAX_RANDOM_SEED = 4294967294


class ProcessingError(Exception):
    """A request that cannot run; the message is shown to the user as it is."""


@dataclass
class ProcessingContext:
    """What processing needs from the application: passed down, never global."""

    model_manager: ModelManager
    backend: Backend
    options: Options
    paths: DataPaths
    postprocessor: Postprocessor | None = None
    networks: Networks | None = None  # LoRA / embeddings / VAE choice (modules/networks)


@dataclass
class ProcessingResult:
    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    saved_paths: list[Path] = field(default_factory=list)
    grid: Image.Image | None = None
    grid_path: Path | None = None
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)
    parameters: dict[str, object] = field(default_factory=dict)


def resolve_seeds(seed: int, count: int) -> list[int]:
    """A1111: -1 draws a random seed; image i of the job uses seed + i."""
    first = random.randrange(MAX_RANDOM_SEED) if seed == -1 else seed
    return [first + index for index in range(count)]


def task_of(request: GenerationRequest) -> Task:
    if isinstance(request, Img2ImgRequest):
        return Task.INPAINT if request.is_inpaint else Task.IMG2IMG
    return Task.TXT2IMG


def process(
    request: Txt2ImgRequest | Img2ImgRequest, context: ProcessingContext, control: JobControl | None = None
) -> ProcessingResult:
    """Run a whole request (batch count x batch size) and save what the options say."""
    request = apply_styles(request, context)
    control = control or JobControl(preview_every_n_steps=context.options.show_progress_every_n_steps)
    model = context.model_manager.get(request.checkpoint)
    try:
        sampler, schedule = resolve(request.sampler_name, request.scheduler)
        hires = plan_hires(request, sampler.name) if is_hires(request) else None
    except SamplerError as error:
        raise ProcessingError(str(error)) from error
    check_hires_upscaler(context, hires)
    task = task_of(request)
    inputs = prepare_inputs(request)
    emphasis = context.options.emphasis
    seeds = resolve_seeds(request.seed, request.n_iter * request.batch_size)
    result = ProcessingResult(notes=list(inputs.notes))
    for iteration in range(request.n_iter):
        if control.interrupted:
            break
        batch_seeds = seeds[iteration * request.batch_size : (iteration + 1) * request.batch_size]
        control.begin_image(iteration, request.n_iter, request.steps)
        plan = make_plan(request, task, inputs, batch_seeds, sampler.name, schedule, emphasis)
        if hires is not None:
            model = context.model_manager.get(model.info.name)
        with networks_applied(context, model, plan) as networks:
            images = generate_batch(context, model, request, plan, hires, control)
        result.notes.extend(note for note in networks.notes if note not in result.notes)
        control.clear_skip()
        images = restore_faces_if_asked(request, context, finish_images(images, inputs))
        infotext_of = partial(
            build_infotext,
            request,
            model,
            sampler.name,
            infotext_schedule(sampler, schedule),
            hires=hires,
            face_restorer=face_restorer_name(request, context),
            emphasis=emphasis,
            extra_parameters=networks.infotext,
        )
        keep_images(request, context, task, result, images, batch_seeds, infotext_of)
    if hires is not None and request.hr_checkpoint_name:
        context.model_manager.get(model.info.name)
    result.interrupted = control.interrupted
    save_grid_if_wanted(request, context, task, result)
    if result.infotexts:
        saving.write_params_txt(context.paths.params_file, result.infotexts[0])
    result.parameters = infotext_module.parse_infotext(result.infotexts[0]) if result.infotexts else {}
    logger.info("job done task=%s images=%d interrupted=%s", task.value, len(result.images), result.interrupted)
    return result


def apply_styles(
    request: Txt2ImgRequest | Img2ImgRequest, context: ProcessingContext
) -> Txt2ImgRequest | Img2ImgRequest:
    """A1111: the chosen styles go into the prompts first, so the infotext holds the final prompts (pasting it
    back finds the styles again); hires prompts that are set get them too. An unknown style is an error."""
    if not request.styles:
        return request
    try:
        styles = StyleDatabase.load(context.paths.styles_file)
        update = {
            "prompt": styles.apply_styles_to_prompt(request.prompt, request.styles),
            "negative_prompt": styles.apply_negative_styles_to_prompt(request.negative_prompt, request.styles),
            "styles": [],
        }
        if isinstance(request, Txt2ImgRequest) and request.hr_prompt:
            update["hr_prompt"] = styles.apply_styles_to_prompt(request.hr_prompt, request.styles)
        if isinstance(request, Txt2ImgRequest) and request.hr_negative_prompt:
            update["hr_negative_prompt"] = styles.apply_negative_styles_to_prompt(
                request.hr_negative_prompt, request.styles
            )
    except StyleError as error:
        raise ProcessingError(str(error)) from error
    logger.info("styles applied styles=%s", ",".join(request.styles))
    return request.model_copy(update=update)


def networks_applied(
    context: ProcessingContext, model: LoadedModel, plan: GenerationPlan
) -> AbstractContextManager[AppliedNetworks]:
    """VAE, embeddings and the prompt's LoRA tags for one batch; LoRA deltas are removed on exit."""
    if context.networks is None:
        return nullcontext(AppliedNetworks())
    return context.networks.applied(model, plan.prompts, plan.negative_prompts)


def generate_batch(
    context: ProcessingContext,
    model: LoadedModel,
    request: GenerationRequest,
    plan: GenerationPlan,
    hires: HiresPass | None,
    control: JobControl,
) -> list[Image.Image]:
    """One batch through the backend (both passes with hires fix); backend refusals become user messages."""
    try:
        if hires is None:
            return context.backend.generate(model, plan, control)
        return run_hires(
            context.backend,
            model,
            partial(hires_model, context, request, model),
            request,
            plan,
            hires,
            control,
            hires_upscaler(context),
        )
    except BackendError as error:
        raise ProcessingError(str(error)) from error


def is_hires(request: GenerationRequest) -> bool:
    return isinstance(request, Txt2ImgRequest) and request.enable_hr


def hires_model(context: ProcessingContext, request: Txt2ImgRequest, model: LoadedModel) -> LoadedModel:
    """The second pass's model: the hires checkpoint when one is chosen (loaded in place of the first)."""
    return context.model_manager.get(request.hr_checkpoint_name) if request.hr_checkpoint_name else model


def hires_upscaler(context: ProcessingContext):
    return context.postprocessor.upscale if context.postprocessor is not None else None


def face_restorer_name(request: GenerationRequest, context: ProcessingContext) -> str | None:
    if not request.restore_faces:
        return None
    return context.options.face_restoration_model


def restore_faces_if_asked(
    request: GenerationRequest, context: ProcessingContext, images: list[Image.Image]
) -> list[Image.Image]:
    if not request.restore_faces:
        return images
    if context.postprocessor is None:
        raise ProcessingError("face restoration is not available in this set-up")
    try:
        return [context.postprocessor.restore_faces(image) for image in images]
    except (FileNotFoundError, ValueError) as error:  # missing weights (offline), unreadable or unknown model
        raise ProcessingError(f"face restoration failed: {error}") from error


def check_hires_upscaler(context: ProcessingContext, hires: HiresPass | None) -> None:
    """An unknown or unusable image upscaler is reported before any sampling starts."""
    if hires is None or hires.latent:
        return
    if context.postprocessor is None:
        raise ProcessingError(f"upscaler {hires.upscaler!r} is not available in this set-up")
    try:
        info = context.postprocessor.upscalers.find(hires.upscaler)
    except KeyError as error:
        raise ProcessingError(f"unknown hires upscaler {hires.upscaler!r}") from error
    if not info.supported:
        raise ProcessingError(f"hires upscaler {hires.upscaler!r} cannot be used: {info.reason}")


def keep_images(
    request: GenerationRequest,
    context: ProcessingContext,
    task: Task,
    result: ProcessingResult,
    images: list[Image.Image],
    seeds: list[int],
    infotext_of: Callable[[int], str],
) -> None:
    """Record each image with its infotext, and save it when the request and the options say so."""
    for image, seed in zip(images, seeds, strict=True):
        text = infotext_of(seed)
        result.images.append(image)
        result.infotexts.append(text)
        result.seeds.append(seed)
        if request.save_images and context.options.samples_save:
            result.saved_paths.append(
                saving.save_image(
                    image,
                    output_folder(context, task, grid=False),
                    seed,
                    text,
                    file_format=context.options.samples_format,
                    date_subfolder=context.options.save_to_dirs,
                )
            )


def make_plan(
    request: GenerationRequest,
    task: Task,
    inputs: PreparedInputs,
    seeds: list[int],
    sampler_name: str,
    schedule: str,
    emphasis: str = "Original",
) -> GenerationPlan:
    count = len(seeds)
    return GenerationPlan(
        task=task,
        prompts=[request.prompt] * count,
        negative_prompts=[request.negative_prompt] * count,
        seeds=seeds,
        steps=request.steps,
        cfg_scale=request.cfg_scale,
        width=inputs.width or request.width,
        height=inputs.height or request.height,
        sampler_name=sampler_name,
        schedule_type=schedule,
        clip_skip=request.clip_skip,
        init_image=inputs.init_image,
        mask=inputs.mask,
        denoising_strength=request.denoising_strength if isinstance(request, Img2ImgRequest) else 1.0,
        masked_content=inputs.masked_content,
        emphasis=emphasis,
    )


def build_infotext(
    request: GenerationRequest,
    model: LoadedModel,
    sampler: str,
    schedule: str,
    seed: int,
    hires: HiresPass | None = None,
    face_restorer: str | None = None,
    emphasis: str = "Original",
    extra_parameters: Mapping[str, object] | None = None,
) -> str:
    parameters: dict[str, object] = {
        "Steps": request.steps,
        "Sampler": sampler,
        "Schedule type": schedule,
        "CFG scale": request.cfg_scale,
        "Seed": seed,
        "Face restoration": face_restorer,
        "Size": f"{request.width}x{request.height}",
        "Model hash": model.short_hash,
        "Model": model.info.name.rsplit("/", 1)[-1],
    }
    if isinstance(request, Img2ImgRequest):
        parameters["Denoising strength"] = request.denoising_strength
        if request.is_inpaint:
            parameters["Mask blur"] = request.mask_blur
    if hires is not None and isinstance(request, Txt2ImgRequest):
        parameters["Denoising strength"] = request.denoising_strength
    if request.clip_skip > 1:
        parameters["Clip skip"] = request.clip_skip
    if hires is not None and isinstance(request, Txt2ImgRequest):
        parameters.update(hires_infotext(request, hires, sampler))
    if emphasis != "Original":
        parameters["Emphasis"] = emphasis
    parameters.update(extra_parameters or {})
    parameters["Version"] = VERSION
    return infotext_module.create_infotext(request.prompt, request.negative_prompt, parameters)


def output_folder(context: ProcessingContext, task: Task, grid: bool) -> Path:
    options = context.options
    if grid:
        relative = options.outdir_txt2img_grids if task is Task.TXT2IMG else options.outdir_img2img_grids
    elif options.outdir_samples:
        relative = options.outdir_samples
    else:
        relative = options.outdir_txt2img_samples if task is Task.TXT2IMG else options.outdir_img2img_samples
    return context.paths.data_dir / relative


def save_grid_if_wanted(
    request: GenerationRequest, context: ProcessingContext, task: Task, result: ProcessingResult
) -> None:
    if len(result.images) < 2 or not (context.options.return_grid or context.options.grid_save):
        return
    result.grid = saving.make_grid(result.images)
    if request.save_grid and context.options.grid_save:
        folder = output_folder(context, task, grid=True)
        result.grid_path = saving.save_grid(
            result.grid, folder, result.infotexts[0], date_subfolder=context.options.save_to_dirs
        )
