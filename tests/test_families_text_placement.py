"""Families with T5 under --medvram / --lowvram: their text encoders stay in CPU RAM outside the offload hooks, the
prompts are encoded there and only the embeddings go to the denoiser's device; DeepFloyd IF encodes once with
stage I's T5 (stage II loads none). On this CPU machine the offload hooks are installed with the CPU as the
execution device (what ``MemoryPolicy.apply`` does on a GPU), so the whole path runs; the GPU test checks the
placement on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.backends.diffusers_backend import DiffusersBackend
from modules.devices import MemoryPolicy, MemoryPreset, offload
from modules.models.detection import ModelArchitecture
from modules.models.families import family, memory_estimate
from modules.models.hashing import HashCache
from modules.models.manager import ModelManager, cpu_text_encoders
from modules.models.registry import CheckpointRegistry
from modules.models.service import ModelService
from modules.options import Options
from modules.paths import DataPaths
from modules.processing.processing import ProcessingContext, process
from modules.tiny_model import build_tiny_pipeline, write_diffusers
from tests.helpers import pixels, tiny_request

CPU = torch.device("cpu")
CHECKPOINTS = {
    "flux": ModelArchitecture.FLUX,
    "sd3": ModelArchitecture.SD3,
    "if-i": ModelArchitecture.DEEPFLOYD_IF,
    "if-ii": ModelArchitecture.DEEPFLOYD_IF_II,
}
REQUESTS = {
    "flux": {"sampler_name": "Euler", "cfg_scale": 3.5, "negative_prompt": ""},
    "sd3": {"sampler_name": "Euler", "negative_prompt": "blurry"},
    "if-i": {"sampler_name": "DDIM", "negative_prompt": "blurry"},
}


@pytest.fixture(scope="module")
def family_paths(tmp_path_factory) -> DataPaths:
    paths = DataPaths.create(tmp_path_factory.mktemp("placement-data"))
    paths.ensure()
    for name, architecture in CHECKPOINTS.items():
        write_diffusers(build_tiny_pipeline(architecture=architecture), paths.checkpoints_dir / name)
    return paths


def context_with(paths: DataPaths, policy: MemoryPolicy) -> ProcessingContext:
    registry = CheckpointRegistry(paths.checkpoint_dirs, HashCache(paths.cache_file))
    registry.refresh()
    manager = ModelManager(registry, policy, paths.configs_dir)
    return ProcessingContext(ModelService(manager), DiffusersBackend(), Options(), paths)


def request_for(checkpoint: str, **fields):
    base = {"checkpoint": checkpoint, "width": 64, "height": 64, "steps": 2, "batch_size": 2, "seed": 5}
    return tiny_request(**{**base, **REQUESTS[checkpoint], **fields})


def hooked(module: torch.nn.Module) -> bool:
    return any(hasattr(part, "_hf_hook") for part in module.modules())


@pytest.mark.parametrize("preset", [MemoryPreset.MEDVRAM, MemoryPreset.LOWVRAM])
@pytest.mark.parametrize(
    ("architecture", "denoiser"),
    [
        (ModelArchitecture.FLUX, "transformer"),
        (ModelArchitecture.SD3, "transformer"),
        (ModelArchitecture.DEEPFLOYD_IF, "unet"),
    ],
)
def test_offload_leaves_the_text_encoders_on_the_cpu_outside_the_hooks(architecture, denoiser, preset) -> None:
    pipeline = build_tiny_pipeline(architecture=architecture)
    policy = MemoryPolicy(CPU, torch.float32, torch.float32, preset=preset)
    kept = cpu_text_encoders(pipeline, architecture.family, policy)
    assert architecture.family.t5_encoder in kept
    offload(pipeline, preset, CPU, kept)
    assert hooked(getattr(pipeline, denoiser))
    for name in kept:
        encoder = getattr(pipeline, name)
        assert not hooked(encoder) and next(encoder.parameters()).device == CPU
        assert pipeline.config[name][1] == type(encoder).__name__  # registered again, not as None


def test_only_t5_families_under_a_preset_keep_their_text_encoders_on_the_cpu() -> None:
    medvram = MemoryPolicy(CPU, torch.float32, torch.float32, preset=MemoryPreset.MEDVRAM)
    flux = build_tiny_pipeline(architecture=ModelArchitecture.FLUX)
    assert cpu_text_encoders(flux, family("flux"), medvram) == ("text_encoder", "text_encoder_2")
    assert cpu_text_encoders(flux, family("flux"), MemoryPolicy.cpu()) == ()
    sd1 = build_tiny_pipeline()
    assert cpu_text_encoders(sd1, family("sd1"), medvram) == ()
    sd3 = build_tiny_pipeline(architecture=ModelArchitecture.SD3)
    sd3.register_modules(text_encoder_3=None, tokenizer_3=None)  # --no-t5: the CLIP encoders follow the offload
    assert cpu_text_encoders(sd3, family("sd3"), medvram) == ()


def test_encoding_on_the_cpu_beside_offloaded_models_gives_the_same_images(family_paths) -> None:
    """Each family with T5, its model offloaded as --medvram does (the execution device is the CPU here) and its
    text encoders kept out of the hooks: the images equal those of the plain model."""
    plain = context_with(family_paths, MemoryPolicy.cpu())
    medvram = context_with(family_paths, MemoryPolicy(CPU, torch.float32, torch.float32, preset=MemoryPreset.MEDVRAM))
    for checkpoint in REQUESTS:
        expected = [pixels(image) for image in process(request_for(checkpoint), plain).images]
        model = medvram.models.load(checkpoint)
        assert model.text_device == CPU
        kept = cpu_text_encoders(model.pipeline, model.family, medvram.models.manager.policy)
        for pipeline in (model.pipeline, *model.stages):
            offload(pipeline, MemoryPreset.MEDVRAM, CPU, kept if pipeline is model.pipeline else ())
        result = process(request_for(checkpoint), medvram)
        differences = [np.abs(pixels(image) - want).max() for image, want in zip(result.images, expected, strict=True)]
        # FLUX and IF are bit-equal; SD 3.5's first image is one level apart in places: --medvram's VAE slicing
        # decodes the images one at a time (a batch of one, other kernels), the encodings are equal.
        assert max(differences) <= 1, checkpoint
        t5 = getattr(model.pipeline, model.family.t5_encoder)
        assert not hooked(t5) and next(t5.parameters()).device == CPU
    plain.models.unload()
    medvram.models.unload()


def test_if_stage_two_takes_stage_ones_embeddings_and_loads_no_t5(family_paths) -> None:
    context = context_with(family_paths, MemoryPolicy.cpu())
    first = process(request_for("if-i", prompt="a red fox"), context).images
    other = process(request_for("if-i", prompt="a blue whale"), context).images
    model = context.models.current
    assert len(model.stages) == 1 and model.stages[0].text_encoder is None
    assert np.abs(pixels(first[0]) - pixels(other[0])).max() > 0
    context.models.unload()


def test_medvram_peak_leaves_out_the_text_encoders_of_t5_families() -> None:
    gib = 1e9 * 2 / 2**30
    assert memory_estimate(family("deepfloyd-if"))["medvram"] == pytest.approx(4.3 * gib)  # stage I's UNet
    assert memory_estimate(family("flux"))["medvram"] == pytest.approx(11.9 * gib)


@pytest.mark.gpu
def test_t5_stays_on_the_cpu_under_medvram_on_cuda(family_paths) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    cuda = torch.device("cuda")
    for preset in (MemoryPreset.MEDVRAM, MemoryPreset.LOWVRAM):
        context = context_with(family_paths, MemoryPolicy(cuda, torch.float16, torch.float16, preset=preset))
        for checkpoint in REQUESTS:
            torch.cuda.reset_peak_memory_stats()
            result = process(request_for(checkpoint), context)
            model = context.models.current
            t5 = getattr(model.pipeline, model.family.t5_encoder)
            assert next(t5.parameters()).device == CPU and not hooked(t5)
            assert len(result.images) == 2 and pixels(result.images[0]).std() > 0
        context.models.unload()
