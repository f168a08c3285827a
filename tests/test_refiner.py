"""A1111's SDXL refiner: the base model samples up to the switch point, the refiner continues the same latents
(tiny SDXL base and refiner single files, detection alone)."""

from __future__ import annotations

import numpy as np
import pytest

from modules.api.models import Txt2ImgBody
from modules.api.translate import TranslationContext, translate_txt2img
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
from tests.helpers import StopAtStep, pixels, tiny_request


class RecordingBackend(DiffusersBackend):
    """The diffusers backend, keeping each call's plan and output."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, object]] = []

    def generate(self, model, plan, progress):
        output = super().generate(model, plan, progress)
        self.calls.append((plan, output))
        return output


@pytest.fixture(scope="module")
def refiner_context(tmp_path_factory, tiny_configs) -> ProcessingContext:
    paths = DataPaths.create(tmp_path_factory.mktemp("refiner"))
    paths.ensure()
    for architecture in (ModelArchitecture.SDXL, ModelArchitecture.SDXL_REFINER):
        pipeline = build_tiny_pipeline(architecture=architecture)
        write_single_file(pipeline, paths.checkpoints_dir / f"{architecture.value}.safetensors", with_config=False)
    registry = CheckpointRegistry(paths.checkpoint_dirs, HashCache(paths.cache_file))
    registry.refresh()
    manager = ModelManager(registry, MemoryPolicy.cpu(), tiny_configs)
    manager.load("sdxl")
    return ProcessingContext(models=ModelService(manager), backend=RecordingBackend(), options=Options(), paths=paths)


def request(**fields):
    return tiny_request(sampler_name="Euler", steps=4, save_images=False, save_grid=False, **fields)


@pytest.mark.slow
def test_first_part_equals_a_base_run_stopped_at_the_switch(refiner_context) -> None:
    backend: RecordingBackend = refiner_context.backend
    backend.calls.clear()
    refined = process(request(refiner_checkpoint="sdxl-refiner", refiner_switch_at=0.5), refiner_context)
    (base_plan, base_latents), (refiner_plan, _) = backend.calls
    assert base_plan.denoising_end == 0.5 and refiner_plan.denoising_start == 0.5
    assert refiner_plan.init_image is base_latents
    stopped = process(request(), refiner_context, control=StopAtStep(2))
    with refiner_context.models.use("sdxl") as scope:
        first_part = refiner_context.backend.decode(scope.model, base_latents)
    assert np.array_equal(pixels(first_part[0]), pixels(stopped.images[0]))
    infotext = refined.infotexts[0]
    refiner_hash = refiner_context.models.registry.hash_of(refiner_context.models.registry.find("sdxl-refiner"))
    assert f"Refiner: sdxl-refiner [{refiner_hash[:10]}]" in infotext and "Refiner switch at: 0.5" in infotext
    assert "Model: sdxl," in infotext
    whole = process(request(), refiner_context)
    assert np.abs(pixels(refined.images[0]) - pixels(whole.images[0])).max() > 0  # the refiner did the rest


@pytest.mark.slow
def test_base_as_its_own_refiner_equals_the_base_alone(refiner_context) -> None:
    """Switching to the same checkpoint continues on the same latents and sigmas: nothing changes."""
    alone = process(request(), refiner_context)
    switched = process(request(refiner_checkpoint="sdxl", refiner_switch_at=0.5), refiner_context)
    assert np.abs(pixels(alone.images[0]) - pixels(switched.images[0])).max() <= 1


def test_refiner_with_hires_fix_is_refused(refiner_context) -> None:
    with pytest.raises(ProcessingError, match="Refiner together with Hires fix"):
        process(request(refiner_checkpoint="sdxl-refiner", enable_hr=True), refiner_context)


def test_switch_at_one_or_no_checkpoint_means_no_refiner() -> None:
    assert request(refiner_checkpoint="sdxl-refiner", refiner_switch_at=0.8).refiner_enabled
    assert not request(refiner_checkpoint="None").refiner_enabled
    assert not request(refiner_checkpoint="sdxl-refiner", refiner_switch_at=1.0).refiner_enabled


def test_refiner_fields_are_supported_api_fields(refiner_context) -> None:
    context = TranslationContext(refiner_context.options, refiner_context.models.registry)
    body = Txt2ImgBody(refiner_checkpoint="sdxl-refiner", refiner_switch_at=0.6)
    translation = translate_txt2img(body, context)
    assert translation.request.refiner_checkpoint == "sdxl-refiner"
    assert translation.request.refiner_switch_at == 0.6
    assert not any("refiner" in item for item in translation.unsupported)


def test_refiner_accordion_values_become_request_fields() -> None:
    from modules.ui.handlers import build_txt2img_request

    chosen = {"refiner_enabled": True, "refiner_checkpoint": "sdxl-refiner [abc]", "refiner_switch_at": 0.65}
    request = build_txt2img_request(chosen)
    assert request.refiner_checkpoint == "sdxl-refiner [abc]" and request.refiner_switch_at == 0.65
    assert build_txt2img_request({**chosen, "refiner_enabled": False}).refiner_checkpoint is None
    assert build_txt2img_request({**chosen, "refiner_checkpoint": "None"}).refiner_checkpoint is None


def test_infotext_keys_paste_back() -> None:
    from modules.ui.handlers import fields_from_infotext

    text = "a cat\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, Image CFG scale: 1.25, "
    text += "Refiner: sdxl-refiner [0123456789], Refiner switch at: 0.6"
    fields = fields_from_infotext(text)
    assert fields["refiner_enabled"] is True and fields["refiner_checkpoint"] == "sdxl-refiner [0123456789]"
    assert fields["refiner_switch_at"] == 0.6 and fields["image_cfg_scale"] == 1.25
    assert fields_from_infotext("a cat\nSteps: 4, Seed: 1")["refiner_enabled"] is False
