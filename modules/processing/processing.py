"""One request -> images + infotext. Stages: start the run, per batch (model scope, backend, finish), save."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import torch
from PIL import Image
from pydantic import ValidationError

from modules.backends.base import Backend, BackendError, GenerationPlan, SamplingSettings
from modules.models.families import FamilyError
from modules.models.manager import Task
from modules.models.service import ModelScope, ModelService, NetworkRequest
from modules.options import SCHEDULE_AND_GUIDANCE_OPTION_NAMES, Options
from modules.paths import DataPaths
from modules.postprocess.service import Postprocessor
from modules.processing import infotext as infotext_module
from modules.processing import saving
from modules.processing.family_checks import check_family
from modules.processing.filenames import FilenameValues
from modules.processing.hires import (
    HiresPass,
    ImageUpscaler,
    hires_infotext,
    plan_hires,
    second_pass_plan,
    upscale_first_pass,
)
from modules.processing.hooks import ImageToPostprocess, ProcessingListeners, ScriptHooks
from modules.processing.inputs import finish_images
from modules.processing.job import JobControl
from modules.processing.requests import GenerationRequest
from modules.processing.run import GenerationRun, ProcessingResult, resolve_seeds
from modules.processing.saver import FileSaver, ImageSaver
from modules.prompts.styles import StyleDatabase, StyleError
from modules.samplers import SamplerError, infotext_schedule, resolve

logger = logging.getLogger(__name__)

VERSION = "Easel 0.1.0"

__all__ = ["ProcessingContext", "ProcessingError", "ProcessingResult", "process"]


class ProcessingError(Exception):
    """A request that cannot run; the message is shown to the user as it is."""


@dataclass
class ProcessingContext:
    """What processing needs from the application: passed down, never global.

    ``backend`` is the default one (``--backend``); ``backends`` holds every backend built once by the application,
    by name, so that a request (or the ``sd_sampling_backend`` setting) can choose one without reloading weights."""

    models: ModelService
    backend: Backend
    options: Options
    paths: DataPaths
    postprocessor: Postprocessor | None = None
    backends: Mapping[str, Backend] = field(default_factory=dict)
    listeners: ProcessingListeners = field(default_factory=ProcessingListeners)
    saver: ImageSaver = field(default_factory=FileSaver)  # a remote worker records the files for Easel to write

    def backend_for(self, name: str | None = None) -> Backend:
        """The backend called ``name``; empty or None: the ``sd_sampling_backend`` setting, else the default."""
        wanted = name or self.options.sd_sampling_backend
        if not wanted or wanted == self.backend.name:
            return self.backend
        if wanted not in self.backends:
            known = sorted({self.backend.name, *self.backends})
            raise ProcessingError(f"unknown sampler backend {wanted!r}; choose one of: {', '.join(known)}")
        return self.backends[wanted]


def process(
    request: GenerationRequest,
    context: ProcessingContext,
    control: JobControl | None = None,
    user: str | None = None,
    hooks: ScriptHooks | None = None,
) -> ProcessingResult:
    """Run a whole request (batch count x batch size) and save what the options say; ``hooks`` (the job's
    scripts) are called at each stage."""
    run = start_run_with_hooks(request, context, control, hooks)
    run.user = user or None
    with context.models.use(run.request.checkpoint):  # a per-request checkpoint is given back after the job
        for iteration in range(run.n_iter):
            if run.control.interrupted:
                break
            run.iteration = iteration
            if hooks is not None:
                hooks.before_process_batch(run, iteration)
                hooks.process_batch(run, iteration)
            images = finish_images(generate_batch(run, context), run.inputs)
            run.control.clear_skip()
            if hooks is not None:
                hooks.postprocess_batch(run, images, iteration)
            images = restore_faces_if_asked(run, context, images)
            keep_images(run, context, postprocessed_images(run, hooks, images))
    finish_run(run, context)
    if hooks is not None:
        hooks.postprocess(run, run.result)
    logger.info(
        "job done task=%s images=%d interrupted=%s", run.task.value, len(run.result.images), run.control.interrupted
    )
    return run.result


def start_run_with_hooks(
    request: GenerationRequest, context: ProcessingContext, control: JobControl | None, hooks: ScriptHooks | None
) -> GenerationRun:
    """Start the run; scripts' ``before_process`` may replace ``run.request`` (the run is then resolved again from
    it, keeping what the scripts added), and ``process`` sees every image's prompts and seeds."""
    run = start_run(request, context, control)
    if hooks is None:
        return run
    started = run.request
    hooks.before_process(run)
    if run.request is not started:
        changed = start_run(run.request, context, run.control, original=request)
        changed.extra_generation_params.update(run.extra_generation_params)
        changed.note(*run.notes)
        changed.script_state.update(run.script_state)
        run = changed
    hooks.process(run)
    return run


