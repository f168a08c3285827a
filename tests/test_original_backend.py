"""The original backend end to end on the tiny model: catalogue, agreement with diffusers, img2img and inpainting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from modules import samplers
from modules.backends.base import GenerationPlan, MaskedContent
from modules.backends.diffusers_backend import DiffusersBackend
from modules.backends.original import catalogue
from modules.backends.original.backend import OriginalBackend
from modules.backends.original.images import decode_latents, encode_images
from modules.backends.original.schedules import find_schedule_type
from modules.models.manager import Task
from modules.options import Options
from modules.processing.infotext import infotext_to_request_fields, override_pairs, parse_infotext
from modules.processing.job import JobControl
from modules.processing.processing import ProcessingContext, ProcessingError, process
from modules.ui.handlers import build_txt2img_request, fields_from_infotext
from tests.helpers import pixels, tiny_img2img, tiny_request


@pytest.fixture(scope="module")
def original_context(context) -> ProcessingContext:
    return ProcessingContext(
        models=context.models, backend=OriginalBackend(), options=context.options, paths=context.paths
    )


def latent_plan(**fields) -> GenerationPlan:
    base = {
        "task": Task.TXT2IMG,
        "prompts": ["a red fox"],
        "negative_prompts": ["blurry"],
        "seeds": [1234],
        "steps": 6,
        "cfg_scale": 7.0,
        "width": 64,
        "height": 64,
        "sampler_name": "Euler",
        "schedule_type": "Uniform",
        "output_latents": True,
    }
    return GenerationPlan(**{**base, **fields})


def test_its_catalogue_agrees_with_the_neutral_one():
    """Names, aliases, default schedules and parameters of the 20 A1111 samplers are the same in both tables."""
    neutral = {info.name: info for info in samplers.SAMPLERS if info.a1111}
    assert set(neutral) == set(catalogue.sampler_names())
    for sampler in catalogue.SAMPLERS:
        info = neutral[sampler.name]
        assert set(sampler.aliases) <= set(info.aliases), sampler.name
        default = find_schedule_type(sampler.default_schedule or "uniform")
        assert default is not None and default.label == info.default_schedule, sampler.name
        assert set(sampler.parameters) == set(info.parameters), sampler.name
        # every A1111 name and alias resolves to the same sampler in both
        for alias in sampler.aliases:
            assert samplers.find_sampler(alias).name == sampler.name
    support = OriginalBackend().sampler_support()
    assert set(support) == set(neutral)
    assert all(set(types) == set(samplers.SCHEDULE_TYPES[1:]) for types in support.values())


@pytest.mark.parametrize("sampler_name", ["Euler", "Euler a"])
def test_euler_on_the_uniform_schedule_agrees_with_diffusers(context, sampler_name):
    """The same algorithm, the same initial noise (per-image generators) and, for Euler a, the same per-step draws:
    only the rounding differs (measured at 20 steps: max |difference| 3.8e-5 for Euler, 1.2e-4 for Euler a)."""
    model = context.models.ensure_loaded()
    plan = latent_plan(
        sampler_name=sampler_name, seeds=[1234, 99], prompts=["a red fox"] * 2, negative_prompts=[""] * 2
    )
    control = JobControl(preview_every_n_steps=0)
    ours = OriginalBackend().generate(model, plan, control)
    theirs = DiffusersBackend().generate(model, plan, control)
    assert ours.shape == theirs.shape == (2, 4, 8, 8)
    assert float((ours - theirs).abs().max()) < 1e-3
    assert float(ours.abs().max()) > 1.0  # a real result, not zeros


def test_decode_truncates_as_a1111(context):
    """``255. * x`` cast to uint8 truncates: a value that rounds up in diffusers stays down here."""
    vae = context.models.ensure_loaded().pipeline.vae
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        decoded = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
        image = decode_latents(vae, latents)[0]
    expected = np.floor(255.0 * np.clip((decoded[0].numpy().transpose(1, 2, 0) + 1) / 2, 0, 1))
    assert np.abs(pixels(image) - expected).max() <= 1  # 1/scale * z vs z / scale may flip a value
    assert (pixels(image) == expected).mean() > 0.99


def test_inpainting_keeps_the_init_latents_outside_the_mask(context):
    """A1111's latent mask blend: after sampling the kept area is exactly the encoded init image."""
    model = context.models.ensure_loaded()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    plan = latent_plan(task=Task.INPAINT, init_image=image, mask=mask, denoising_strength=0.75)
    latents = OriginalBackend().generate(model, plan, JobControl(preview_every_n_steps=0))
    with torch.inference_mode():
        init = encode_images(model.pipeline.vae, [image], [1234])
    assert torch.equal(latents[..., 4:], init[..., 4:])
    assert not torch.allclose(latents[..., :4], init[..., :4])
    nothing = OriginalBackend().generate(
        model, latent_plan(**{**plan.__dict__, "masked_content": MaskedContent.LATENT_NOTHING}), JobControl()
    )
    assert torch.equal(nothing[..., 4:], init[..., 4:]) and not torch.equal(nothing, latents)


def test_img2img_runs_t_enc_plus_one_steps(original_context):
    control = JobControl(preview_every_n_steps=0)
    result = process(tiny_img2img(steps=10, denoising_strength=0.45), original_context, control)
    assert control.snapshot().sampling_steps == 5  # int(0.45 * 10) + 1
    assert result.images[0].size == (64, 64)


def test_nine_channel_inpainting_model_runs(inpaint_context):
    context = ProcessingContext(
        models=inpaint_context.models,
        backend=OriginalBackend(),
        options=inpaint_context.options,
        paths=inpaint_context.paths,
    )
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpainted = process(tiny_img2img(mask=mask, mask_blur=0), context).images[0]
    image = tiny_img2img().init_image
    assert np.array_equal(pixels(inpainted)[:8], pixels(image)[:8])  # outside the mask: the original pixels
    assert not np.array_equal(pixels(inpainted)[24:40, 24:40], pixels(image)[24:40, 24:40])


