"""Typed, validated generation requests: what the UI and the API hand to processing."""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modules.backends.base import MaskedContent
from modules.models.manager import Task
from modules.options import SAMPLER_OPTION_NAMES
from modules.prompts.parser import AND_SEPARATOR

if TYPE_CHECKING:
    from modules.processing.inputs import PreparedInputs
    from modules.prompts.styles import StyleDatabase

__all__ = ["MaskedContent"]  # re-exported: A1111's inpainting_fill is a request field

MAX_SIDE = 4096
# Per-request caps (issue 20: a LAN-shared server must not let one request hold it for hours). Each is well above
# real use; what a cap refuses is a 4xx (API) or a message (UI) naming the cap.
# A prompt is ~4 characters a token: 32,768 characters are ~8,000 tokens, over 100 chunks of 75; long real prompts
# (A1111's "masterpiece, best quality, ..." lists, regional prompts) stay under 5,000 characters.
MAX_PROMPT_CHARS = 32_768
# AND parts: each one is one more UNet input per step (composable diffusion uses 2 to 8).
MAX_AND_PARTS = 32
# n_iter x batch_size: A1111's UI sliders allow at most 100 x 8 = 800 images.
MAX_IMAGES_PER_REQUEST = 1000
# steps x width x height of one pass: 2**30 lets every size up to 2048x2048 use up to 256 steps (the step cap is
# 150) and 4096x4096 use 64 steps.
MAX_STEP_PIXELS = 2**30


def check_prompt_text(value: str) -> str:
    """A prompt within MAX_PROMPT_CHARS and valid Unicode (a lone surrogate cannot be tokenized or saved)."""
    if len(value) > MAX_PROMPT_CHARS:
        raise ValueError(f"is {len(value)} characters long; the limit is {MAX_PROMPT_CHARS}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"holds a lone surrogate ({value[error.start]!a}) at character {error.start}; send valid Unicode text"
        ) from error
    return value


def check_and_parts(value: str) -> str:
    parts = len(AND_SEPARATOR.findall(value)) + 1
    if parts > MAX_AND_PARTS:
        raise ValueError(f"has {parts} AND parts; the limit is {MAX_AND_PARTS}")
    return value


def check_step_pixels(steps: int, width: int, height: int, what: str) -> None:
    if steps * width * height > MAX_STEP_PIXELS:
        raise ValueError(
            f"{what}: {steps} steps at {width}x{height} is {steps * width * height:,} step-pixels; the limit is "
            f"{MAX_STEP_PIXELS:,} (fewer steps or a smaller size)"
        )


class ResizeMode(IntEnum):
    """A1111's img2img resize modes (same numbers as its API)."""

    JUST_RESIZE = 0
    CROP_AND_RESIZE = 1
    RESIZE_AND_FILL = 2