def postprocessed_images(run: GenerationRun, hooks: ScriptHooks | None, images: list[Image.Image]) -> list[Image.Image]:
    """Each image through the scripts' ``postprocess_image`` (which may replace it)."""
    if hooks is None:
        return images
    start = run.batch_slice(run.iteration).start
    finished = []
    for offset, image in enumerate(images):
        holder = ImageToPostprocess(image=image, index=start + offset)
        hooks.postprocess_image(run, holder)
        finished.append(holder.image)
    return finished


def start_run(
    request: GenerationRequest,
    context: ProcessingContext,
    control: JobControl | None,
    original: GenerationRequest | None = None,
) -> GenerationRun:
    """Resolve everything once: styles, sampler and schedule, hires plan, inputs, every image's prompts and seeds.
    ``original``: the request as the user gave it (its prompt and styles name files), when ``request`` is derived."""
    original = original or request
    request = apply_styles(request, context)
    options = context.options
    backend = context.backend_for(request.sampling_backend)
    support = backend.sampler_support()
    try:
        sampler, schedule = resolve(request.sampler_name, request.scheduler, support)
        hires = plan_hires(request, sampler.name, support) if request.hires_enabled else None
    except SamplerError as error:
        raise ProcessingError(str(error)) from error
    check_hires_upscaler(context, hires)
    if hires is not None and request.refiner_enabled:
        raise ProcessingError("Refiner together with Hires fix is not supported yet: turn one of them off")
    inputs = request.prepare_inputs()
    save_init_image(request, context)
    count = request.n_iter * request.batch_size
    run = GenerationRun(
        request=request,
        control=control
        or JobControl(
            preview_every_n_steps=options.show_progress_every_n_steps,
            preview_method=options.show_progress_type,
            preview_dir=context.paths.vae_approx_dir,
        ),
        backend=backend,
        sampler=sampler,
        schedule_type=schedule,
        inputs=inputs,
        all_prompts=[request.prompt] * count,
        all_negative_prompts=[request.negative_prompt] * count,
        all_seeds=resolve_seeds(request.seed, count, count_up=request.subseed_strength == 0),
        all_subseeds=resolve_seeds(request.subseed, count),
        sampling=sampling_settings(request, options),
        hires=hires,
        emphasis=options.emphasis,
        notes=list(inputs.notes),
        prompt_no_styles=original.prompt,
        styles=tuple(original.styles),
        job_timestamp=datetime.now().strftime("%Y%m%d%H%M%S"),
    )
    if hires is not None:
        hires_request = run.hires_request
        run.all_hr_prompts = [hires_request.hr_prompt or request.prompt] * count
        run.all_hr_negative_prompts = [hires_request.hr_negative_prompt or request.negative_prompt] * count
    # A1111's img2img settings: the noise multiplier (infotext "Noise multiplier") and exact steps.
    run.noise_multiplier = request.noise_multiplier(options.initial_noise_multiplier)
    if run.noise_multiplier != 1.0:
        run.extra_generation_params["Noise multiplier"] = run.noise_multiplier
    run.exact_img2img_steps = options.img2img_fix_steps
    return run


def sampling_settings(request: GenerationRequest, options: Options) -> SamplingSettings:
    """A1111's sampler parameters for the request: its own eta / s_* fields, else the settings (which the request's
    ``override_settings`` may change for itself)."""
    try:
        settings = options.model_validate({**options.model_dump(), **request.override_settings})
    except ValidationError as error:
        raise ProcessingError(f"override_settings: {error}") from error

    def chosen(value: float | None, setting: float) -> float:
        return setting if value is None else value

    return SamplingSettings(
        randn_source=settings.randn_source,
        eta_noise_seed_delta=settings.eta_noise_seed_delta,
        eta=request.eta,
        eta_ancestral=settings.eta_ancestral,
        eta_ddim=settings.eta_ddim,
        s_churn=chosen(request.s_churn, settings.s_churn),
        s_tmin=chosen(request.s_tmin, settings.s_tmin),
        s_tmax=chosen(request.s_tmax, settings.s_tmax),
        s_noise=chosen(request.s_noise, settings.s_noise),
        always_discard_next_to_last_sigma=settings.always_discard_next_to_last_sigma,
        sgm_noise_multiplier=settings.sgm_noise_multiplier,
        use_old_karras_scheduler_sigmas=settings.use_old_karras_scheduler_sigmas,
        **{name: getattr(settings, name) for name in SCHEDULE_AND_GUIDANCE_OPTION_NAMES},
    )


