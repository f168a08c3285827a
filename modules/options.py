"""User settings persisted in config.json, with A1111's key names."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

logger = logging.getLogger(__name__)

# The image formats saving writes (modules/processing/saving.py maps them to Pillow's; A1111 offers the same ones
# with their infotext: PNG chunk, EXIF UserComment for JPEG/WEBP/AVIF, GIF comment).
IMAGE_FORMAT_NAMES = ("png", "jpg", "jpeg", "webp", "avif", "gif")
ReplaceAction = Literal["Replace", "Add number suffix"]
# Those of A1111's sampler settings that have no request field of their own: they reach the backend as they are.
SCHEDULE_AND_GUIDANCE_OPTION_NAMES: tuple[str, ...] = (
    "s_min_uncond",
    "s_min_uncond_all",
    "skip_early_cond",
    "sigma_min",
    "sigma_max",
    "rho",
    "beta_dist_alpha",
    "beta_dist_beta",
    "uni_pc_variant",
    "uni_pc_skip_type",
    "uni_pc_order",
    "uni_pc_lower_order_final",
    "img2img_extra_noise",
)
# A1111's "Sampler parameters" settings: a request may override them (API override_settings), only for itself.
SAMPLER_OPTION_NAMES: tuple[str, ...] = (
    "randn_source",
    "eta_noise_seed_delta",
    "eta_ancestral",
    "eta_ddim",
    "s_churn",
    "s_tmin",
    "s_tmax",
    "s_noise",
    "always_discard_next_to_last_sigma",
    "sgm_noise_multiplier",
    "use_old_karras_scheduler_sigmas",
    *SCHEDULE_AND_GUIDANCE_OPTION_NAMES,
)
REPLACE_ACTIONS = get_args(ReplaceAction)


class Options(BaseModel):
    """Settings a user changes in the Settings tab (A1111 names, so config.json files carry over)."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    sd_model_checkpoint: str = Field("", description="Checkpoint to load at start (title or file name)")
    samples_save: bool = Field(True, description="Always save all generated images")
    samples_format: str = Field("png", description="File format for images")
    samples_filename_pattern: str = Field("", description="Images filename pattern")
    save_images_add_number: bool = Field(True, description="Add number to filename when saving")
    save_images_replace_action: ReplaceAction = Field("Replace", description="Saving the image to an existing file")
    grid_save: bool = Field(True, description="Always save all generated image grids")
    grid_format: str = Field("png", description="File format for grids")
    grid_extended_filename: bool = Field(
        False, description="Add extended info (seed, prompt) to filename when saving grid"
    )
    jpeg_quality: int = Field(80, ge=1, le=100, description="Quality for saved jpeg and avif images")
    webp_lossless: bool = Field(False, description="Use lossless compression for webp images")
    return_grid: bool = Field(True, description="Show grid in gallery")
    outdir_samples: str = Field("", description="Output folder for images; if empty, per-tab folders")
    outdir_txt2img_samples: str = Field("outputs/txt2img-images", description="Output folder for txt2img images")
    outdir_img2img_samples: str = Field("outputs/img2img-images", description="Output folder for img2img images")
    outdir_extras_samples: str = Field("outputs/extras-images", description="Output folder for extras images")
    outdir_txt2img_grids: str = Field("outputs/txt2img-grids", description="Output folder for txt2img grids")
    outdir_img2img_grids: str = Field("outputs/img2img-grids", description="Output folder for img2img grids")
    outdir_init_images: str = Field(
        "outputs/init-images", description="Directory for saving init images when using img2img"
    )
    save_init_img: bool = Field(False, description="Save init images when using img2img")
    save_to_dirs: bool = Field(True, description="Save images to a subdirectory")
    grid_save_to_dirs: bool = Field(True, description="Save grids to a subdirectory")
    directories_filename_pattern: str = Field("[date]", description="Directory name pattern")
    directories_max_prompt_words: int = Field(8, ge=1, le=20, description="Max prompt words for [prompt_words] pattern")
    enable_pnginfo: bool = Field(True, description="Write infotext to metadata of the generated image")
    save_txt: bool = Field(False, description="Create a text file with infotext next to every generated image")
    live_previews_enable: bool = Field(True, description="Show live previews of the created image")
    show_progress_type: Literal["Full", "Approx NN", "Approx cheap", "TAESD"] = Field(
        "Approx cheap", description="Live preview display mode (Approx NN and TAESD read models/VAE-approx)"
    )
    show_progress_every_n_steps: int = Field(5, ge=-1, le=32, description="Live preview every N sampling steps")
    sd_vae: str = Field("Automatic", description="SD VAE: Automatic, None, or a file from models/VAE")
    CLIP_stop_at_last_layers: int = Field(1, ge=1, le=12, description="Clip skip")
    default_sampler: str = Field("DPM++ 2M", description="Default sampler")
    default_scheduler: str = Field("Automatic", description="Default schedule type")
    default_steps: int = Field(20, ge=1, le=150, description="Default sampling steps")
    default_cfg_scale: float = Field(7.0, ge=1.0, le=30.0, description="Default CFG scale")
    default_width: int = Field(512, ge=64, le=2048, multiple_of=8, description="Default width")
    default_height: int = Field(512, ge=64, le=2048, multiple_of=8, description="Default height")
    sd_sampling_backend: str = Field(
        "",
        description="Sampler backend: original (A1111's samplers and noise) or diffusers (its schedulers); "
        "empty: the --backend flag",
    )
    # The ControlNet extension's settings (its names).
    control_net_unit_count: int = Field(
        3, ge=1, le=10, description="ControlNet: number of units (applies after a restart)"
    )
    control_net_model_cache_size: int = Field(
        2, ge=1, le=10, description="ControlNet: models kept loaded (least recently used ones leave)"
    )
    # A1111's "Sampler parameters" section (same names, defaults and meaning).
    randn_source: Literal["GPU", "CPU", "NV"] = Field(
        "GPU", description="Random number generator source (NV: NVIDIA's GPU noise on any device)"
    )
    eta_noise_seed_delta: int = Field(0, ge=0, description="Eta noise seed delta (ENSD; NovelAI uses 31337)")
    eta_ancestral: float = Field(1.0, ge=0.0, le=1.0, description="Eta for k-diffusion samplers (noise multiplier)")
    eta_ddim: float = Field(0.0, ge=0.0, le=1.0, description="Eta for DDIM (noise multiplier)")
    s_churn: float = Field(0.0, ge=0.0, le=100.0, description="sigma churn")
    s_tmin: float = Field(0.0, ge=0.0, le=10.0, description="sigma tmin")
    s_tmax: float = Field(0.0, ge=0.0, le=999.0, description="sigma tmax (0 = inf)")
    s_noise: float = Field(1.0, ge=0.0, le=1.1, description="sigma noise")
    always_discard_next_to_last_sigma: bool = Field(False, description="Always discard next-to-last sigma")
    sgm_noise_multiplier: bool = Field(
        False, description="SGM noise multiplier (scale the initial noise by sqrt(1 + sigma_max^2), as SDXL's code)"
    )
    use_old_karras_scheduler_sigmas: bool = Field(False, description="Use the old Karras scheduler sigmas (0.1 to 10)")
    s_min_uncond: float = Field(
        0.0, ge=0.0, le=15.0, description="Negative Guidance minimum sigma (NGMS: skip the negative prompt below it)"
    )
    s_min_uncond_all: bool = Field(False, description="Negative Guidance minimum sigma all steps")
    skip_early_cond: float = Field(
        0.0, ge=0.0, le=1.0, description="Ignore negative prompt during early sampling (fraction of the steps)"
    )
    sigma_min: float = Field(0.0, ge=0.0, description="Schedule min sigma (0 = the model's)")
    sigma_max: float = Field(0.0, ge=0.0, description="Schedule max sigma (0 = the model's)")
    rho: float = Field(0.0, ge=0.0, description="Schedule rho (0 = the schedule's default)")
    beta_dist_alpha: float = Field(0.6, ge=0.01, le=1.0, description="Beta scheduler alpha")
    beta_dist_beta: float = Field(0.6, ge=0.01, le=1.0, description="Beta scheduler beta")
    uni_pc_variant: Literal["bh1", "bh2", "vary_coeff"] = Field("bh1", description="UniPC variant")
    uni_pc_skip_type: Literal["time_uniform", "time_quadratic", "logSNR"] = Field(
        "time_uniform", description="UniPC skip type"
    )
    uni_pc_order: int = Field(3, ge=1, le=50, description="UniPC order (must be < sampling steps)")
    uni_pc_lower_order_final: bool = Field(True, description="UniPC lower order final")
    img2img_extra_noise: float = Field(
        0.0, ge=0.0, le=1.0, description="Extra noise multiplier for img2img and hires fix"
    )
    emphasis: Literal["Original", "No norm", "None"] = Field(
        "Original", description="Emphasis: how (word:1.3) weights act on the text encoder's output"
    )
    face_restoration_model: str = Field("CodeFormer", description="Face restoration model (CodeFormer or GFPGAN)")
    code_former_weight: float = Field(0.5, ge=0.0, le=1.0, description="CodeFormer weight (0 = most effect)")
    face_restoration_visibility: float = Field(1.0, ge=0.0, le=1.0, description="Face restoration visibility")
    face_detector: Literal["YuNet", "RetinaFace"] = Field(
        "YuNet",
        description="Face detector for face restoration (RetinaFace reads "
        "detection_mobilenet0.25_Final.pth from models/GFPGAN or models/face-detection)",
    )
    ESRGAN_tile: int = Field(192, ge=0, le=512, description="Tile size for upscalers (0 = no tiling)")
    ESRGAN_tile_overlap: int = Field(8, ge=0, le=48, description="Tile overlap for upscalers, in pixels")
    initial_noise_multiplier: float = Field(1.0, ge=0.0, le=1.5, description="Noise multiplier for img2img")
    img2img_fix_steps: bool = Field(
        False, description="With img2img, do exactly the amount of steps the slider specifies"
    )
    # Settings > Compute (modules/compute): how loaded models are prepared for speed.
    compute_compile_unet: bool = Field(False, description="Compile the UNet with torch.compile (reloads the model)")
    compute_compile_vae: bool = Field(False, description="Compile the VAE decoder with torch.compile (reloads)")
    compute_compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile mode (reduce-overhead records CUDA graphs)"
    )
    compute_compile_dynamic: bool = Field(
        True, description="Compile for any image size (no recompile when the size changes; else one graph per size)"
    )
    compute_compile_warmup: bool = Field(
        True, description="Compile while the model loads (a warm-up generation), not in the first job"
    )
    compute_channels_last: bool = Field(False, description="channels_last memory format (--opt-channelslast)")
    compute_fuse_qkv: bool = Field(False, description="Fused QKV projections in attention layers (reloads)")
    compute_cudnn_benchmark: bool = Field(False, description="cudnn benchmark (autotunes convolutions per size)")
    compute_tf32: bool = Field(True, description="Allow TF32 matmuls and convolutions on Ampere and newer GPUs")
    fp8_storage: Literal["Disable", "Enable for SDXL", "Enable"] = Field(
        "Disable", description="FP8 weight: store the UNet's weights in FP8, computed in half precision (reloads)"
    )
    token_merging_ratio: float = Field(
        0.0, ge=0.0, le=0.9, description="Token merging ratio (0=disable, higher=faster, changes the image)"
    )
    deepcache_interval: int = Field(
        1, ge=1, le=10, description="DeepCache interval (1=disable; N reuses deep UNet features for N-1 of N steps)"
    )
    api_enable_requests: bool = Field(
        False, description="API: fetch input images given as http:// or https:// URLs (never local addresses)"
    )
    api_max_body_mb: int = Field(64, ge=1, le=4096, description="API: largest request body, in MB (larger: 413)")
    queue_max_jobs_per_user: int = Field(
        0, ge=0, le=100_000, description="Queue: most waiting jobs per login (0: no limit; more: API 429, a UI message)"
    )
    # User interface (A1111 keys; the browser reads them through the page's `opts`).
    quicksettings_list: list[str] = Field(
        ["sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"],
        description="Quicksettings list (shown at the top of the page instead of the Settings tab; after a restart)",
    )
    theme: Literal["Follow the browser", "Light", "Dark"] = Field(
        "Follow the browser", description="Colour theme of the page (?__theme=dark or light in the address wins)"
    )
    localization: str = Field("None", description="Localization (a file of localizations/, after a page reload)")
    keyedit_precision_attention: float = Field(
        0.1, ge=0.01, le=0.2, description="Precision for (attention:1.1) when editing the prompt with Ctrl+up/down"
    )
    keyedit_precision_extra: float = Field(
        0.05,
        ge=0.01,
        le=0.2,
        description="Precision for <extra networks:0.9> when editing the prompt with Ctrl+up/down",
    )
    keyedit_delimiters: str = Field(
        r".,\/!?%^*;:{}=`~() ", description="Word delimiters when editing the prompt with Ctrl+up/down"
    )
    keyedit_delimiters_whitespace: list[Literal["Tab", "Carriage Return", "Line Feed"]] = Field(
        ["Tab", "Carriage Return", "Line Feed"], description="Ctrl+up/down whitespace delimiters"
    )
    js_modal_lightbox: bool = Field(True, description="Full page image viewer: enable")
    js_modal_lightbox_initially_zoomed: bool = Field(
        True, description="Full page image viewer: show images zoomed in by default"
    )
    browser_notifications: bool = Field(
        False, description="Show a browser notification when a job ends while the page is in the background"
    )
    # Secret: left out of model_dump() (so out of the API and any dump), hidden from repr, written by save() only.
    hf_token: str = Field("", description="Hugging Face token (gated or private models)", exclude=True, repr=False)

    @field_validator("samples_format", "grid_format", mode="before")
    @classmethod
    def known_image_format(cls, value: object) -> object:
        """A1111 takes any extension; Easel takes the formats it can write with their infotext ("JPG" -> "jpg")."""
        if not isinstance(value, str):
            return value
        normalized = value.strip().lower().lstrip(".")
        if normalized not in IMAGE_FORMAT_NAMES:
            raise ValueError(f"unknown image format {value!r}; use one of {', '.join(IMAGE_FORMAT_NAMES)}")
        return normalized

    @classmethod
    def load(cls, path: Path) -> Options:
        """Read config.json; a missing file gives defaults, an unreadable one is reported and defaults are used,
        and a value that fails validation (a format Easel cannot write ...) is reported and takes its default."""
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, OSError) as error:
            logger.error("settings unreadable path=%s error=%s; using defaults", path, error)
            return cls()
        if not isinstance(data, dict):
            logger.error("settings unreadable path=%s error=not a JSON object; using defaults", path)
            return cls()
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            invalid = {str(item["loc"][0]) for item in error.errors() if item.get("loc")}
            logger.error("settings invalid path=%s keys=%s error=%s; using their defaults", path, invalid, error)
            return cls.model_validate({key: value for key, value in data.items() if key not in invalid})

    def save(self, path: Path) -> None:
        """Write atomically, keeping keys this version does not know (extensions' settings)."""
        existing: dict = {}
        if path.exists():
            try:
                existing = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, OSError):
                existing = {}
        existing.update(self.model_dump())
        existing.pop("hf_token", None)
        if self.hf_token:
            existing["hf_token"] = self.hf_token
        write_json_atomic(path, existing, mode=0o600 if self.hf_token else None)


def write_json_atomic(path: Path, data: dict, mode: int | None = None) -> None:
    """Write JSON through a temporary file, fsync and rename, so a crash (or a power cut) never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=4, ensure_ascii=False)
            file.flush()
            os.fsync(file.fileno())
        if mode is not None:
            os.chmod(temp_name, mode)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
