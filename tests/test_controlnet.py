"""ControlNet on the tiny model: model files in both layouts, units through the script, the diffusers backend."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
from PIL import Image

from modules.backends.diffusers_backend.backend import initial_noise
from modules.backends.diffusers_backend.schedulers import build_scheduler
from modules.controlnet.layout import save_original_layout
from modules.controlnet.models import ControlNetError, ControlNetLibrary
from modules.controlnet.residuals import ControlError, ControlPlan, check_family
from modules.models.hashing import HashCache
from modules.processing.processing import ProcessingContext, ProcessingError
from modules.scripts.builtin.controlnet import ControlNetScript
from modules.scripts.runner import ScriptCatalogue
from modules.tiny_model import build_tiny_controlnet
from tests.helpers import pixels, tiny_img2img, tiny_request

DIFFUSERS = "tiny_diffusers"
ORIGINAL = "tiny_original"


def encoded(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def control_image(seed: int) -> Image.Image:
    """Bold shapes (a canny map of them has edges at any size)."""
    rng = np.random.default_rng(seed)
    array = np.zeros((64, 64, 3), dtype=np.uint8)
    for _ in range(4):
        x, y = rng.integers(0, 48, 2)
        array[y : y + 16, x : x + 16] = rng.integers(0, 255, 3)
    return Image.fromarray(array)


@pytest.fixture(scope="module")
def tiny_controlnet(context) -> ControlNetModel:
    return build_tiny_controlnet(context.models.ensure_loaded().pipeline.unet, seed=3)


@pytest.fixture(scope="module")
def library(tiny_controlnet, tmp_path_factory) -> ControlNetLibrary:
    folder = tmp_path_factory.mktemp("ControlNet")
    tiny_controlnet.save_pretrained(folder / DIFFUSERS)
    save_original_layout(tiny_controlnet, folder / f"{ORIGINAL}.safetensors")
    library = ControlNetLibrary([folder], HashCache(folder / "cache.json"), Path("configs"), cache_size=2)
    library.refresh()
    return library


def generate(context: ProcessingContext, library: ControlNetLibrary, request, units: list[dict]):
    catalogue = ScriptCatalogue([ControlNetScript(library, lambda: 3)])
    tab = catalogue.tab(request.task.value != "txt2img")
    script = tab.always_on[0]
    return tab.bind(always_on={id(script): tab.arguments(script, units)}).execute(request, context)


def unit(model: str = DIFFUSERS, seed: int = 1, **fields) -> dict:
    return {"enabled": True, "model": model, "module": "none", "image": encoded(control_image(seed)), **fields}


def test_models_are_listed_as_name_and_hash_and_both_layouts_load_the_same_weights(library, tiny_controlnet):
    titles = library.titles()
    assert [title.split(" [")[0] for title in titles] == [DIFFUSERS, ORIGINAL]
    assert all(len(title.split(" [")[1].rstrip("]")) == 8 for title in titles)
    expected = tiny_controlnet.state_dict()
    for title in titles:
        loaded = library.load(title)[1].state_dict()
        assert loaded.keys() == expected.keys()
        assert all(torch.equal(loaded[key], expected[key]) for key in expected)


def test_pth_files_load_through_weights_only_loading(library, tiny_controlnet, tmp_path):
    from modules.controlnet.layout import controlnet_to_ldm
    from modules.controlnet.models import load_controlnet

    path = tmp_path / "control_tiny.pth"
    torch.save({"state_dict": controlnet_to_ldm(tiny_controlnet)}, path)
    tiny_controlnet.save_config(tmp_path / "control_tiny.config")
    loaded = load_controlnet(path, Path("configs")).state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in tiny_controlnet.state_dict().items())


def test_the_cache_keeps_the_most_recently_used_models(library):
    library.load(DIFFUSERS)
    library.load(ORIGINAL)
    small = ControlNetLibrary(library.folders, library.hashes, library.configs_dir, cache_size=1)
    small.refresh()
    small.load(DIFFUSERS)
    small.load(ORIGINAL)
    assert [path.name for path in small.loaded_paths()] == [f"{ORIGINAL}.safetensors"]
    with pytest.raises(ControlNetError, match="not found"):
        small.find("absent")


def test_an_sd1_controlnet_with_another_family_is_an_error_naming_both(context, tiny_controlnet):
    wide = ControlNetModel(
        block_out_channels=(32, 64),
        cross_attention_dim=768,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        layers_per_block=1,
    )
    plan = ControlPlan("control_v11p_sd15_canny [d14c016b]", wide, control_image(1))
    with pytest.raises(ControlError, match=r"control_v11p_sd15_canny \[d14c016b\] is for SD 1.x, but checkpoint tiny"):
        check_family(plan, context.models.ensure_loaded().pipeline.unet, "tiny")


@pytest.fixture(scope="module")
def plain(context, library):
    return generate(context, library, tiny_request(), [])


@pytest.mark.parametrize("model", [DIFFUSERS, ORIGINAL])
def test_weight_0_guidance_end_0_and_an_empty_region_give_the_image_without_controlnet(context, library, plain, model):
    with_control = generate(context, library, tiny_request(), [unit(model)])
    assert not np.array_equal(pixels(with_control.images[0]), pixels(plain.images[0]))
    black = encoded(Image.new("L", (64, 64), 0))
    for fields in ({"weight": 0}, {"guidance_end": 0}, {"mask": black}):
        result = generate(context, library, tiny_request(), [unit(model, **fields)])
        assert np.array_equal(pixels(result.images[0]), pixels(plain.images[0])), fields


def test_different_control_images_and_two_units_give_different_images(context, library):
    first = pixels(generate(context, library, tiny_request(), [unit(seed=1)]).images[0])
    second = pixels(generate(context, library, tiny_request(), [unit(seed=2)]).images[0])
    both = pixels(generate(context, library, tiny_request(), [unit(seed=1), unit(ORIGINAL, seed=2)]).images[0])
    assert not np.array_equal(first, second)
    assert not np.array_equal(both, first) and not np.array_equal(both, second)


def test_infotext_names_each_unit_as_the_extension_does(context, library):
    result = generate(context, library, tiny_request(), [unit(module="canny", weight=0.5)])
    title = library.find(DIFFUSERS).title
    assert (
        f'ControlNet 0: "Module: canny, Model: {title}, Weight: 0.5, Resize Mode: Crop and Resize, '
        "Processor Res: -1, Threshold A: -1.0, Threshold B: -1.0, Guidance Start: 0.0, Guidance End: 1.0, "
        'Pixel Perfect: False, Control Mode: Balanced"' in result.infotexts[0]
    )


@pytest.mark.slow
def test_img2img_inpaint_hires_and_batches_apply_the_control(context, hires_context, library):
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    cases = [
        (context, tiny_img2img(), [unit()]),  # the unit's own image
        (context, tiny_img2img(mask=mask), [unit(image="")]),  # inpaint, the img2img image as the control
        (hires_context, tiny_request(enable_hr=True, hr_scale=1.5, hr_upscaler="Latent"), [unit()]),
        (context, tiny_request(batch_size=2), [unit()]),
    ]
    for case_context, request, units in cases:
        plain = generate(case_context, library, request, [])
        controlled = generate(case_context, library, request, units)
        assert len(controlled.images) == len(plain.images)
        for ours, theirs in zip(controlled.images, plain.images, strict=True):
            assert ours.size == theirs.size
            assert not np.array_equal(pixels(ours), pixels(theirs)), request


def test_a_missing_model_or_image_fails_the_job_with_a_clear_message(context, library):
    with pytest.raises(ProcessingError, match="ControlNet model not found: 'absent'"):
        generate(context, library, tiny_request(), [unit("absent")])
    with pytest.raises(ProcessingError, match="no image"):
        generate(context, library, tiny_request(), [unit(image="")])


def run_with_reference_inputs(context, library, request, units):
    """The job's result, the text embeddings its UNet calls got ([negative, positive]) and its initial noise."""
    from modules.backends.base import GenerationPlan
    from modules.models.manager import Task

    model = context.models.ensure_loaded()
    calls: list[dict] = []
    hook = model.pipeline.unet.register_forward_pre_hook(lambda _, a, kwargs: calls.append(kwargs), with_kwargs=True)
    try:
        result = generate(context, library, request, units)
    finally:
        hook.remove()
    plan = GenerationPlan(
        Task.TXT2IMG,
        [request.prompt],
        [request.negative_prompt],
        [request.seed],
        request.steps,
        request.cfg_scale,
        request.width,
        request.height,
        "Euler",
        "Automatic",
    )
    latents, _ = initial_noise(model.pipeline_view(Task.TXT2IMG), plan)
    return result, calls[0]["encoder_hidden_states"], latents