def apply_styles(request: GenerationRequest, context: ProcessingContext) -> GenerationRequest:
    """The chosen styles go into the prompts (hires prompts too); an unknown style is an error."""
    if not request.styles:
        return request
    try:
        styled = request.with_styles(StyleDatabase.load(context.paths.styles_file))
    except StyleError as error:
        raise ProcessingError(str(error)) from error
    logger.info("styles applied styles=%s", ",".join(request.styles))
    return styled


def generate_batch(run: GenerationRun, context: ProcessingContext) -> list[Image.Image]:
    """One batch: the first pass in its model scope, then the refiner or the hires pass (when asked) in its own."""
    plan = run.plan(run.iteration)
    networks = NetworkRequest(plan.prompts, plan.negative_prompts, run.request.sd_vae)
    hires = run.hires
    refiner = run.request.refiner_enabled
    try:
        with context.models.use(run.request.checkpoint, networks) as scope:
            record_scope(run, scope, first_pass=True)
            plan = plan_for_model(run, scope, plan)
            record_details(run, plan)
            if hires is None and not refiner:
                return run_pass(run, context, scope, plan)
            if refiner:
                switch = replace(plan, output_latents=True, denoising_end=run.request.refiner_switch_at)
                first = run_pass(run, context, scope, switch)
            else:
                first = run_pass(run, context, scope, dataclasses.replace(plan, output_latents=hires.latent))
            if run.control.interrupted or run.control.skipped:  # the first pass's images are kept
                return decoded(run, scope, first)
            if refiner:
                return run_refiner_pass(run, context, plan, first)
            init = upscale_first_pass(first, hires, hires_upscaler(context))
            if run.hires_request.denoising_strength == 0:
                return decoded(run, scope, init)
        return run_hires_pass(run, context, plan, init)
    except BackendError as error:
        raise ProcessingError(str(error)) from error


def run_refiner_pass(
    run: GenerationRun, context: ProcessingContext, base_plan: GenerationPlan, latents: torch.Tensor
) -> list[Image.Image]:
    """A1111's refiner: the refiner checkpoint continues the base pass's latents from the switch point, in a
    scope of its own without the prompt's networks (LoRA applies to the base model only, as in A1111)."""
    switch_at = run.request.refiner_switch_at
    plan = replace(
        base_plan,
        task=Task.IMG2IMG,
        init_image=latents,
        mask=None,
        denoising_start=switch_at,
        denoising_end=None,
        output_latents=False,
        image_cfg_scale=None,
        controlnet=(),  # the refiner is another family's model: ControlNet units act on the base pass
        edit_model=False,
    )
    with context.models.use(run.request.refiner_checkpoint, NetworkRequest((), (), run.request.sd_vae)) as scope:
        run.note(*scope.notes)
        run.extra_generation_params["Refiner"] = f"{scope.model.name} [{scope.model.short_hash}]"
        run.extra_generation_params["Refiner switch at"] = switch_at
        return decoded(run, scope, run_pass(run, context, scope, plan))


def decoded(run: GenerationRun, scope: ModelScope, images: list[Image.Image] | torch.Tensor) -> list[Image.Image]:
    """Images as they are, or latents decoded with the scope's model."""
    return images if isinstance(images, list) else run.backend.decode(scope.model, images)


def run_pass(
    run: GenerationRun, context: ProcessingContext, scope: ModelScope, plan: GenerationPlan
) -> list[Image.Image] | torch.Tensor:
    """One backend call, with the progress total of the steps the backend will really run."""
    control = run.control
    control.begin_image(run.iteration, run.n_iter, run.backend.steps_run(plan))
    if context.listeners.denoiser:
        plan = replace(plan, denoiser_hooks=context.listeners.denoiser)
    if context.listeners.extra_noise:
        plan = replace(plan, extra_noise_listeners=tuple(context.listeners.extra_noise))
    images = run.backend.generate(scope.model, plan, control)
    run.extra_generation_params.update(control.take_infotext())
    return images


def run_hires_pass(
    run: GenerationRun, context: ProcessingContext, first_plan: GenerationPlan, init: list[Image.Image] | torch.Tensor
) -> list[Image.Image]:
    """The second pass, in a scope of its own: the hires checkpoint (when one is chosen) with the same networks."""
    hires = run.hires
    assert hires is not None
    batch = run.batch_slice(run.iteration)
    prompts, negatives = run.all_hr_prompts[batch], run.all_hr_negative_prompts[batch]
    plan = second_pass_plan(first_plan, hires, prompts, negatives, run.hires_request.denoising_strength, init)
    with context.models.use(hires.checkpoint, NetworkRequest(prompts, negatives, run.request.sd_vae)) as scope:
        record_scope(run, scope, first_pass=False)
        return run_pass(run, context, scope, plan)


