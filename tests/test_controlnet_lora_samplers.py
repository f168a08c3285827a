"""A ControlNet unit together with a LoRA, across samplers, on both backends (issue: "with LoRA and every
sampler"): the unit changes the LoRA image, weight 0 gives the LoRA image without ControlNet bit for bit, and the
LoRA still acts under the unit."""

from __future__ import annotations

import argparse
import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file

from modules.backends.registry import backend_names, create_backend
from modules.controlnet.models import ControlNetLibrary
from modules.models.hashing import HashCache
from modules.models.service import ModelService
from modules.networks.service import build_networks
from modules.options import Options
from modules.paths import DataPaths
from modules.processing.processing import ProcessingContext
from modules.scripts.builtin.controlnet import ControlNetScript
from modules.scripts.runner import ScriptCatalogue
from modules.tiny_model import build_tiny_controlnet, build_tiny_pipeline, write_diffusers
from tests.helpers import kohya_lora, make_manager, pixels, tiny_request

# Euler a in the default run; the others with the slow tests (about 4 s each per backend on a quiet machine).
SAMPLERS = ("Euler a", *(pytest.param(name, marks=pytest.mark.slow) for name in ("DPM++ 2M", "DDIM", "UniPC")))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    paths = DataPaths.create(tmp_path_factory.mktemp("controlnet-lora"))
    paths.ensure()
    pipeline = build_tiny_pipeline(seed=0)
    write_diffusers(pipeline, paths.checkpoints_dir / "tiny")
    save_file(kohya_lora(), str(paths.lora_dir / "foxy.safetensors"))
    folder = paths.models_dir / "ControlNet"
    build_tiny_controlnet(pipeline.unet, seed=3).save_pretrained(folder / "tiny_cn")
    library = ControlNetLibrary([folder], HashCache(paths.cache_file), Path("configs"), cache_size=1)
    library.refresh()
    options = Options()
    networks = build_networks(paths, argparse.Namespace(), HashCache(paths.cache_file), lambda: options.sd_vae)
    models = ModelService(make_manager(paths), networks)
    models.load("tiny")
    backends = {name: create_backend(name) for name in backend_names()}
    context = ProcessingContext(
        models=models, backend=backends["diffusers"], options=options, paths=paths, backends=backends
    )
    return context, library


def control_unit(**fields) -> dict:
    array = np.zeros((64, 64, 3), dtype=np.uint8)
    array[8:40, 16:48] = (250, 120, 10)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    return {"enabled": True, "model": "tiny_cn", "module": "none", "image": image, **fields}


def run(setup, request, units):
    context, library = setup
    tab = ScriptCatalogue([ControlNetScript(library, lambda: 2)]).tab(False)
    script = tab.always_on[0]
    return pixels(tab.bind(always_on={id(script): tab.arguments(script, units)}).execute(request, context).images[0])


@pytest.mark.parametrize("backend", backend_names())
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_unit_with_a_lora_on_each_sampler(setup, backend, sampler):
    fields = {"steps": 3, "sampler_name": sampler, "sampling_backend": backend}
    with_lora = tiny_request(prompt="a fox <lora:foxy:1>", **fields)
    lora_only = run(setup, with_lora, [])
    plain = run(setup, tiny_request(prompt="a fox", **fields), [])
    controlled = run(setup, with_lora, [control_unit()])
    assert not np.array_equal(lora_only, plain), "the LoRA acts"
    assert not np.array_equal(controlled, lora_only), "the unit acts on the LoRA image"
    assert np.array_equal(run(setup, with_lora, [control_unit(weight=0)]), lora_only)
    assert not np.array_equal(controlled, run(setup, tiny_request(prompt="a fox", **fields), [control_unit()]))