def reference_components(context, request) -> dict:
    model = context.models.ensure_loaded()
    pipeline = model.pipeline
    return {
        "vae": pipeline.vae,
        "text_encoder": pipeline.text_encoder,
        "tokenizer": pipeline.tokenizer,
        "unet": pipeline.unet,
        "scheduler": build_scheduler(model.scheduler_config, "Euler", "Automatic", noise_seed=request.seed),
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def reference_image(reference, hidden, latents, request, **arguments) -> Image.Image:
    reference.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        return reference(
            prompt_embeds=hidden[1:],
            negative_prompt_embeds=hidden[:1],
            image=control_image(1),
            num_inference_steps=request.steps,
            guidance_scale=request.cfg_scale,
            latents=latents,
            output_type="pil",
            width=request.width,
            height=request.height,
            **arguments,
        ).images[0]


def test_the_diffusers_backend_equals_diffusers_controlnet_pipeline(context, library, tiny_controlnet):
    """Same embeddings (captured from the backend's UNet calls), same initial noise, same scheduler."""
    request = tiny_request(cfg_scale=5.0)
    result, hidden, latents = run_with_reference_inputs(context, library, request, [unit(weight=0.8)])
    components = reference_components(context, request)
    reference = StableDiffusionControlNetPipeline(**components, controlnet=library.load(DIFFUSERS)[1])
    expected = reference_image(reference, hidden, latents, request, controlnet_conditioning_scale=0.8)
    assert np.array_equal(pixels(result.images[0]), pixels(expected))


def test_the_original_backend_runs_the_same_unit_through_its_denoiser(context, library):
    from modules.backends.registry import create_backend

    original = ProcessingContext(
        models=context.models, backend=create_backend("original"), options=context.options, paths=context.paths
    )
    plain = pixels(generate(original, library, tiny_request(), []).images[0])
    controlled = pixels(generate(original, library, tiny_request(), [unit(ORIGINAL)]).images[0])
    other_image = pixels(generate(original, library, tiny_request(), [unit(ORIGINAL, seed=2)]).images[0])
    assert not np.array_equal(controlled, plain) and not np.array_equal(controlled, other_image)
    for fields in ({"weight": 0}, {"guidance_end": 0}):
        assert np.array_equal(pixels(generate(original, library, tiny_request(), [unit(**fields)]).images[0]), plain)


def test_control_modes_change_the_result(context, library):
    images = [
        pixels(generate(context, library, tiny_request(), [unit(control_mode=mode)]).images[0]) for mode in (0, 1, 2)
    ]
    assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[1], images[2])
    assert not np.array_equal(images[0], images[2])