def record_details(run: GenerationRun, plan: GenerationPlan) -> None:
    """The backend's infotext entries and notes for the plan (sampler parameters, RNG, what it cannot do)."""
    details = run.backend.run_details(plan)
    run.extra_generation_params.update(details.infotext)
    run.note(*details.notes)


def record_scope(run: GenerationRun, scope: ModelScope, first_pass: bool) -> None:
    """What a pass's scope reports goes into the run: notes, network infotext keys, the first pass's model."""
    run.note(*scope.notes)
    if first_pass:
        run.model = scope.model
        run.extra_generation_params.update(scope.infotext)


def plan_for_model(run: GenerationRun, scope: ModelScope, plan: GenerationPlan) -> GenerationPlan:
    """What depends on the kind of model in the scope: the family's refusals (check_family); instruct-pix2pix
    (A1111's edit model) gets the Image CFG scale (A1111 keeps it for edit models only, infotext "Image CFG scale");
    each backend says what it does with the denoising strength (``run_details``). An inpainting model's image
    conditioning (the mask at full weight) writes A1111's "Conditional mask weight" (not for SDXL inpainting
    txt2img, where A1111 does not count it)."""
    model = scope.model
    try:
        check_family(run, model, plan)
    except FamilyError as error:
        raise ProcessingError(str(error)) from error
    if model.is_inpainting and (plan.task is not Task.TXT2IMG or not model.is_xl):
        run.extra_generation_params["Conditional mask weight"] = 1.0
    if not model.is_pix2pix:
        return plan
    image_cfg_scale = getattr(run.request, "image_cfg_scale", None)
    if image_cfg_scale is not None:
        run.extra_generation_params["Image CFG scale"] = image_cfg_scale
    return replace(plan, image_cfg_scale=image_cfg_scale, edit_model=True)


def hires_upscaler(context: ProcessingContext) -> ImageUpscaler | None:
    return context.postprocessor.upscale if context.postprocessor is not None else None


def face_restorer_name(run: GenerationRun, context: ProcessingContext) -> str | None:
    return context.options.face_restoration_model if run.request.restore_faces else None


def restore_faces_if_asked(
    run: GenerationRun, context: ProcessingContext, images: list[Image.Image]
) -> list[Image.Image]:
    if not run.request.restore_faces:
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


def keep_images(run: GenerationRun, context: ProcessingContext, images: list[Image.Image]) -> None:
    """Record each image of the batch with its infotext, and save it when the request and the options say so."""
    batch = run.batch_slice(run.iteration)
    result = run.result
    for offset, image in enumerate(images):
        index = batch.start + offset
        text = build_infotext(run, context, index)
        result.images.append(image)
        result.infotexts.append(text)
        result.seeds.append(run.all_seeds[index])
        result.subseeds.append(run.all_subseeds[index])
        result.prompts.append(run.all_prompts[index])
        result.negative_prompts.append(run.all_negative_prompts[index])
        if run.request.save_images and context.options.samples_save:
            values = replace(filename_values(run, index), batch_index=offset, iteration=run.iteration)
            result.saved_paths.append(
                context.saver.save_image(
                    image,
                    output_folder(context, run, grid=False),
                    run.all_seeds[index],
                    text,
                    file_format=context.options.samples_format,
                    values=values,
                    settings=saving.SavingSettings.from_options(context.options),
                    listeners=context.listeners.saving,
                    subject=run,
                )
            )


def filename_values(run: GenerationRun, index: int) -> FilenameValues:
    """What the file and folder name patterns may use, for image ``index`` of the job."""
    request, model = run.request, run.model
    return FilenameValues(
        seed=run.all_seeds[index],
        prompt=run.all_prompts[index],
        negative_prompt=run.all_negative_prompts[index],
        prompt_no_styles=run.prompt_no_styles,
        styles=run.styles,
        all_seeds=tuple(run.all_seeds),
        steps=request.steps,
        cfg_scale=request.cfg_scale,
        width=request.width,
        height=request.height,
        sampler=run.sampler.name,
        scheduler=run.schedule_type,
        model_name=model.info.name if model is not None else None,
        model_hash=model.short_hash if model is not None else None,
        clip_skip=request.clip_skip,
        denoising_strength=request.infotext_parameters().get("Denoising strength"),  # type: ignore[arg-type]
        job_timestamp=run.job_timestamp,
        batch_size=request.batch_size,
        n_iter=request.n_iter,
        user=run.user,
        vae_name=str(run.extra_generation_params["VAE"]) if "VAE" in run.extra_generation_params else None,
    )