class GenerationRequest(BaseModel):
    """Parameters shared by every task. Per-request overrides live here, never in global options."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = Field(default_factory=list, description="styles.csv styles applied to the prompts")
    steps: int = Field(20, ge=1, le=150, description="Sampling steps")
    sampler_name: str = Field("DPM++ 2M", description="Sampler, A1111 name or alias")
    scheduler: str = Field("Automatic", description="Schedule type")
    cfg_scale: float = Field(7.0, ge=0.0, le=100.0)
    width: int = Field(512, ge=64, le=MAX_SIDE)
    height: int = Field(512, ge=64, le=MAX_SIDE)
    seed: int = Field(-1, ge=-1, le=2**32 - 1)
    subseed: int = Field(-1, ge=-1, le=2**32 - 1, description="Variation seed (-1: random)")
    subseed_strength: float = Field(0.0, ge=0.0, le=1.0, description="Variation strength (0: no variation)")
    seed_resize_from_w: int = Field(0, ge=-1, le=MAX_SIDE, description="Resize seed from width (0 or -1: off)")
    seed_resize_from_h: int = Field(0, ge=-1, le=MAX_SIDE, description="Resize seed from height (0 or -1: off)")
    eta: float | None = Field(None, ge=0.0, le=1.0, description="Eta (None: the eta_ancestral / eta_ddim setting)")
    s_churn: float | None = Field(None, ge=0.0, le=100.0, description="sigma churn (None: the setting)")
    s_tmin: float | None = Field(None, ge=0.0, description="sigma tmin (None: the setting)")
    s_tmax: float | None = Field(None, ge=0.0, description="sigma tmax (None: the setting; 0 = inf)")
    s_noise: float | None = Field(None, ge=0.0, le=1.1, description="sigma noise (None: the setting)")
    override_settings: dict[str, Any] = Field(
        default_factory=dict, description="Sampler-parameter settings for this request only (A1111's names)"
    )
    extension_settings: dict[str, Any] = Field(
        default_factory=dict, description="Settings that extensions added, for this request only (override_settings)"
    )
    batch_size: int = Field(1, ge=1, le=64)
    n_iter: int = Field(1, ge=1, le=1000, description="Batch count")
    clip_skip: int = Field(1, ge=1, le=12)
    checkpoint: str | None = Field(None, description="Checkpoint title for this request only")
    sd_vae: str | None = Field(None, description="SD VAE for this request only (Automatic, None or a file name)")
    restore_faces: bool = Field(False, description="Run the face restorer chosen in settings on each image")
    sampling_backend: str | None = Field(
        None, description="Sampler backend for this request: original or diffusers (None: the setting, else --backend)"
    )
    refiner_checkpoint: str | None = Field(None, description="Refiner checkpoint (None: no refiner)")
    refiner_switch_at: float = Field(0.8, ge=0.0, le=1.0, description="Fraction of the steps run by the base model")
    save_images: bool = True
    save_grid: bool = True
    extra: dict[str, Any] = Field(default_factory=dict, description="Accepted but unsupported fields")

    @field_validator("override_settings")
    @classmethod
    def _sampler_settings_only(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(SAMPLER_OPTION_NAMES))
        if unknown:
            raise ValueError(f"only sampler parameters can be overridden per request, not {', '.join(unknown)}")
        return value

    @property
    def seed_resized(self) -> bool:
        """A1111's "resize seed from" is on when both sides are positive."""
        return self.seed_resize_from_w > 0 and self.seed_resize_from_h > 0

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        if value % 8:
            raise ValueError(f"must be a multiple of 8 (got {value}); try {value - value % 8}")
        return value

    @property
    def task(self) -> Task:
        return Task.TXT2IMG

    @property
    def hires_enabled(self) -> bool:
        """Whether a hires second pass follows the first one."""
        return False

    @property
    def refiner_enabled(self) -> bool:
        """A1111: a refiner checkpoint other than "None" takes over at a switch point inside the schedule."""
        return self.refiner_checkpoint not in (None, "", "None", "none") and 0 < self.refiner_switch_at < 1

    @property
    def first_pass_strength(self) -> float:
        """The denoising strength of the first pass (1.0: from pure noise)."""
        return 1.0

    def with_styles(self, styles: StyleDatabase) -> GenerationRequest:
        """A1111: the chosen styles go into the prompts first, so the infotext holds the final prompts (pasting it
        back finds the styles again). Raises StyleError for an unknown style."""
        if not self.styles:
            return self
        return self.model_copy(update=self._styled_fields(styles))

    def _styled_fields(self, styles: StyleDatabase) -> dict[str, Any]:
        return {
            "prompt": styles.apply_styles_to_prompt(self.prompt, self.styles),
            "negative_prompt": styles.apply_negative_styles_to_prompt(self.negative_prompt, self.styles),
            "styles": [],
        }

    def prepare_inputs(self) -> PreparedInputs:
        """The init image and mask at the generation size (none for txt2img)."""
        from modules.processing.inputs import PreparedInputs  # inputs reads request types: imported here

        return PreparedInputs()

    def infotext_parameters(self) -> dict[str, object]:
        """The infotext keys of this request type (A1111's names), besides the common ones."""
        return {}

    def noise_multiplier(self, setting: float) -> float:
        """A1111's img2img noise multiplier (``initial_noise_multiplier``); txt2img adds no noise to an image."""
        return 1.0

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _prompt_text(cls, value: str) -> str:
        return check_prompt_text(value)

    @field_validator("prompt")
    @classmethod
    def _prompt_and_parts(cls, value: str) -> str:
        return check_and_parts(value)

    @model_validator(mode="after")
    def _request_size(self) -> GenerationRequest:
        images = self.n_iter * self.batch_size
        if images > MAX_IMAGES_PER_REQUEST:
            raise ValueError(
                f"n_iter x batch_size: {self.n_iter} x {self.batch_size} = {images} images; "
                f"the limit is {MAX_IMAGES_PER_REQUEST} per request"
            )
        check_step_pixels(self.steps, self.width, self.height, "steps x size")
        return self