def test_the_preview_action_shows_the_preprocessor_output(library):
    script = ControlNetScript(library, lambda: 1)
    control = script.ui(False)[0]
    preview = next(action for action in control.actions if action.name == "preview")
    edges = np.asarray(preview.run({"image": control_image(1), "module": "canny", "processor_res": 64}))
    assert edges.shape == (64, 64, 3) and set(np.unique(edges)) == {0, 255}
    inverted = np.asarray(preview.run({"image": control_image(1), "module": "invert"}))
    assert np.array_equal(inverted, 255 - np.asarray(control_image(1)))
    with pytest.raises(ValueError, match="upload an image"):
        preview.run({"image": None, "module": "canny"})


def test_the_unit_widgets_have_the_extension_ranges(library):
    children = {child.name: child for child in ControlNetScript(library, lambda: 1).ui(False)[0].children}
    weight, end = children["weight"], children["guidance_end"]
    assert (weight.value, weight.minimum, weight.maximum, weight.infotext) == (1.0, 0.0, 2.0, None)
    assert (end.value, end.minimum, end.maximum) == (1.0, 0.0, 1.0)
    assert children["model"].choices[0] == "None" and children["model"].choices[1] == library.titles()[0]


def test_a_t2i_adapter_unit_acts_and_weight_zero_gives_the_plain_image(context, library, plain, tmp_path):
    from diffusers import StableDiffusionAdapterPipeline, T2IAdapter

    model = context.models.ensure_loaded()
    torch.manual_seed(2)
    # The tiny UNet's first block downsamples before the adapter's feature is added (SD's blocks add it before):
    # one feature at 1/16 of the image fits it.
    adapter = T2IAdapter(in_channels=3, channels=[32], num_res_blocks=1, downscale_factor=16)
    folder = library.folders[0] / "t2iadapter_tiny"
    adapter.save_pretrained(folder)
    library.refresh()
    try:
        title = library.find("t2iadapter_tiny").title
        controlled = pixels(generate(context, library, tiny_request(), [unit(title)]).images[0])
        assert not np.array_equal(controlled, pixels(plain.images[0]))
        silent = generate(context, library, tiny_request(), [unit(title, weight=0)])
        assert np.array_equal(pixels(silent.images[0]), pixels(plain.images[0]))
        both = pixels(generate(context, library, tiny_request(), [unit(title), unit(DIFFUSERS)]).images[0])
        assert not np.array_equal(both, controlled)
        request = tiny_request(cfg_scale=5.0)
        result, hidden, latents = run_with_reference_inputs(context, library, request, [unit(title, weight=0.7)])
        reference = StableDiffusionAdapterPipeline(**reference_components(context, request), adapter=adapter)
        expected = reference_image(reference, hidden, latents, request, adapter_conditioning_scale=0.7)
        assert np.array_equal(pixels(result.images[0]), pixels(expected))  # diffusers' own adapter pipeline
        wrong = ControlPlan(
            "t2iadapter_xl", T2IAdapter(channels=[32, 64], adapter_type="full_adapter_xl"), control_image(1)
        )
        with pytest.raises(ControlError, match="T2I-Adapter t2iadapter_xl is for SDXL"):
            check_family(wrong, model.pipeline.unet, "tiny")
    finally:
        import shutil

        shutil.rmtree(folder)
        library.refresh()


