"""ControlNet models follow the UNet's offload policy (--medvram / --lowvram) and the unit's "Low VRAM" option.

On the CPU the moves cannot be seen in memory, so the tests read the placement the backend derives from the
UNet's accelerate hooks, record the model's moves, and check the image equals the one without offload."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modules.backends.registry import create_backend
from modules.controlnet.layout import save_original_layout
from modules.controlnet.models import ControlNetLibrary
from modules.controlnet.placement import Residency, placement_of
from modules.models.hashing import HashCache
from modules.models.service import ModelService
from modules.processing.processing import ProcessingContext
from modules.scripts.builtin.controlnet import ControlNetScript
from modules.scripts.runner import ScriptCatalogue
from modules.tiny_model import build_tiny_controlnet, build_tiny_pipeline
from tests.helpers import make_manager, pixels, tiny_request

NAME = "tiny_offload"


def encoded(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def control_image() -> Image.Image:
    array = np.zeros((64, 64, 3), dtype=np.uint8)
    array[8:40, 16:48] = (250, 120, 30)
    return Image.fromarray(array)


def unit(**fields) -> dict:
    return {"enabled": True, "model": NAME, "module": "none", "image": encoded(control_image()), **fields}


@pytest.fixture(scope="module")
def library(context, tmp_path_factory) -> ControlNetLibrary:
    folder = tmp_path_factory.mktemp("ControlNet")
    controlnet = build_tiny_controlnet(context.models.ensure_loaded().pipeline.unet, seed=5)
    save_original_layout(controlnet, folder / f"{NAME}.safetensors")
    library = ControlNetLibrary([folder], HashCache(folder / "cache.json"), Path("configs"), cache_size=1)
    library.refresh()
    return library


@pytest.fixture(scope="module")
def offloaded_context(context) -> ProcessingContext:
    """The same checkpoint in its own manager, its pipeline under diffusers' model CPU offload (--medvram's)."""
    manager = make_manager(context.paths)
    manager.get().pipeline.enable_model_cpu_offload(device="cpu")
    return ProcessingContext(
        models=ModelService(manager), backend=context.backend, options=context.options, paths=context.paths
    )


def generate(context: ProcessingContext, library: ControlNetLibrary, units: list[dict], backend: str | None = None):
    if backend is not None:
        context = ProcessingContext(
            models=context.models, backend=create_backend(backend), options=context.options, paths=context.paths
        )
    catalogue = ScriptCatalogue([ControlNetScript(library, lambda: 2)])
    tab = catalogue.tab(False)
    script = tab.always_on[0]
    request = tiny_request(steps=3)
    return pixels(tab.bind(always_on={id(script): tab.arguments(script, units)}).execute(request, context).images[0])


class MoveRecorder:
    """Records the devices a model is sent to (``Module.to`` wrapped on the instance, removed after)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.devices: list[str] = []

    def __enter__(self) -> MoveRecorder:
        original = type(self.model).to

        def recording_to(*args, **kwargs):
            self.devices.append(str(torch.device(args[0])) if args and not isinstance(args[0], torch.dtype) else "")
            return original(self.model, *args, **kwargs)

        self.model.to = recording_to
        return self

    def __exit__(self, *exc) -> None:
        del self.model.to


def test_the_placement_follows_the_unet_offload_hooks():
    plain = build_tiny_pipeline()
    assert placement_of(plain.unet).residency is Residency.RESIDENT
    medvram = build_tiny_pipeline()
    medvram.enable_model_cpu_offload(device="cpu")
    placement = placement_of(medvram.unet)
    assert (placement.residency, placement.device, placement.dtype) == (
        Residency.PASS,
        torch.device("cpu"),
        torch.float32,
    )
    lowvram = build_tiny_pipeline()
    lowvram.enable_sequential_cpu_offload(device="cpu")
    assert lowvram.unet.device.type == "meta"  # the UNet's own device says nothing under sequential offload
    placement = placement_of(lowvram.unet)
    assert (placement.residency, placement.device) == (Residency.CALL, torch.device("cpu"))
    assert placement.for_unit(low_vram=False).residency is Residency.CALL
    assert placement_of(plain.unet).for_unit(low_vram=True).residency is Residency.CALL


@pytest.mark.parametrize("backend", ["diffusers", "original"])
def test_a_run_under_model_offload_equals_the_run_without(context, offloaded_context, library, backend):
    expected = generate(context, library, [unit()], backend)
    assert not np.array_equal(expected, generate(context, library, [], backend))
    assert np.array_equal(generate(offloaded_context, library, [unit()], backend), expected)


def test_the_low_vram_option_moves_the_model_for_each_call_and_changes_nothing_else(context, library):
    expected = generate(context, library, [unit()])
    model = library.load(NAME)[1]
    calls: list[int] = []
    hook = model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        with MoveRecorder(model) as moves:
            low_vram = generate(context, library, [unit(low_vram=True)])
    finally:
        hook.remove()
    assert np.array_equal(low_vram, expected)
    # to the execution device for each call, back to the CPU after it (on this machine both are the CPU)
    assert len(calls) == 3 and moves.devices == ["cpu", "cpu"] * len(calls)
    with MoveRecorder(model) as moves:
        generate(context, library, [unit()])
    assert moves.devices == []  # resident: no moves at all


def test_the_execution_device_of_an_offloaded_module_is_the_hooks_device_not_its_weights():
    from accelerate import cpu_offload_with_hook

    from modules.devices import execution_device

    plain = torch.nn.Sequential(torch.nn.Linear(2, 2))
    assert execution_device(plain) == torch.device("cpu")
    offloaded = torch.nn.Sequential(torch.nn.Linear(2, 2))
    cpu_offload_with_hook(offloaded, execution_device=torch.device("cuda", 1))  # only hooked, never called here
    assert next(offloaded.parameters()).device == torch.device("cpu")
    assert execution_device(offloaded) == torch.device("cuda", 1)
