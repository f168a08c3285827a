"""Model families: the description, and FLUX.1 / SD 3.5 tiny pipelines through processing (diffusers folders)."""

from __future__ import annotations

import argparse

import diffusers
import numpy as np
import pytest
from PIL import Image

from modules.models.detection import ModelArchitecture
from modules.models.families import FAMILIES, Guidance, family, family_of_pipeline, memory_estimate
from modules.processing.infotext import infotext_to_request_fields, parse_infotext
from modules.processing.processing import ProcessingError, process
from modules.processing.requests import Txt2ImgRequest
from modules.prompts.plain import PlainPromptError, plain_prompt
from modules.tiny_families import train_t5_tokenizer
from tests.helpers import pixels, tiny_img2img, tiny_request

FLOW_REQUEST = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler", "negative_prompt": ""}


def flux_request(**fields):
    return tiny_request(**{**FLOW_REQUEST, "checkpoint": "flux", "cfg_scale": 3.5, **fields})


def kandinsky_request(**fields):
    base = {**FLOW_REQUEST, "checkpoint": "kandinsky22", "sampler_name": "DDIM", "negative_prompt": "blurry"}
    return tiny_request(**{**base, **fields})


def sd3_request(**fields):
    return tiny_request(**{**FLOW_REQUEST, "checkpoint": "sd3", "negative_prompt": "blurry", **fields})


@pytest.fixture(scope="module")
def flow_context(tmp_path_factory):
    """A processing context whose checkpoints folder holds tiny FLUX.1 and SD 3.5 diffusers folders."""
    from modules.backends.diffusers_backend import DiffusersBackend
    from modules.backends.original.backend import OriginalBackend
    from modules.models.service import ModelService
    from modules.networks.service import build_networks
    from modules.options import Options
    from modules.paths import DataPaths
    from modules.postprocess.service import Postprocessor
    from modules.processing.processing import ProcessingContext
    from modules.tiny_model import build_tiny_pipeline, write_diffusers
    from tests.helpers import make_manager

    paths = DataPaths.create(tmp_path_factory.mktemp("flow-data"))
    paths.ensure()
    for architecture in (ModelArchitecture.FLUX, ModelArchitecture.SD3, ModelArchitecture.KANDINSKY22):
        write_diffusers(build_tiny_pipeline(architecture=architecture), paths.checkpoints_dir / architecture.value)
    backend = DiffusersBackend()
    backends = {"diffusers": backend, "original": OriginalBackend()}
    options = Options()
    manager = make_manager(paths)
    networks = build_networks(paths, argparse.Namespace(), manager.registry.hash_cache, lambda: options.sd_vae)
    detector = paths.configs_dir / "face-detection" / "yunet.onnx"
    postprocessor = Postprocessor(paths.models_dir, options, detector)
    return ProcessingContext(
        models=ModelService(manager, networks),
        backend=backend,
        options=options,
        paths=paths,
        backends=backends,
        postprocessor=postprocessor,
    )


def test_every_architecture_has_a_family_whose_pipelines_diffusers_has() -> None:
    for architecture in ModelArchitecture:
        assert architecture.family.key in FAMILIES
    for model_family in FAMILIES.values():
        for task in model_family.tasks:
            assert issubclass(getattr(diffusers, model_family.pipeline_class_name(task)), diffusers.DiffusionPipeline)
            assert family_of_pipeline(model_family.pipelines["txt2img"]) is not None
    assert family("flux").guidance is Guidance.DISTILLED and not family("flux").takes_negative_prompt
    assert family("sd3").takes_negative_prompt and not family("sd3").takes_clip_skip
    assert family("sdxl").is_xl and family("sd1").takes_clip_skip


def test_tiny_t5_tokenizer_round_trips_and_is_the_same_every_time() -> None:
    tokenizer = train_t5_tokenizer()
    ids = tokenizer("a red cat").input_ids
    assert ids[-1] == tokenizer.eos_token_id and len(ids) > 2
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a red cat"
    # built the same way every time (a trained one tokenized differently from run to run)
    assert train_t5_tokenizer().get_vocab() == tokenizer.get_vocab()