def build_infotext(run: GenerationRun, context: ProcessingContext, index: int) -> str:
    """A1111's infotext of image ``index`` of the job."""
    request = run.request
    model = run.model
    parameters: dict[str, object] = {
        "Steps": request.steps,
        "Sampler": run.sampler.name,
        "Schedule type": infotext_schedule(run.sampler, run.schedule_type),
        "CFG scale": request.cfg_scale,
        "Seed": run.all_seeds[index],
        "Face restoration": face_restorer_name(run, context),
        "Size": f"{request.width}x{request.height}",
        "Model hash": model.short_hash if model is not None else None,
        "Model": model.info.name.rsplit("/", 1)[-1] if model is not None else None,
    }
    if request.subseed_strength != 0:
        parameters["Variation seed"] = run.all_subseeds[index]
        parameters["Variation seed strength"] = request.subseed_strength
    if request.seed_resized:
        parameters["Seed resize from"] = f"{request.seed_resize_from_w}x{request.seed_resize_from_h}"
    parameters.update(request.infotext_parameters())
    if request.clip_skip > 1:
        parameters["Clip skip"] = request.clip_skip
    if run.hires is not None:
        parameters.update(hires_infotext(run.hires_request, run.hires, run.sampler.name))
    if run.emphasis != "Original":
        parameters["Emphasis"] = run.emphasis
    parameters.update(run.extra_generation_params)
    parameters["Version"] = VERSION
    return infotext_module.create_infotext(run.all_prompts[index], run.all_negative_prompts[index], parameters)


def save_init_image(request: GenerationRequest, context: ProcessingContext) -> list[Path]:
    """A1111's "Save init images when using img2img": each image the job got, as sent, named by its MD5."""
    first = getattr(request, "init_image", None)
    if first is None or not context.options.save_init_img:
        return []
    paths = []
    for image in [first, *getattr(request, "more_init_images", [])]:
        name = hashlib.md5(image.tobytes(), usedforsecurity=False).hexdigest()
        path = context.paths.data_dir / context.options.outdir_init_images / f"{name}.png"
        context.saver.write_image(image, path)
        logger.info("init image saved path=%s", path)
        paths.append(path)
    return paths


def output_folder(context: ProcessingContext, run: GenerationRun, grid: bool) -> Path:
    return task_output_folder(context, run.task, grid)


def task_output_folder(context: ProcessingContext, task: Task, grid: bool) -> Path:
    """The samples (or grids) folder of a task, from the settings."""
    options = context.options
    txt2img = task is Task.TXT2IMG
    if grid:
        relative = options.outdir_txt2img_grids if txt2img else options.outdir_img2img_grids
    elif options.outdir_samples:
        relative = options.outdir_samples
    else:
        relative = options.outdir_txt2img_samples if txt2img else options.outdir_img2img_samples
    return context.paths.data_dir / relative


def finish_run(run: GenerationRun, context: ProcessingContext) -> None:
    """After the batches: notes, the grid, params.txt and the parsed parameters of the first image."""
    result = run.result
    result.interrupted = run.control.interrupted
    result.notes = list(run.notes)
    save_grid_if_wanted(run, context)
    if result.infotexts:
        context.saver.write_params(context.paths.params_file, result.infotexts[0])
    result.parameters = infotext_module.parse_infotext(result.infotexts[0]) if result.infotexts else {}


def save_grid_if_wanted(run: GenerationRun, context: ProcessingContext) -> None:
    """A1111: a grid of a batch is made when the options return or save one and the request does not forbid it
    (the API's ``do_not_save_grid``, which is ``not save_images`` there): then no grid is returned either."""
    result = run.result
    options = context.options
    if len(result.images) < 2 or not run.request.save_grid or not (options.return_grid or options.grid_save):
        return
    result.grid = saving.make_grid(result.images, listeners=context.listeners.grid)
    if options.grid_save:
        folder = output_folder(context, run, grid=True)
        result.grid_path = context.saver.save_grid(
            result.grid,
            folder,
            result.infotexts[0],
            file_format=options.grid_format,
            values=filename_values(run, 0),
            settings=saving.SavingSettings.from_options(options),
            listeners=context.listeners.saving,
            subject=run,
        )
