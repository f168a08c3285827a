"""Request and response bodies with AUTOMATIC1111's field names, types and defaults (``/sdapi/v1``).

Unknown fields are ignored (as A1111 does); a wrong type is a 422 naming the field. Value ranges are
checked later, when the body becomes a typed Easel request (a bad value is a 400 with the field named).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


class GenerationBody(ApiModel):
    """Fields shared by txt2img and img2img (A1111 1.10 ``StableDiffusionProcessing`` names)."""

    prompt: str | None = ""
    negative_prompt: str | None = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    sampler_index: str = Field("Euler", description="Old name of sampler_name; used when sampler_name is empty")
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    comments: dict[str, Any] | None = None
    force_task_id: str | None = Field(None, description="Job id to use (then poll /internal/progress with it)")
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = Field(None, description="Infotext whose parameters fill the fields not given")


class Txt2ImgBody(GenerationBody):
    """POST /sdapi/v1/txt2img (A1111 ``StableDiffusionTxt2ImgProcessingAPI``)."""

    enable_hr: bool = False
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    firstpass_image: str | None = None


class Img2ImgBody(GenerationBody):
    """POST /sdapi/v1/img2img (A1111 ``StableDiffusionImg2ImgProcessingAPI``)."""

    init_images: list[str] | None = None
    resize_mode: int = 0
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = Field(False, description="Keep init_images in the response's parameters")
    denoising_strength: float | None = 0.75


class GenerationResponse(ApiModel):
    images: list[str] | None = Field(None, description="Base64 PNGs, each with its infotext")
    parameters: dict[str, Any]
    info: str = Field(description="JSON string: seeds, infotexts, model, unsupported_fields, ...")


class PngInfoBody(ApiModel):
    image: str = Field(description="Base64 image (a data: URI prefix is accepted)")


class PngInfoResponse(ApiModel):
    info: str
    items: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)


class ProgressState(ApiModel):
    skipped: bool = False
    interrupted: bool = False
    stopping_generation: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class ProgressResponse(ApiModel):
    progress: float
    eta_relative: float
    state: ProgressState
    current_image: str | None = None
    textinfo: str | None = None
    current_task: str | None = None


class InternalProgressBody(ApiModel):
    id_task: str | None = None
    id_live_preview: int = -1
    live_preview: bool = True


class InternalProgressResponse(ApiModel):
    active: bool
    queued: bool
    completed: bool
    progress: float | None = None
    eta: float | None = None
    live_preview: str | None = None
    id_live_preview: int | None = None
    textinfo: str | None = None
    queue_position: int | None = None
    queue_total: int | None = None


class PendingTasksResponse(ApiModel):
    size: int
    tasks: list[str]


class SamplerItem(ApiModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(ApiModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float = -1.0
    need_inner_model: bool = False


class UpscalerItem(ApiModel):
    name: str
    model_name: str | None = None
    model_path: str | None = None
    model_url: str | None = None
    scale: float | None = None


class LatentUpscaleModeItem(ApiModel):
    name: str


class CheckpointItem(ApiModel):
    title: str
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str
    config: str | None = None
    family: str | None = Field(None, description="Model family key (sd1, sd2, sdxl, sdxl-refiner, sd3, flux, ...)")
    family_name: str | None = Field(None, description="Model family as shown in the UI")


class VaeItem(ApiModel):
    model_name: str
    filename: str


class FaceRestorerItem(ApiModel):
    name: str
    cmd_dir: str | None = None


class RealesrganItem(ApiModel):
    name: str
    path: str | None = None
    scale: int | None = None


class PromptStyleItem(ApiModel):
    name: str
    prompt: str | None = None
    negative_prompt: str | None = None


class LoraItem(ApiModel):
    name: str
    alias: str
    path: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class EmbeddingItem(ApiModel):
    step: int | None = Field(None, description="Training steps, when the file says")
    sd_checkpoint: str | None = Field(None, description="Hash of the checkpoint it was trained on, when the file says")
    sd_checkpoint_name: str | None = Field(None, description="Name of that checkpoint, when the file says")
    shape: int = Field(description="Length of each vector (SDXL: both encoders' widths added, as A1111)")
    vectors: int = Field(description="Number of vectors")


class EmbeddingsResponse(ApiModel):
    loaded: dict[str, EmbeddingItem] = Field(default_factory=dict, description="Usable with the loaded model")
    skipped: dict[str, EmbeddingItem] = Field(default_factory=dict, description="Not usable with the loaded model")


class ScriptsList(ApiModel):
    txt2img: list[str] = Field(default_factory=list)
    img2img: list[str] = Field(default_factory=list)


class ScriptArg(ApiModel):
    label: str | None = None
    value: Any = None
    minimum: Any = None
    maximum: Any = None
    step: Any = None
    choices: list[str] | None = None


class ScriptInfo(ApiModel):
    name: str | None = None
    is_alwayson: bool | None = None
    is_img2img: bool | None = None
    args: list[ScriptArg] = Field(default_factory=list)


class ExtensionItem(ApiModel):
    name: str
    remote: str = ""
    branch: str = ""
    commit_hash: str = ""
    version: str = ""
    commit_date: str = Field("0", description="HEAD's commit time in unix seconds, as a string (A1111)")
    enabled: bool = True


class ExtrasBody(ApiModel):
    """Shared fields of the extras routes (A1111 ``ExtrasBaseRequest``)."""

    resize_mode: int = Field(0, description="0: scale by upscaling_resize, 1: to upscaling_resize_w x _h")
    show_extras_results: bool = True
    gfpgan_visibility: float = 0.0
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.0
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0
    upscale_first: bool = False


class ExtrasSingleImageBody(ExtrasBody):
    image: str = ""


class ExtrasSingleImageResponse(ApiModel):
    html_info: str
    image: str | None = None


class FileData(ApiModel):
    data: str
    name: str = ""


class ExtrasBatchImagesBody(ExtrasBody):
    imageList: list[FileData] = Field(default_factory=list)  # A1111 spells it so


class ExtrasBatchImagesResponse(ApiModel):
    html_info: str
    images: list[str]