def test_plain_prompt_removes_weights_and_refuses_editing() -> None:
    converted = plain_prompt("a (red:1.3) cat BREAK on a [chair] \\(sic\\) <lora:x:1>")
    assert converted.text == "a red cat on a chair (sic)"
    assert converted.weights_dropped
    assert not plain_prompt("a red cat").weights_dropped
    for prompt in ("a [cat:dog:0.5]", "a [cat|dog]", "a cat AND a dog"):
        with pytest.raises(PlainPromptError):
            plain_prompt(prompt)


@pytest.mark.parametrize(
    "make_request",
    [
        flux_request,
        pytest.param(sd3_request, marks=pytest.mark.slow),
        pytest.param(kandinsky_request, marks=pytest.mark.slow),
    ],
    ids=["flux", "sd3", "kandinsky22"],
)
def test_txt2img_batch_equals_single_images_and_infotext_round_trips(flow_context, make_request) -> None:
    batch = process(make_request(batch_size=2, seed=77), flow_context)
    single = process(make_request(seed=78), flow_context)
    assert [image.size for image in batch.images] == [(64, 64), (64, 64)]
    assert batch.seeds == [77, 78]
    assert np.abs(pixels(batch.images[1]) - pixels(single.images[0])).max() <= 1
    assert np.abs(pixels(batch.images[0]) - pixels(batch.images[1])).max() > 0
    parsed = parse_infotext(batch.infotexts[1])
    fields = infotext_to_request_fields(parsed)
    assert (fields["seed"], fields["steps"], fields["sampler_name"]) == (78, 2, make_request().sampler_name)
    assert parsed["Model"] == make_request().checkpoint
    again = process(Txt2ImgRequest(**fields, checkpoint=parsed["Model"], save_images=False), flow_context)
    assert np.abs(pixels(again.images[0]) - pixels(single.images[0])).max() <= 1


def test_kandinsky_runs_prior_and_decoder_with_its_sampler_only(flow_context) -> None:
    result = process(kandinsky_request(negative_prompt="blurry", prompt="a (red:1.2) fox"), flow_context)
    assert result.images[0].size == (64, 64)
    assert "Sampler: DDIM" in result.infotexts[0] and "Model: kandinsky22" in result.infotexts[0]
    assert any("prompt weights" in note for note in result.notes)
    with pytest.raises(ProcessingError, match=r"Kandinsky 2\.2 runs with the DDIM sampler only"):
        process(kandinsky_request(sampler_name="Euler"), flow_context)


def test_sd3_negative_prompt_changes_the_image_and_flux_refuses_one(flow_context) -> None:
    first = process(sd3_request(negative_prompt="blurry"), flow_context).images[0]
    second = process(sd3_request(negative_prompt="sharp, detailed"), flow_context).images[0]
    assert np.abs(pixels(first) - pixels(second)).max() > 0
    with pytest.raises(ProcessingError, match=r"FLUX\.1 takes no negative prompt"):
        process(flux_request(negative_prompt="blurry"), flow_context)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"clip_skip": 2}, "CLIP skip does not apply to FLUX.1"),
        ({"sampler_name": "DPM++ 2M"}, "FLUX.1 runs with the Euler sampler only"),
        ({"scheduler": "Karras"}, "schedule type Karras does not apply"),
        ({"scheduler": "karras"}, "schedule type Karras does not apply"),
        ({"sampler_name": "Euler Karras"}, "schedule type Karras does not apply"),
        ({"enable_hr": True, "hr_upscaler": "Lanczos", "hr_sampler_name": "DPM++ 2M"}, "Euler sampler only"),
        ({"enable_hr": True, "hr_upscaler": "Lanczos", "hr_scheduler": "Karras"}, "schedule type Karras"),
        ({"sampling_backend": "original"}, "diffusers backend only"),
        ({"prompt": "a [cat:dog:0.5]"}, "prompt editing"),
        ({"enable_hr": True, "hr_upscaler": "Latent", "hr_scale": 2}, "Latent hires upscaler is not available"),
    ],
)
def test_flux_refuses_what_does_not_apply(flow_context, fields, message) -> None:
    with pytest.raises(ProcessingError, match=message):
        process(flux_request(**fields), flow_context)