def tiny_ip_adapter(unet: torch.nn.Module, image_dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A plain IP-Adapter for the tiny UNet in the original file layout (flat image_proj.* / ip_adapter.*)."""
    generator = torch.Generator().manual_seed(seed)
    cross = int(unet.config.cross_attention_dim)
    blocks = list(unet.config.block_out_channels)
    tensors = {
        "image_proj.proj.weight": torch.randn(cross * 4, image_dim, generator=generator) * 0.3,
        "image_proj.proj.bias": torch.zeros(cross * 4),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    for key_id, name in enumerate(unet.attn_processors):
        if not name.endswith("attn2.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = blocks[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(blocks))[int(name[len("up_blocks.")])]
        else:
            hidden = blocks[int(name[len("down_blocks.")])]
        for part in ("to_k_ip", "to_v_ip"):
            tensors[f"ip_adapter.{key_id}.{part}.weight"] = torch.randn(hidden, cross, generator=generator) * 0.3
    return tensors


def test_an_ip_adapter_unit_acts_through_the_clip_vision_encoder_and_the_unet_is_restored(context, library, plain):
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from modules.backends.registry import create_backend

    model = context.models.ensure_loaded()
    unet = model.pipeline.unet
    processors_before = {name: type(processor) for name, processor in unet.attn_processors.items()}
    clip_folder = library.clip_vision.folder / "tiny-clip-vision"
    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        projection_dim=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(clip_folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(clip_folder)
    adapter_path = library.folders[0] / "ip-adapter_tiny.safetensors"
    save_file(tiny_ip_adapter(unet, image_dim=24), str(adapter_path))
    library.refresh()
    try:
        title = library.find("ip-adapter_tiny").title
        ip = pixels(generate(context, library, tiny_request(), [unit(title)]).images[0])
        assert not np.array_equal(ip, pixels(plain.images[0]))
        other = pixels(generate(context, library, tiny_request(), [unit(title, seed=2)]).images[0])
        assert not np.array_equal(ip, other)  # the reference image matters
        silent = generate(context, library, tiny_request(), [unit(title, weight=0)])
        assert np.array_equal(pixels(silent.images[0]), pixels(plain.images[0]))
        assert {name: type(p) for name, p in unet.attn_processors.items()} == processors_before
        assert unet.encoder_hid_proj is None and unet.config.encoder_hid_dim_type is None
        after = generate(context, library, tiny_request(), [])
        assert np.array_equal(pixels(after.images[0]), pixels(plain.images[0]))
        original = ProcessingContext(
            models=context.models, backend=create_backend("original"), options=context.options, paths=context.paths
        )
        on_original = pixels(generate(original, library, tiny_request(), [unit(title)]).images[0])
        assert not np.array_equal(on_original, pixels(generate(original, library, tiny_request(), []).images[0]))
    finally:
        import shutil

        adapter_path.unlink()
        shutil.rmtree(clip_folder)
        library.refresh()
