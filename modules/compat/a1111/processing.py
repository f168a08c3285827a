"""A1111's ``modules.processing``: ``StableDiffusionProcessing*`` (``p``) as a view over Easel's request and run
object, ``Processed``, ``process_images``, ``fix_seed``, ``create_infotext``.

Reading ``p.steps`` reads the request; writing it replaces the request (validated) on the view and on the run;
``p.all_prompts``, ``p.all_seeds``, ``p.extra_generation_params`` ... are the run's own lists; attributes an
extension invents are kept on the view."""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

from PIL import Image

from modules.compat.runtime import application, runtime
from modules.options import SAMPLER_OPTION_NAMES
from modules.processing.processing import build_infotext
from modules.processing.requests import GenerationRequest, Img2ImgRequest, Txt2ImgRequest
from modules.processing.run import MAX_RANDOM_SEED, GenerationRun, ProcessingResult
from modules.scripts.base import ScriptJob, updated

RUN_FIELDS = frozenset(
    {
        "all_prompts",
        "all_negative_prompts",
        "all_seeds",
        "all_subseeds",
        "all_hr_prompts",
        "all_hr_negative_prompts",
        "extra_generation_params",
        "iteration",
    }
)
DEFAULTS: dict[str, Any] = {
    "subseed_strength": 0.0,
    "seed_resize_from_w": -1,
    "seed_resize_from_h": -1,
    "tiling": False,
    "do_not_reload_embeddings": False,
    "override_settings_restore_afterwards": True,
    "eta": None,
    "s_min_uncond": 0.0,
    "s_churn": 0.0,
    "s_tmin": 0.0,
    "s_tmax": float("inf"),
    "s_noise": 1.0,
    "refiner_checkpoint": None,
    "refiner_switch_at": None,
    "is_using_inpainting_conditioning": False,
    "batch_index": 0,
}
logger = logging.getLogger("extensions")
CURRENT_JOB = threading.local()  # the ScriptJob running on this thread (process_images inside a script's run)