@pytest.fixture(scope="module")
def switching_context(context) -> ProcessingContext:
    """The diffusers backend by default, with both backends to choose from per request."""
    backends = {"diffusers": DiffusersBackend(), "original": OriginalBackend()}
    return ProcessingContext(
        models=context.models,
        backend=backends["diffusers"],
        options=context.options,
        paths=context.paths,
        backends=backends,
    )


def test_a_request_chooses_its_backend_and_gets_the_flag_s_bytes(switching_context, original_context):
    chosen = process(tiny_request(sampling_backend="original"), switching_context)
    flagged = process(tiny_request(), original_context)
    assert chosen.images[0].tobytes() == flagged.images[0].tobytes()
    assert "Sampler backend" not in chosen.infotexts[0]
    default = process(tiny_request(), switching_context)
    assert "Sampler backend: diffusers" in default.infotexts[0]
    assert default.images[0].tobytes() != chosen.images[0].tobytes()


def test_the_setting_chooses_the_backend_when_the_request_does_not(switching_context, original_context):
    options = switching_context.options.model_copy(update={"sd_sampling_backend": "original"})
    context = ProcessingContext(
        models=switching_context.models,
        backend=switching_context.backend,
        options=options,
        paths=switching_context.paths,
        backends=switching_context.backends,
    )
    assert (
        process(tiny_request(), context).images[0].tobytes()
        == process(tiny_request(), original_context).images[0].tobytes()
    )
    with pytest.raises(ProcessingError, match="unknown sampler backend"):
        process(tiny_request(sampling_backend="nope"), context)


def test_pasting_an_infotext_chooses_the_backend():
    a1111 = "a fox\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x512"
    assert infotext_to_request_fields(parse_infotext(a1111))["sampling_backend"] == "original"
    ours = a1111 + ", Sampler backend: diffusers"
    assert infotext_to_request_fields(parse_infotext(ours))["sampling_backend"] == "diffusers"
    assert fields_from_infotext(ours)["sampling_backend"] == "diffusers"
    assert "sampling_backend" not in infotext_to_request_fields(parse_infotext("just a prompt"))


def test_the_extra_seed_controls_count_only_while_extra_is_ticked():
    values = {"prompt": "a fox", "seed": 3, "subseed": 9, "subseed_strength": 0.5, "seed_resize_from_w": 32.0}
    assert build_txt2img_request({**values, "seed_extra": False}).subseed_strength == 0.0
    ticked = build_txt2img_request({**values, "seed_extra": True, "seed_resize_from_h": 32.0})
    assert (ticked.subseed, ticked.subseed_strength, ticked.seed_resize_from_w) == (9, 0.5, 32)
    pasted = fields_from_infotext(
        "a fox\nSteps: 3, Sampler: Euler, Seed: 1, Variation seed: 7, Variation seed strength: 0.2"
    )
    assert pasted["seed_extra"] and (pasted["subseed"], pasted["subseed_strength"]) == (7, 0.2)
    # the settings A1111's parse fills in (RNG GPU, schedule sigma range 0) equal the defaults: not listed
    assert override_pairs(pasted["override_settings"], Options().model_dump()) == []
    assert not fields_from_infotext("a fox\nSteps: 3, Sampler: Euler, Seed: 1")["seed_extra"]


@pytest.mark.parametrize(
    ("override", "infotext_key", "value"),
    [
        ({"rho": 3.0}, "Schedule rho", "3.0"),
        ({"sigma_max": 5.0}, "Schedule max sigma", "5.0"),
        ({"s_min_uncond": 20.0 - 5.0}, "NGMS", "15.0"),
        ({"beta_dist_alpha": 0.3}, "Beta schedule alpha", "0.3"),
    ],
)
def test_schedule_and_guidance_settings_reach_the_sampler(original_context, override, infotext_key, value):
    """A1111's Sampler parameters beyond eta / s_* (schedule sigma range and rho, Beta alpha, NGMS) come from the
    settings or a request's override_settings, change the image and write A1111's infotext key; the infotext
    pastes them back as the same override."""
    schedule = "Beta" if "beta_dist_alpha" in override else "Karras"
    plain = process(tiny_request(steps=4, scheduler=schedule), original_context)
    changed = process(tiny_request(steps=4, scheduler=schedule, override_settings=override), original_context)
    assert plain.images[0].tobytes() != changed.images[0].tobytes()
    parsed = parse_infotext(changed.infotexts[0])
    assert parsed[infotext_key] == value
    assert f"{infotext_key}: {value}" not in plain.infotexts[0]  # absent, or (Beta) the default value
    pasted = infotext_to_request_fields(parsed)["override_settings"]
    assert {name: pasted[name] for name in override} == override


def test_uni_pc_order_and_extra_noise_settings(original_context):
    """UniPC's order and img2img's extra noise are A1111 settings too (override_settings, infotext keys)."""
    base = process(tiny_request(steps=5, sampler_name="UniPC"), original_context)
    first_order = tiny_request(steps=5, sampler_name="UniPC", override_settings={"uni_pc_order": 1})
    lower = process(first_order, original_context)
    assert base.images[0].tobytes() != lower.images[0].tobytes()
    plain = process(tiny_img2img(steps=4), original_context)
    noisy = process(tiny_img2img(steps=4, override_settings={"img2img_extra_noise": 0.5}), original_context)
    assert plain.images[0].tobytes() != noisy.images[0].tobytes()
    assert parse_infotext(noisy.infotexts[0])["Extra noise"] == "0.5"
