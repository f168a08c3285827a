"""What a model family cannot do is refused with its reason before the backend runs (never silently ignored);
what it does differently goes into the job's notes. The family description (modules/models/families.py) is read,
not branched on by name."""

from __future__ import annotations

from modules.backends.base import GenerationPlan
from modules.models.families import FamilyError, ModelFamily
from modules.models.manager import LoadedModel, missing_decoder_message
from modules.processing.run import GenerationRun
from modules.prompts.plain import PlainPromptError, plain_prompt
from modules.samplers import AUTOMATIC, normalize_schedule_type, split_sampler_name


def check_family(run: GenerationRun, model: LoadedModel, plan: GenerationPlan) -> None:
    """Raises FamilyError for a request the model's family cannot run; notes what it runs differently."""
    model_family = model.family
    name = model_family.display_name
    model_family.check_backend(run.backend.name)
    model_family.check_sampler(run.sampler.name)
    request = run.request
    check_schedule(model_family, asked_schedule(request.sampler_name, request.scheduler))
    if run.hires is not None:
        model_family.check_sampler(run.hires.sampler_name)
        hires_sampler = getattr(request, "hr_sampler_name", None) or request.sampler_name
        check_schedule(
            model_family, asked_schedule(hires_sampler, getattr(request, "hr_scheduler", None) or request.scheduler)
        )
    model_family.pipeline_class_name(plan.task.value)
    if plan.task.value in model_family.task_decoders and plan.task.value not in model.task_decoders:
        raise FamilyError(missing_decoder_message(model_family, plan.task.value))
    if plan.task.value in model_family.task_decoders and plan.denoising_strength < 1:
        run.note(f"{name}: the {plan.task.value} decoder repaints from noise; the denoising strength is not applied")
    if not model_family.takes_negative_prompt and any(text.strip() for text in plan.negative_prompts):
        raise FamilyError(f"{name} takes no negative prompt (its guidance is distilled): clear the negative prompt")
    if not model_family.takes_clip_skip and plan.clip_skip > 1:
        raise FamilyError(f"CLIP skip does not apply to {name} (its pipeline encodes the prompt): set it to 1")
    if model_family.uses_a1111_prompts:
        return
    if run.hires is not None and run.hires.latent:
        raise FamilyError(f"{name}: a Latent hires upscaler is not available; choose an image upscaler")
    if run.request.refiner_enabled:
        raise FamilyError(f"{name}: the SDXL refiner does not apply")
    if plan.noise.subseed_strength or plan.noise.resized:
        run.note(f"{name}: variation seed and seed resize are not applied (the pipeline draws the noise)")
    try:
        if any(plain_prompt(text).weights_dropped for text in (*plan.prompts, *plan.negative_prompts)):
            run.note(f"{name}: prompt weights like (word:1.2) are not applied; the words are read without them")
    except PlainPromptError as error:
        raise FamilyError(f"{name}: {error}") from error
    if model_family.next_stage is not None and not model.stages:
        run.note(f"{name}: no {model_family.next_stage} checkpoint is listed; the images are stage I's")


def asked_schedule(sampler_name: str, schedule_type: str) -> str:
    """The schedule type a request asks for (not what Automatic resolves to): its schedule field, else the schedule
    of an A1111 combined sampler name ("Euler Karras")."""
    asked = normalize_schedule_type(schedule_type)
    return split_sampler_name(sampler_name)[1] or asked if asked == AUTOMATIC else asked


def check_schedule(model_family: ModelFamily, schedule_type: str) -> None:
    """A family whose pipeline keeps its own (flow-matching) schedule takes no schedule type but Automatic."""
    if model_family.own_scheduler and schedule_type != AUTOMATIC:
        raise FamilyError(
            f"{model_family.display_name} keeps its own flow-matching schedule: schedule type {schedule_type} does "
            f"not apply; choose {AUTOMATIC}"
        )
