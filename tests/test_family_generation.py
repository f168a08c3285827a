"""Every kind of the SD family generates through processing (tiny single files, no sidecar, detection alone);
instruct-pix2pix with the Image CFG scale (request, API field, infotext)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from modules.api.models import Img2ImgBody
from modules.api.translate import TranslationContext, translate_img2img
from modules.backends.diffusers_backend import DiffusersBackend
from modules.devices import MemoryPolicy
from modules.models.checkpoint_writer import write_single_file
from modules.models.detection import ModelArchitecture
from modules.models.hashing import HashCache
from modules.models.manager import ModelManager
from modules.models.registry import CheckpointRegistry
from modules.models.service import ModelService
from modules.options import Options
from modules.paths import DataPaths
from modules.processing.processing import ProcessingContext, ProcessingError, process
from modules.tiny_model import build_tiny_pipeline
from tests.helpers import pixels, tiny_img2img, tiny_request

KINDS = (
    ModelArchitecture.SD1_PIX2PIX,
    ModelArchitecture.SD2,
    ModelArchitecture.SD2_INPAINT,
    ModelArchitecture.SDXL,
    ModelArchitecture.SDXL_INPAINT,
    ModelArchitecture.SDXL_REFINER,
)


@pytest.fixture(scope="module")
def family_context(tmp_path_factory, tiny_configs) -> ProcessingContext:
    paths = DataPaths.create(tmp_path_factory.mktemp("family"))
    paths.ensure()
    for architecture in KINDS:
        pipeline = build_tiny_pipeline(architecture=architecture)
        write_single_file(pipeline, paths.checkpoints_dir / f"{architecture.value}.safetensors", with_config=False)
    registry = CheckpointRegistry(paths.checkpoint_dirs, HashCache(paths.cache_file))
    registry.refresh()
    manager = ModelManager(registry, MemoryPolicy.cpu(), tiny_configs)
    return ProcessingContext(models=ModelService(manager), backend=DiffusersBackend(), options=Options(), paths=paths)


def mask_image() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    return mask


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "task"),
    [
        (ModelArchitecture.SD2, "txt2img"),
        (ModelArchitecture.SD2_INPAINT, "inpaint"),
        (ModelArchitecture.SD2_INPAINT, "img2img"),
        (ModelArchitecture.SDXL, "txt2img"),
        (ModelArchitecture.SDXL_INPAINT, "inpaint"),
        (ModelArchitecture.SDXL_REFINER, "txt2img"),
        (ModelArchitecture.SDXL_REFINER, "img2img"),
        (ModelArchitecture.SD1_PIX2PIX, "img2img"),
    ],
)
def test_each_kind_generates(family_context, kind, task) -> None:
    fields = {"checkpoint": kind.value, "save_images": False, "save_grid": False}
    if task == "txt2img":
        request = tiny_request(**fields)
    else:
        request = tiny_img2img(**fields, mask=mask_image() if task == "inpaint" else None)
    result = process(request, family_context)
    assert len(result.images) == 1 and result.images[0].size == (64, 64)
    assert pixels(result.images[0]).std() > 0
    assert f"Model: {kind.value}," in result.infotexts[0]


@pytest.mark.slow
def test_pix2pix_image_cfg_scale_changes_the_image_and_is_in_the_infotext(family_context) -> None:
    def run(scale: float | None):
        request = tiny_img2img(checkpoint="sd1-pix2pix", image_cfg_scale=scale, save_images=False, save_grid=False)
        return process(request, family_context)

    weak, strong, unset = run(1.0), run(2.5), run(None)
    assert "Image CFG scale: 2.5" in strong.infotexts[0]
    assert "Image CFG scale" not in unset.infotexts[0]  # A1111 writes it only when set
    assert np.abs(pixels(weak.images[0]) - pixels(strong.images[0])).max() > 0
    assert np.array_equal(pixels(weak.images[0]), pixels(unset.images[0]))  # None is A1111's plain CFG (1.0)
    assert "Denoising strength: 1.0" in strong.infotexts[0]  # the pipeline denoises from noise, and says so


def test_pix2pix_refuses_txt2img_and_masks(family_context) -> None:
    with pytest.raises(ProcessingError, match="edits an image"):
        process(tiny_request(checkpoint="sd1-pix2pix", save_images=False, save_grid=False), family_context)
    with pytest.raises(ProcessingError, match="edits an image"):
        request = tiny_img2img(checkpoint="sd1-pix2pix", mask=mask_image(), save_images=False, save_grid=False)
        process(request, family_context)


def test_image_cfg_scale_is_a_supported_api_field(family_context) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    context = TranslationContext(family_context.options, family_context.models.manager.registry)
    translation = translate_img2img(Img2ImgBody(init_images=[encoded], image_cfg_scale=1.7), context)
    assert translation.request.image_cfg_scale == 1.7
    assert not any("image_cfg_scale" in item for item in translation.unsupported)


def test_img2img_tab_sends_the_image_cfg_scale() -> None:
    from modules.ui.handlers import build_img2img_request

    request = build_img2img_request({"init_image": Image.new("RGB", (64, 64)), "image_cfg_scale": 1.25})
    assert request.image_cfg_scale == 1.25


def lcm_pair(context, **fields):
    """Two LCM runs at CFG 1 that differ only in the negative prompt."""
    base = {"sampler_name": "LCM", "cfg_scale": 1.0, "steps": 4, "save_images": False, "save_grid": False}
    first = process(tiny_request(**base, **fields, negative_prompt="blurry"), context)
    second = process(tiny_request(**base, **fields, negative_prompt="sharp, detailed"), context)
    return first, second


def test_lcm_sampler_runs_at_cfg_1(context) -> None:
    """Turbo / Lightning / LCM settings: LCM sampler, CFG 1 (no unconditional pass: the negative prompt is
    unused), few steps."""
    first, second = lcm_pair(context)
    assert "Sampler: LCM" in first.infotexts[0] and "CFG scale: 1.0" in first.infotexts[0]
    assert pixels(first.images[0]).std() > 0
    assert np.array_equal(pixels(first.images[0]), pixels(second.images[0]))


@pytest.mark.slow
def test_lcm_sampler_runs_at_cfg_1_on_sdxl(family_context) -> None:
    first, second = lcm_pair(family_context, checkpoint="sdxl")
    assert "Model: sdxl," in first.infotexts[0]
    assert np.array_equal(pixels(first.images[0]), pixels(second.images[0]))
