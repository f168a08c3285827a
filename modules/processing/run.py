"""The run object: one per job, created from the request, read and written by every stage (A1111's ``p``, typed).

It holds the resolved request (styles applied, every image's prompts and seeds, sampler and schedule, sizes),
the prepared inputs, the job control, notes, extra infotext parameters and the results. Attribute names
follow A1111 where its scripts read them (``all_prompts``, ``all_seeds``, ``extra_generation_params``, ...).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from modules.backends.base import Backend, GenerationPlan, NoiseSeeds, SamplingSettings
from modules.controlnet.residuals import ControlPlan
from modules.models.manager import LoadedModel, Task
from modules.processing.hires import HiresPass
from modules.processing.inputs import PreparedInputs
from modules.processing.job import JobControl
from modules.processing.requests import GenerationRequest, Txt2ImgRequest
from modules.samplers import SamplerInfo

MAX_RANDOM_SEED = 4294967294


def resolve_seeds(seed: int, count: int, count_up: bool = True) -> list[int]:
    """A1111: -1 draws a random seed; image i of the job uses seed + i (with a variation strength every image keeps
    the seed and only the variation seeds count up: ``count_up`` False)."""
    first = random.randrange(MAX_RANDOM_SEED) if seed == -1 else seed
    return [first + (index if count_up else 0) for index in range(count)]


@dataclass
class ProcessingResult:
    """What a job returns: images in order with their infotexts, seeds and prompts; the grid when one is made."""

    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    subseeds: list[int] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    negative_prompts: list[str] = field(default_factory=list)
    saved_paths: list[Path] = field(default_factory=list)
    grid: Image.Image | None = None
    grid_path: Path | None = None
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)
    parameters: dict[str, object] = field(default_factory=dict)
    first_image_index: int = 0  # images before it are grids a script made (A1111's index_of_first_image)
    worker: str = ""  # the Ray worker that ran the job (modules/cluster); empty: this process


@dataclass
class GenerationRun:
    """One job in flight. Created by ``processing.start_run``; stages read it and add to it."""

    request: GenerationRequest
    control: JobControl
    backend: Backend
    sampler: SamplerInfo
    schedule_type: str
    inputs: PreparedInputs
    all_prompts: list[str]
    all_negative_prompts: list[str]
    all_seeds: list[int]
    all_subseeds: list[int]
    hires: HiresPass | None = None
    all_hr_prompts: list[str] = field(default_factory=list)
    all_hr_negative_prompts: list[str] = field(default_factory=list)
    emphasis: str = "Original"
    noise_multiplier: float = 1.0
    exact_img2img_steps: bool = False
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    extra_generation_params: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    iteration: int = 0
    prompt_no_styles: str = ""  # the request's prompt before styles were added ([prompt_no_styles])
    styles: tuple[str, ...] = ()  # the styles the request named ([styles])
    job_timestamp: str = ""  # A1111's "%Y%m%d%H%M%S" at the job's start
    user: str | None = None  # the login that queued the job ([user])
    model: LoadedModel | None = None  # the first pass's model of the current batch (infotext: Model, Model hash)
    result: ProcessingResult = field(default_factory=ProcessingResult)
    script_state: dict[str, object] = field(default_factory=dict)  # scripts' own data for this job, by key
    controlnet: tuple[ControlPlan, ...] = ()  # ControlNet units (set by the ControlNet script), for every pass

    # A1111's attribute names for what the request holds.
    @property
    def prompt(self) -> str:
        return self.request.prompt

    @property
    def negative_prompt(self) -> str:
        return self.request.negative_prompt

    @property
    def seed(self) -> int:
        return self.all_seeds[0]

    @property
    def subseed(self) -> int:
        return self.all_subseeds[0]

    @property
    def steps(self) -> int:
        return self.request.steps

    @property
    def cfg_scale(self) -> float:
        return self.request.cfg_scale

    @property
    def width(self) -> int:
        return self.request.width

    @property
    def height(self) -> int:
        return self.request.height

    @property
    def batch_size(self) -> int:
        return self.request.batch_size

    @property
    def n_iter(self) -> int:
        return self.request.n_iter

    @property
    def sampler_name(self) -> str:
        return self.sampler.name

    @property
    def task(self) -> Task:
        return self.request.task

    @property
    def hires_request(self) -> Txt2ImgRequest:
        """The request as a txt2img one (only called when a hires pass is planned, which only txt2img has)."""
        assert isinstance(self.request, Txt2ImgRequest)
        return self.request

    def batch_slice(self, iteration: int) -> slice:
        return slice(iteration * self.batch_size, (iteration + 1) * self.batch_size)

    def note(self, *notes: str) -> None:
        """Add notes for the user, each once."""
        self.notes.extend(text for text in notes if text not in self.notes)

    def plan(self, iteration: int) -> GenerationPlan:
        """The first pass of batch ``iteration``."""
        batch = self.batch_slice(iteration)
        return GenerationPlan(
            task=self.task,
            prompts=self.all_prompts[batch],
            negative_prompts=self.all_negative_prompts[batch],
            seeds=self.all_seeds[batch],
            steps=self.request.steps,
            cfg_scale=self.request.cfg_scale,
            width=self.inputs.width or self.request.width,
            height=self.inputs.height or self.request.height,
            sampler_name=self.sampler.name,
            schedule_type=self.schedule_type,
            clip_skip=self.request.clip_skip,
            init_image=self.inputs.batch_init_images,
            mask=self.inputs.mask,
            denoising_strength=self.request.first_pass_strength,
            masked_content=self.inputs.masked_content,
            emphasis=self.emphasis,
            exact_steps=self.exact_img2img_steps and self.task is not Task.TXT2IMG,
            noise_multiplier=self.noise_multiplier,
            noise=self.noise_seeds(batch),
            sampling=self.sampling,
            controlnet=self.controlnet,
        )

    def noise_seeds(self, batch: slice) -> NoiseSeeds:
        """The batch's variation seeds and "resize seed from" (A1111's ImageRNG arguments)."""
        request = self.request
        strength = request.subseed_strength
        resized = request.seed_resized
        return NoiseSeeds(
            subseeds=tuple(self.all_subseeds[batch]) if strength != 0 else (),
            subseed_strength=strength,
            resize_from_w=request.seed_resize_from_w if resized else 0,
            resize_from_h=request.seed_resize_from_h if resized else 0,
        )
