"""An SDXL ControlNet (``ControlNetModel.from_unet`` on the tiny SDXL UNet) on both backends, with SDXL's added
conditions; a ControlNet of the other family is an error naming both models."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules.backends.registry import create_backend
from modules.controlnet.models import ControlNetLibrary
from modules.models.detection import ModelArchitecture
from modules.models.hashing import HashCache
from modules.models.service import ModelService
from modules.options import Options
from modules.paths import DataPaths
from modules.processing.processing import ProcessingContext, ProcessingError
from modules.scripts.builtin.controlnet import ControlNetScript
from modules.scripts.runner import ScriptCatalogue
from modules.tiny_model import build_tiny_controlnet, build_tiny_pipeline, write_diffusers
from tests.helpers import make_manager, pixels, tiny_request

XL_NAME = "tiny_xl_controlnet"
SD1_NAME = "tiny_sd1_controlnet"


def encoded(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def control_image() -> Image.Image:
    array = np.zeros((64, 64, 3), dtype=np.uint8)
    array[12:44, 20:52] = (30, 200, 90)
    return Image.fromarray(array)


def unit(model: str, **fields) -> dict:
    return {"enabled": True, "model": model, "module": "none", "image": encoded(control_image()), **fields}


@pytest.fixture(scope="module")
def xl_context(tmp_path_factory) -> ProcessingContext:
    paths = DataPaths.create(tmp_path_factory.mktemp("data-xl"))
    paths.ensure()
    write_diffusers(build_tiny_pipeline(architecture=ModelArchitecture.SDXL), paths.checkpoints_dir / "tiny_xl")
    manager = make_manager(paths)
    return ProcessingContext(
        models=ModelService(manager), backend=create_backend("diffusers"), options=Options(), paths=paths
    )


@pytest.fixture(scope="module")
def library(context, xl_context, tmp_path_factory) -> ControlNetLibrary:
    folder = tmp_path_factory.mktemp("ControlNet")
    build_tiny_controlnet(xl_context.models.ensure_loaded().pipeline.unet, seed=4).save_pretrained(folder / XL_NAME)
    build_tiny_controlnet(context.models.ensure_loaded().pipeline.unet, seed=4).save_pretrained(folder / SD1_NAME)
    library = ControlNetLibrary([folder], HashCache(folder / "cache.json"), Path("configs"), cache_size=2)
    library.refresh()
    return library


def generate(context: ProcessingContext, library: ControlNetLibrary, units: list[dict], backend: str) -> np.ndarray:
    context = ProcessingContext(
        models=context.models, backend=create_backend(backend), options=context.options, paths=context.paths
    )
    catalogue = ScriptCatalogue([ControlNetScript(library, lambda: 2)])
    tab = catalogue.tab(False)
    script = tab.always_on[0]
    bound = tab.bind(always_on={id(script): tab.arguments(script, units)})
    return pixels(bound.execute(tiny_request(steps=2), context).images[0])


@pytest.mark.parametrize("backend", ["diffusers", "original"])
def test_an_sdxl_controlnet_acts_on_an_sdxl_checkpoint_and_weight_0_is_the_plain_image(xl_context, library, backend):
    plain = generate(xl_context, library, [], backend)
    controlled = generate(xl_context, library, [unit(XL_NAME)], backend)
    assert not np.array_equal(controlled, plain)
    assert np.array_equal(generate(xl_context, library, [unit(XL_NAME, weight=0)], backend), plain)


@pytest.mark.parametrize("backend", ["diffusers", "original"])
def test_a_controlnet_of_the_other_family_is_an_error_naming_both_models(context, xl_context, library, backend):
    xl_title, sd1_title = library.find(XL_NAME).title, library.find(SD1_NAME).title
    with pytest.raises(ProcessingError) as raised:
        generate(xl_context, library, [unit(SD1_NAME)], backend)
    assert f"ControlNet model {sd1_title} is for" in str(raised.value) and "checkpoint tiny_xl is" in str(raised.value)
    with pytest.raises(ProcessingError) as raised:
        generate(context, library, [unit(XL_NAME)], backend)
    assert f"ControlNet model {xl_title} is for" in str(raised.value) and "checkpoint tiny is" in str(raised.value)


def test_the_diffusers_backend_equals_diffusers_sdxl_controlnet_pipeline(xl_context, library):
    """Same embeddings and pooled embeddings (captured from the backend's UNet calls), same noise and scheduler."""
    import torch
    from diffusers import StableDiffusionXLControlNetPipeline

    from modules.backends.base import GenerationPlan
    from modules.backends.diffusers_backend.backend import initial_noise
    from modules.backends.diffusers_backend.schedulers import build_scheduler
    from modules.models.manager import Task

    model = xl_context.models.ensure_loaded()
    request = tiny_request(steps=2, cfg_scale=5.0)
    calls: list[dict] = []
    unet = model.pipeline.unet
    hook = unet.register_forward_pre_hook(lambda _, args, kwargs: calls.append(kwargs), with_kwargs=True)
    try:
        catalogue = ScriptCatalogue([ControlNetScript(library, lambda: 1)])
        tab = catalogue.tab(False)
        script = tab.always_on[0]
        bound = tab.bind(always_on={id(script): tab.arguments(script, [unit(XL_NAME, weight=0.8)])})
        result = pixels(bound.execute(request, xl_context).images[0])
    finally:
        hook.remove()
    hidden, pooled = calls[0]["encoder_hidden_states"], calls[0]["added_cond_kwargs"]["text_embeds"]
    plan = GenerationPlan(Task.TXT2IMG, [request.prompt], [""], [request.seed], 2, 5.0, 64, 64, "Euler", "Automatic")
    latents, _ = initial_noise(model.pipeline_view(Task.TXT2IMG), plan)
    pipeline = model.pipeline
    reference = StableDiffusionXLControlNetPipeline(
        vae=pipeline.vae,
        text_encoder=pipeline.text_encoder,
        text_encoder_2=pipeline.text_encoder_2,
        tokenizer=pipeline.tokenizer,
        tokenizer_2=pipeline.tokenizer_2,
        unet=unet,
        controlnet=library.load(XL_NAME)[1],
        scheduler=build_scheduler(model.scheduler_config, "Euler", "Automatic", noise_seed=request.seed),
        add_watermarker=False,
    )
    reference.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        expected = reference(
            prompt_embeds=hidden[1:],
            negative_prompt_embeds=hidden[:1],
            pooled_prompt_embeds=pooled[1:],
            negative_pooled_prompt_embeds=pooled[:1],
            image=control_image(),
            num_inference_steps=2,
            guidance_scale=5.0,
            latents=latents,
            width=64,
            height=64,
            controlnet_conditioning_scale=0.8,
        ).images[0]
    assert np.array_equal(result, pixels(expected))