class StableDiffusionProcessing:
    """A1111's ``p``. Made by Easel for a job (``request`` and maybe ``run``), or by an extension with A1111's
    keyword arguments (``StableDiffusionProcessingTxt2Img(prompt="...", steps=20)``)."""

    request_class: type[GenerationRequest] = Txt2ImgRequest

    def __init__(
        self,
        request: GenerationRequest | None = None,
        run: GenerationRun | None = None,
        job: ScriptJob | None = None,
        **fields: Any,
    ) -> None:
        extra: dict[str, Any] = {"override_settings": {}, "scripts": None, "script_args": []}
        if request is None:
            request, extra = self._request_from(fields, extra)
        else:  # A1111's p.override_settings: what the request overrides (sampler and extension settings)
            extra["override_settings"] = {**request.override_settings, **request.extension_settings}
        object.__setattr__(self, "_request", request)
        object.__setattr__(self, "_run", run)
        object.__setattr__(self, "_job", job)
        object.__setattr__(self, "_extra", extra)

    def _request_from(self, fields: dict[str, Any], extra: dict[str, Any]) -> tuple[GenerationRequest, dict]:
        known = self.request_class.model_fields
        given = {}
        for name, value in fields.items():
            if name == "init_images" and value:
                given["init_image"], given["more_init_images"] = value[0], list(value[1:])
            elif name == "sampler_index":
                continue
            elif name in known and value is not None:
                given[name] = value
            else:
                extra[name] = value
        return self.request_class.model_validate(given), extra

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        run, request, extra = self._run, self._request, self._extra
        if name in RUN_FIELDS and run is not None:
            return getattr(run, name)
        if name in extra:
            return extra[name]
        if name in type(request).model_fields:
            return getattr(request, name)
        if name == "init_images":
            return [request.init_image, *request.more_init_images] if isinstance(request, Img2ImgRequest) else None
        if name == "image_mask":
            return request.mask if isinstance(request, Img2ImgRequest) else None
        if name == "do_not_save_samples":
            return not request.save_images
        if name == "do_not_save_grid":
            return not request.save_grid
        if name == "sd_model":
            from modules.compat.a1111 import shared

            return shared.loaded_model()
        if name in ("outpath_samples", "outpath_grids"):
            return str(application().paths.outputs_dir)
        if name in RUN_FIELDS:
            return [] if name != "extra_generation_params" else extra.setdefault(name, {})
        if name in DEFAULTS:
            return DEFAULTS[name]
        raise AttributeError(f"Easel's A1111 compatibility layer: p has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        run, request = self._run, self._request
        if name in RUN_FIELDS and run is not None:
            setattr(run, name, value)
            return
        fields = type(request).model_fields
        if name in fields:
            self._replace(**{name: value})
        elif name == "init_images" and value and isinstance(request, Img2ImgRequest):
            self._replace(init_image=value[0], more_init_images=list(value[1:]))
        elif name == "image_mask" and isinstance(request, Img2ImgRequest):
            self._replace(mask=value)
        elif name == "do_not_save_samples":
            self._replace(save_images=not value)
        elif name == "do_not_save_grid":
            self._replace(save_grid=not value)
        else:
            self._extra[name] = value

    def _replace(self, **fields: Any) -> None:
        if isinstance(fields.get("prompt"), list) or isinstance(fields.get("negative_prompt"), list):
            raise TypeError("Easel's A1111 compatibility layer: p.prompt must be a string (set p.all_prompts)")
        request = updated(self._request, **fields)
        object.__setattr__(self, "_request", request)
        if self._run is not None:
            self._run.request = request


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    request_class = Txt2ImgRequest


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    request_class = Img2ImgRequest


def processing_for(request: GenerationRequest, run: GenerationRun | None = None, job: ScriptJob | None = None) -> Any:
    kind = StableDiffusionProcessingImg2Img if isinstance(request, Img2ImgRequest) else StableDiffusionProcessingTxt2Img
    return kind(request=request, run=run, job=job)


class Processed:
    """A1111's result object over Easel's ProcessingResult."""

    def __init__(
        self,
        p: StableDiffusionProcessing,
        images_list: list[Image.Image],
        seed: int = -1,
        info: str = "",
        subseed: int | None = None,
        all_prompts: list[str] | None = None,
        all_negative_prompts: list[str] | None = None,
        all_seeds: list[int] | None = None,
        all_subseeds: list[int] | None = None,
        index_of_first_image: int = 0,
        infotexts: list[str] | None = None,
        comments: str = "",
    ) -> None:
        self.images = images_list
        self.prompt = p.prompt
        self.negative_prompt = p.negative_prompt
        self.seed = seed
        self.subseed = subseed
        self.info = info
        self.comments = comments
        self.width, self.height, self.steps, self.cfg_scale = p.width, p.height, p.steps, p.cfg_scale
        self.sampler_name = p.sampler_name
        self.batch_size = p.batch_size
        # A1111's defaults: the lists of the last job ``p`` ran, else the single values.
        self.all_prompts = all_prompts or list(p.all_prompts or []) or [self.prompt]
        self.all_negative_prompts = all_negative_prompts or list(p.all_negative_prompts or []) or [self.negative_prompt]
        self.all_seeds = all_seeds or list(p.all_seeds or []) or [seed]
        self.all_subseeds = all_subseeds or list(p.all_subseeds or []) or [subseed if subseed is not None else -1]
        self.index_of_first_image = index_of_first_image
        self.infotexts = infotexts or [info] * len(images_list)
        self.extra_generation_params = dict(getattr(p, "extra_generation_params", {}) or {})
        self.notes: list[str] = []

    @classmethod
    def from_result(cls, p: StableDiffusionProcessing, result: ProcessingResult) -> Processed:
        processed = cls(
            p,
            list(result.images),
            result.seeds[0] if result.seeds else -1,
            result.infotexts[0] if result.infotexts else "",
            subseed=result.subseeds[0] if result.subseeds else None,
            all_prompts=list(result.prompts),
            all_negative_prompts=list(result.negative_prompts),
            all_seeds=list(result.seeds),
            all_subseeds=list(result.subseeds),
            index_of_first_image=result.first_image_index,
            infotexts=list(result.infotexts),
        )
        processed.notes = list(result.notes)
        return processed

    def to_result(self) -> ProcessingResult:
        count = len(self.images)

        def padded(values: list[Any], fallback: Any) -> list[Any]:
            return (list(values) + [values[-1] if values else fallback] * count)[:count]

        return ProcessingResult(
            images=list(self.images),
            infotexts=padded(self.infotexts, self.info),
            seeds=padded(self.all_seeds, self.seed),
            subseeds=padded(self.all_subseeds, self.subseed if self.subseed is not None else -1),
            prompts=padded(self.all_prompts, self.prompt),
            negative_prompts=padded(self.all_negative_prompts, self.negative_prompt),
            first_image_index=self.index_of_first_image,
            notes=list(self.notes),
        )

    def js(self) -> str:
        import json

        return json.dumps(
            {
                "prompt": self.prompt,
                "all_prompts": self.all_prompts,
                "negative_prompt": self.negative_prompt,
                "seed": self.seed,
                "all_seeds": self.all_seeds,
                "infotexts": self.infotexts,
                "index_of_first_image": self.index_of_first_image,
            }
        )

    def infotext(self, p: StableDiffusionProcessing, index: int) -> str:
        return self.infotexts[index] if index < len(self.infotexts) else self.info


def process_images(p: StableDiffusionProcessing) -> Processed:
    """Generate what ``p`` describes: inside a job (a script's run), as part of that job; otherwise queued."""
    job = p._job or getattr(CURRENT_JOB, "job", None)
    request = with_overrides(p._request, p.override_settings)
    if job is not None:
        result = job.process(request)
    else:
        app = application()
        scripts = app.scripts.tab(isinstance(request, Img2ImgRequest)).bind()
        result = app.service.submit(request, scripts=scripts).future.result()
    if p._run is None:  # A1111 leaves the job's lists on p
        for name, values in (
            ("all_prompts", result.prompts),
            ("all_negative_prompts", result.negative_prompts),
            ("all_seeds", result.seeds),
            ("all_subseeds", result.subseeds),
        ):
            p._extra[name] = list(values)
    return Processed.from_result(p, result)


def remember_request(request: GenerationRequest) -> None:
    """The request being processed now (a script's process_images runs derived ones inside its job): what
    ``shared.opts`` reads a request's setting overrides from."""
    app = runtime().application
    CURRENT_JOB.request = (app.service.current() if app is not None else None, request)


def current_request() -> GenerationRequest | None:
    """The request processed now on this thread, when it belongs to the running job; else the job's own (None
    outside a queued job)."""
    job = application().service.current()
    if job is None:
        return None
    remembered = getattr(CURRENT_JOB, "request", None)
    if remembered is not None and remembered[0] is job:
        return remembered[1]
    return job.request


def with_overrides(request: GenerationRequest, overrides: dict[str, Any]) -> GenerationRequest:
    """``p.override_settings`` as the request's own overrides: extensions' settings and sampler parameters (the
    settings Easel lets a request change); any other key is logged and left out."""
    extension_settings = application().extension_settings
    sampler = {key: value for key, value in overrides.items() if key in SAMPLER_OPTION_NAMES}
    extension = {key: value for key, value in overrides.items() if key in extension_settings}
    ignored = sorted(set(overrides) - set(sampler) - set(extension))
    if ignored:
        logger.warning("p.override_settings not applied keys=%s", ",".join(ignored))
    if sampler == request.override_settings and extension == request.extension_settings:
        return request
    return updated(request, override_settings=sampler, extension_settings=extension_settings.converted(extension))


def get_fixed_seed(seed: int | None) -> int:
    if seed is None or seed == "" or seed == -1:
        return random.randrange(MAX_RANDOM_SEED)
    return int(seed)


def fix_seed(p: StableDiffusionProcessing) -> None:
    p.seed = get_fixed_seed(p.seed)
    p.subseed = get_fixed_seed(p.subseed)


def create_infotext(
    p: StableDiffusionProcessing,
    all_prompts: list[str] | None = None,
    all_seeds: list[int] | None = None,
    all_subseeds: list[int] | None = None,
    comments: Any = None,
    iteration: int = 0,
    position_in_batch: int = 0,
    use_main_prompt: bool = False,
    index: int | None = None,
    all_negative_prompts: list[str] | None = None,
) -> str:
    """The infotext of one image of a running job (A1111's signature)."""
    run = p._run
    if run is None:
        raise AttributeError("Easel's A1111 compatibility layer: create_infotext needs a running job's p")
    if index is None:
        index = position_in_batch + iteration * p.batch_size
    context = p._job.context if p._job is not None else application().service.context
    return build_infotext(run, context, index)