def test_flux_hires_fix_through_an_image_upscaler(flow_context) -> None:
    hires = {"enable_hr": True, "hr_upscaler": "Lanczos", "hr_scale": 1.5, "hr_second_pass_steps": 2}
    result = process(flux_request(**hires, denoising_strength=0.5), flow_context)
    assert result.images[0].size == (96, 96)
    parsed = parse_infotext(result.infotexts[0])
    assert parsed["Hires upscaler"] == "Lanczos" and str(parsed["Hires upscale"]) == "1.5"


def test_weights_and_lora_tags_are_noted_not_silently_dropped(flow_context) -> None:
    result = process(flux_request(prompt="a (red:1.4) fox <lora:nothing:1> <hypernet:x:1>"), flow_context)
    notes = " ".join(result.notes)
    assert "prompt weights like (word:1.2) are not applied" in notes
    assert "LoRA not found: nothing" in notes
    assert "extra network tags are not applied to this family (<hypernet:x>)" in notes
    kandinsky = process(kandinsky_request(prompt="a fox <lora:nothing:1>"), flow_context)
    assert "extra network tags are not applied to this family (<lora:nothing>)" in " ".join(kandinsky.notes)


@pytest.mark.parametrize(
    "checkpoint",
    ["flux", pytest.param("sd3", marks=pytest.mark.slow), pytest.param("kandinsky22", marks=pytest.mark.slow)],
)
def test_img2img_and_inpaint_follow_the_init_image(flow_context, checkpoint) -> None:
    init = Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    sampler = "DDIM" if checkpoint == "kandinsky22" else "Euler"
    fields = {**FLOW_REQUEST, "checkpoint": checkpoint, "init_image": init, "steps": 4, "negative_prompt": ""}
    fields["sampler_name"] = sampler
    light = process(tiny_img2img(**fields, denoising_strength=0.25), flow_context).images[0]
    strong = process(tiny_img2img(**fields, denoising_strength=1.0), flow_context).images[0]
    assert light.size == (64, 64)
    assert np.abs(pixels(light) - pixels(init)).mean() < np.abs(pixels(strong) - pixels(init)).mean()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    if checkpoint == "kandinsky22":
        with pytest.raises(ProcessingError, match=r"Kandinsky 2\.2 inpaint needs its inpaint decoder"):
            process(tiny_img2img(**fields, mask=mask), flow_context)
        return
    inpainted = process(tiny_img2img(**fields, mask=mask, denoising_strength=1.0), flow_context).images[0]
    kept = pixels(inpainted)[:, 40:]
    assert np.abs(kept - pixels(init)[:, 40:]).mean() < np.abs(pixels(inpainted)[:, :24] - pixels(init)[:, :24]).mean()


def test_sd3_loads_and_runs_without_t5_when_asked(flow_context) -> None:
    from modules.backends.diffusers_backend import DiffusersBackend
    from modules.models.manager import ModelManager
    from modules.models.service import ModelService
    from modules.processing.processing import ProcessingContext

    with_t5 = process(sd3_request(seed=9), flow_context).images[0]
    base = flow_context.models.manager
    manager = ModelManager(base.registry, base.policy, base.configs_dir, without_t5=True)
    context = ProcessingContext(ModelService(manager), DiffusersBackend(), flow_context.options, flow_context.paths)
    without_t5 = process(sd3_request(seed=9), context).images[0]
    assert manager.current.pipeline.text_encoder_3 is None
    assert np.abs(pixels(with_t5) - pixels(without_t5)).max() > 0


def test_memory_estimates_come_from_parameter_counts() -> None:
    flux = memory_estimate(family("flux"))
    assert flux["resident"] == pytest.approx((11.9 + 4.88 + 0.084) * 1e9 * 2 / 2**30)
    assert flux["medvram"] == pytest.approx(11.9 * 1e9 * 2 / 2**30)  # the transformer, the largest component
    assert "resident without T5" not in flux  # FLUX.1 cannot run without T5
    sd3 = memory_estimate(family("sd3"))
    assert sd3["resident without T5"] == pytest.approx(sd3["resident"] - 4.76 * 1e9 * 2 / 2**30)