class Txt2ImgRequest(GenerationRequest):
    """Text to image, with A1111's hires fix (a second img2img pass at a larger size)."""

    enable_hr: bool = Field(False, description="Hires fix")
    hr_scale: float = Field(2.0, ge=1.0, le=8.0, description="Upscale by")
    hr_resize_x: int = Field(0, ge=0, le=MAX_SIDE, description="Resize width to (0: use the scale)")
    hr_resize_y: int = Field(0, ge=0, le=MAX_SIDE, description="Resize height to (0: use the scale)")
    hr_upscaler: str = Field("Latent", description="Latent mode or image upscaler name")
    hr_second_pass_steps: int = Field(0, ge=0, le=150, description="Hires steps (0: same as the first pass)")
    denoising_strength: float = Field(0.7, ge=0.0, le=1.0, description="Hires denoising strength")
    hr_sampler_name: str | None = Field(None, description="Hires sampler (None: same sampler)")
    hr_scheduler: str | None = Field(None, description="Hires schedule type (None: same)")
    hr_prompt: str = Field("", description="Hires prompt (empty: same prompt)")
    hr_negative_prompt: str = Field("", description="Hires negative prompt (empty: same)")
    hr_checkpoint_name: str | None = Field(None, description="Hires checkpoint (None: same)")

    @property
    def hires_enabled(self) -> bool:
        return self.enable_hr

    def _styled_fields(self, styles: StyleDatabase) -> dict[str, Any]:
        """Hires prompts that are set get the styles too."""
        fields = super()._styled_fields(styles)
        if self.hr_prompt:
            fields["hr_prompt"] = styles.apply_styles_to_prompt(self.hr_prompt, self.styles)
        if self.hr_negative_prompt:
            fields["hr_negative_prompt"] = styles.apply_negative_styles_to_prompt(self.hr_negative_prompt, self.styles)
        return fields

    def infotext_parameters(self) -> dict[str, object]:
        return {"Denoising strength": self.denoising_strength} if self.enable_hr else {}

    @field_validator("hr_prompt", "hr_negative_prompt")
    @classmethod
    def _hires_prompt_text(cls, value: str) -> str:
        return check_prompt_text(value)

    @field_validator("hr_prompt")
    @classmethod
    def _hires_and_parts(cls, value: str) -> str:
        return check_and_parts(value)

    @model_validator(mode="after")
    def _hires_target(self) -> Txt2ImgRequest:
        if not self.enable_hr:
            return self
        width, height = self.hires_size()
        if max(width, height) > MAX_SIDE:
            raise ValueError(
                f"hires fix: the target size {width}x{height} is over {MAX_SIDE} pixels a side "
                f"({self.width}x{self.height} upscaled by {self.hr_scale:g}); lower the scale or the resize"
            )
        check_step_pixels(self.hr_second_pass_steps or self.steps, width, height, "hires steps x hires size")
        return self

    def hires_size(self) -> tuple[int, int]:
        """A1111's target size: "resize to" when set (one side 0 keeps the ratio), else "upscale by"."""
        if self.hr_resize_x == 0 and self.hr_resize_y == 0:
            width, height = int(self.width * self.hr_scale), int(self.height * self.hr_scale)
        elif self.hr_resize_y == 0:
            width, height = self.hr_resize_x, self.hr_resize_x * self.height // self.width
        elif self.hr_resize_x == 0:
            width, height = self.hr_resize_y * self.width // self.height, self.hr_resize_y
        else:
            width, height = self.hr_resize_x, self.hr_resize_y
        return width - width % 8, height - height % 8


class Img2ImgRequest(GenerationRequest):
    """Image to image; with a mask it is inpainting."""

    init_image: Image.Image
    more_init_images: list[Image.Image] = Field(
        default_factory=list,
        description="A1111's init_images after the first: each image is one batch slot (batch size = their count)",
    )
    resize_mode: ResizeMode = ResizeMode.JUST_RESIZE
    denoising_strength: float = Field(0.75, ge=0.0, le=1.0)
    mask: Image.Image | None = None
    mask_blur: int = Field(4, ge=0, le=64)
    inpainting_fill: MaskedContent = MaskedContent.ORIGINAL
    inpaint_full_res: bool = Field(False, description="Inpaint area: only masked")
    inpaint_full_res_padding: int = Field(32, ge=0, le=256)
    inpainting_mask_invert: bool = False
    initial_noise_multiplier: float | None = Field(
        None, ge=0.0, le=1.5, description="Scales the noise added to the init image (None: the setting)"
    )
    image_cfg_scale: float | None = Field(
        None, ge=0.0, le=100.0, description="instruct-pix2pix image guidance (None: 1.0); other models ignore it"
    )

    @model_validator(mode="after")
    def _one_slot_per_image(self) -> Img2ImgRequest:
        """A1111: one init image fills the whole batch; several are one batch slot each, and then the batch size
        is their count (more images than the batch size is an error, as in A1111)."""
        count = 1 + len(self.more_init_images)
        if count > 1:
            if count > self.batch_size:
                raise ValueError(f"bad number of images passed: {count}; expecting {self.batch_size} or less")
            object.__setattr__(self, "batch_size", count)
        return self

    @property
    def is_inpaint(self) -> bool:
        return self.mask is not None

    @property
    def task(self) -> Task:
        return Task.INPAINT if self.is_inpaint else Task.IMG2IMG

    @property
    def first_pass_strength(self) -> float:
        return self.denoising_strength

    def prepare_inputs(self) -> PreparedInputs:
        from modules.processing.inputs import prepare_img2img_inputs  # inputs reads request types: imported here

        return prepare_img2img_inputs(self)

    def noise_multiplier(self, setting: float) -> float:
        return setting if self.initial_noise_multiplier is None else self.initial_noise_multiplier

    def infotext_parameters(self) -> dict[str, object]:
        parameters: dict[str, object] = {"Denoising strength": self.denoising_strength}
        if self.is_inpaint:
            parameters["Mask blur"] = self.mask_blur
        return parameters
