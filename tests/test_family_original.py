"""The SD family on the original backend (A1111's samplers): every kind generates from tiny single files;
instruct-pix2pix's three-row image guidance against the formula on recorded UNet outputs; the SDXL refiner switch
continues the same schedule and noise streams (UNet calls counted, aesthetic-score time ids)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image

from modules.backends.base import GenerationPlan
from modules.backends.original.backend import OriginalBackend
from modules.backends.original.denoiser import CFGDenoiser, ModelConditioning, MultiCond
from modules.backends.original.images import encode_mode, image_to_tensor
from modules.backends.original.schedules import DiscreteSigmas, ldm_alphas_cumprod
from modules.backends.original.unet import prediction_of
from modules.models.detection import ModelArchitecture
from modules.models.manager import Task
from modules.processing.job import JobControl
from modules.processing.processing import ProcessingContext, ProcessingError, process
from tests.family_support import family_context
from tests.helpers import pixels, tiny_img2img, tiny_request

KINDS = (
    ModelArchitecture.SD1_INPAINT,
    ModelArchitecture.SD1_PIX2PIX,
    ModelArchitecture.SD2,
    ModelArchitecture.SD2_V,
    ModelArchitecture.SD2_INPAINT,
    ModelArchitecture.SDXL,
    ModelArchitecture.SDXL_INPAINT,
    ModelArchitecture.SDXL_REFINER,
)
SIZE = 64
NOT_SAVED = {"save_images": False, "save_grid": False}


@pytest.fixture(scope="module")
def original_family(tmp_path_factory, tiny_configs) -> ProcessingContext:
    return family_context(tmp_path_factory.mktemp("family-original"), tiny_configs, OriginalBackend(), KINDS)


@contextmanager
def unet_record(unet: torch.nn.Module) -> Iterator[list[dict]]:
    """Every forward call of ``unet``: its input sample, timestep, text rows, added conditions and output."""
    calls: list[dict] = []

    def record(module, args, kwargs, output) -> None:
        sample, timestep = [*args, kwargs.get("sample"), kwargs.get("timestep")][:2]
        calls.append(
            {
                "sample": sample.detach().clone(),
                "timestep": timestep,
                "hidden": kwargs["encoder_hidden_states"].detach().clone(),
                "added": kwargs.get("added_cond_kwargs"),
                "output": output[0].detach().clone(),
            }
        )

    handle = unet.register_forward_hook(record, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def mask_image() -> Image.Image:
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    return mask


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "task"),
    [
        (ModelArchitecture.SD1_INPAINT, "txt2img"),
        (ModelArchitecture.SD2, "txt2img"),
        (ModelArchitecture.SD2_V, "txt2img"),
        (ModelArchitecture.SD2_INPAINT, "inpaint"),
        (ModelArchitecture.SD2_INPAINT, "img2img"),
        (ModelArchitecture.SDXL, "txt2img"),
        (ModelArchitecture.SDXL_INPAINT, "inpaint"),
        (ModelArchitecture.SDXL_INPAINT, "txt2img"),
        (ModelArchitecture.SDXL_REFINER, "txt2img"),
        (ModelArchitecture.SDXL_REFINER, "img2img"),
        (ModelArchitecture.SD1_PIX2PIX, "img2img"),
        (ModelArchitecture.SD1_PIX2PIX, "inpaint"),
    ],
)
def test_each_kind_generates_on_the_original_backend(original_family, kind, task) -> None:
    fields = {"checkpoint": kind.value, **NOT_SAVED}
    if task == "txt2img":
        request = tiny_request(**fields)
    else:
        request = tiny_img2img(**fields, mask=mask_image() if task == "inpaint" else None)
    with original_family.models.use(kind.value) as scope:
        unet = scope.model.pipeline.unet
        with unet_record(unet) as calls:
            result = process(request, original_family)
    assert len(result.images) == 1 and result.images[0].size == (SIZE, SIZE)
    assert pixels(result.images[0]).std() > 0
    assert f"Model: {kind.value}," in result.infotexts[0] and "Sampler backend" not in result.infotexts[0]
    mask_weight = kind.name.endswith("INPAINT") and (task != "txt2img" or not kind.is_sdxl)  # A1111's rule
    assert ("Conditional mask weight: 1.0" in result.infotexts[0]) is mask_weight
    channels = {call["sample"].shape[1] for call in calls}
    assert channels == {unet.config.in_channels}  # the image conditioning is concatenated for 8/9-channel UNets


def test_sd2_kinds_are_told_apart_by_their_prediction(original_family) -> None:
    with original_family.models.use("sd2") as scope:
        assert prediction_of(scope.model) == "eps"
    with original_family.models.use("sd2-v") as scope:
        assert prediction_of(scope.model) == "v"


# --- instruct-pix2pix ------------------------------------------------------------------------------------------


class RecordingInner:
    """An inner model (x0 denoiser) returning fixed rows per call, recording what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, ModelConditioning]] = []

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: ModelConditioning) -> torch.Tensor:
        self.calls.append((x, cond))
        return x * 0.5 + cond.image.mean() + torch.arange(x.shape[0], dtype=x.dtype)[:, None, None, None]


def test_edit_model_guidance_is_a1111s_three_row_batch() -> None:
    x = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    image = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    cond, uncond = torch.ones(1, 3, 8), torch.zeros(1, 3, 8)
    inner = RecordingInner()
    cfg = CFGDenoiser(inner, MultiCond.single(cond), uncond, 3.0, image_cond=image, image_cfg_scale=1.7)
    denoised = cfg(x, torch.tensor([2.0]))
    ((x_in, conditioning),) = inner.calls
    assert torch.equal(x_in, torch.cat([x, x, x]))
    assert torch.equal(conditioning.text, torch.cat([cond, uncond, uncond]))
    assert torch.equal(conditioning.image, torch.cat([image, image, torch.zeros_like(image)]))
    out = inner(x_in, torch.tensor([2.0] * 3), conditioning)
    out_cond, out_image, out_uncond = out[0:1], out[1:2], out[2:3]
    assert torch.allclose(denoised, out_uncond + 3.0 * (out_cond - out_image) + 1.7 * (out_image - out_uncond))
    for plain in (None, 1.0):  # A1111: plain two-row CFG with the image on both rows
        inner = RecordingInner()
        CFGDenoiser(inner, MultiCond.single(cond), uncond, 3.0, image_cond=image, image_cfg_scale=plain)(
            x, torch.tensor([2.0])
        )
        assert torch.equal(inner.calls[0][1].image, torch.cat([image, image]))


def source_image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(3).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))


def pix2pix_plan(image_cfg_scale: float | None) -> GenerationPlan:
    """One Euler step from pure noise: the result is the guided x0 of that single model call."""
    return GenerationPlan(
        task=Task.IMG2IMG,
        prompts=["turn it red"],
        negative_prompts=["blurry"],
        seeds=[5],
        steps=1,
        cfg_scale=3.0,
        width=SIZE,
        height=SIZE,
        sampler_name="Euler",
        schedule_type="Automatic",
        init_image=source_image(),
        denoising_strength=1.0,
        output_latents=True,
        image_cfg_scale=image_cfg_scale,
        edit_model=True,
    )


def guided_by_hand(calls: list[dict], image_cfg_scale: float | None) -> torch.Tensor:
    """A1111's combination of the recorded UNet outputs (eps) for one Euler step from sigma_max to 0."""
    ((call,),) = [calls]
    sigma = DiscreteSigmas(ldm_alphas_cumprod()).sigmas[-1]
    x = call["sample"][:1, :4] * (sigma**2 + 1) ** 0.5
    eps = call["output"]
    if image_cfg_scale in (None, 1.0):
        guided = eps[1:2] + 3.0 * (eps[0:1] - eps[1:2])
    else:
        guided = eps[2:3] + 3.0 * (eps[0:1] - eps[1:2]) + image_cfg_scale * (eps[1:2] - eps[2:3])
    return x - sigma * guided


@pytest.mark.parametrize("image_cfg_scale", [None, 1.0, 1.7, 0.5])
def test_pix2pix_latents_match_the_formula_on_recorded_unet_outputs(original_family, image_cfg_scale) -> None:
    with original_family.models.use("sd1-pix2pix") as scope:
        model = scope.model
        with unet_record(model.pipeline.unet) as calls:
            latents = OriginalBackend().generate(model, pix2pix_plan(image_cfg_scale), _Quiet())
        rows = 2 if image_cfg_scale in (None, 1.0) else 3
        assert len(calls) == 1 and calls[0]["sample"].shape[0] == rows
        with torch.inference_mode():
            expected_image = encode_mode(model.pipeline.vae, 2.0 * image_to_tensor(source_image()) - 1.0)
    sample, hidden = calls[0]["sample"], calls[0]["hidden"]
    assert torch.allclose(sample[0, 4:], expected_image[0]) and torch.equal(sample[1, 4:], sample[0, 4:])
    assert not torch.equal(hidden[0], hidden[1])
    if rows == 3:
        assert torch.equal(sample[2, 4:], torch.zeros_like(sample[2, 4:])) and torch.equal(hidden[1], hidden[2])
    assert torch.allclose(latents, guided_by_hand(calls, image_cfg_scale), atol=1e-4)


class _Quiet:
    preview_every_n_steps = 0
    interrupted = False
    skipped = False

    def step_done(self, step, preview=None) -> None:
        pass

    def add_infotext(self, entries) -> None:
        pass


@pytest.mark.slow
def test_pix2pix_image_cfg_scale_through_processing(original_family) -> None:
    def run(scale: float | None):
        request = tiny_img2img(checkpoint="sd1-pix2pix", image_cfg_scale=scale, **NOT_SAVED)
        return process(request, original_family)

    weak, strong, unset = run(1.0), run(2.5), run(None)
    assert "Image CFG scale: 2.5" in strong.infotexts[0] and "Image CFG scale" not in unset.infotexts[0]
    assert np.abs(pixels(weak.images[0]) - pixels(strong.images[0])).max() > 0
    assert np.array_equal(pixels(weak.images[0]), pixels(unset.images[0]))
    assert "Denoising strength: 0.5" in strong.infotexts[0]  # A1111 honours the strength for edit models
    with pytest.raises(ProcessingError, match="edits an image"):
        process(tiny_request(checkpoint="sd1-pix2pix", **NOT_SAVED), original_family)


# --- the SDXL refiner ------------------------------------------------------------------------------------------


def refiner_request(**fields):
    return tiny_request(checkpoint="sdxl", steps=6, **NOT_SAVED, **fields)


class RecordingOriginal(OriginalBackend):
    """The original backend, recording every UNet call of each pass under the pass's model name."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[dict]]] = []

    def generate(self, model, plan, progress):
        with unet_record(model.pipeline.unet) as calls:
            output = super().generate(model, plan, progress)
        self.calls.append((model.name, calls))
        return output


class TotalsLog(JobControl):
    """Records (step, total) of every step reported."""

    def __init__(self) -> None:
        super().__init__(preview_every_n_steps=0)
        self.reports: list[tuple[int, int]] = []

    def step_done(self, step, preview=None) -> None:
        super().step_done(step, preview)
        self.reports.append((step, self.snapshot().sampling_steps))


@pytest.mark.slow
def test_refiner_runs_exactly_the_steps_after_the_switch(original_family) -> None:
    """Euler, 6 steps: the uniform schedule's timesteps are 999, 799.2, 599.4, 399.6, 199.8; A1111 switches at
    the first whose (999 - t) / 1000 >= 0.5, step 3: the base model makes 3 calls, the refiner the other 3."""
    backend = RecordingOriginal()
    context = ProcessingContext(
        models=original_family.models, backend=backend, options=original_family.options, paths=original_family.paths
    )
    control = TotalsLog()
    result = process(
        refiner_request(sampler_name="Euler", refiner_checkpoint="sdxl-refiner", refiner_switch_at=0.5),
        context,
        control,
    )
    assert control.reports == [(1, 3), (2, 3), (3, 3), (1, 3), (2, 3), (3, 3)]  # each pass's own step count
    (base_name, base_calls), (refiner_name, refiner_calls) = backend.calls
    assert (base_name, refiner_name) == ("sdxl", "sdxl-refiner")
    assert len(base_calls) == 3 and len(refiner_calls) == 3
    assert [round(float(call["timestep"][0])) for call in refiner_calls] == [400, 200, 0]
    time_ids = refiner_calls[0]["added"]["time_ids"]  # rows: prompt, negative prompt
    assert time_ids.tolist() == [[SIZE, SIZE, 0, 0, 6.0], [SIZE, SIZE, 0, 0, 2.5]]
    assert base_calls[0]["added"]["time_ids"].tolist() == [[SIZE, SIZE, 0, 0, SIZE, SIZE]] * 2
    assert "Refiner: sdxl-refiner [" in result.infotexts[0] and "Refiner switch at: 0.5" in result.infotexts[0]
    whole = process(refiner_request(sampler_name="Euler"), original_family)
    assert np.abs(pixels(result.images[0]) - pixels(whole.images[0])).max() > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sampler", "task"), [("Euler a", "txt2img"), ("DPM++ SDE", "txt2img"), ("Euler a", "img2img")]
)
def test_base_as_its_own_refiner_is_the_base_alone(original_family, sampler, task) -> None:
    """The switch continues the same sigmas and each image's noise stream: switching to the same checkpoint
    changes nothing, also for samplers that draw noise every step (img2img: on its shortened schedule)."""

    def run(**fields):
        common = {"checkpoint": "sdxl", "sampler_name": sampler, "batch_size": 2, **NOT_SAVED, **fields}
        if task == "img2img":
            return process(tiny_img2img(steps=8, denoising_strength=0.75, **common), original_family)
        return process(tiny_request(steps=6, **common), original_family)

    alone = run()
    switched = run(refiner_checkpoint="sdxl", refiner_switch_at=0.4)
    assert "Refiner: sdxl [" in switched.infotexts[0]
    for first, second in zip(alone.images, switched.images, strict=True):
        assert np.array_equal(pixels(first), pixels(second))


def test_refiner_refuses_samplers_without_a_sigma_schedule(original_family) -> None:
    with pytest.raises(ProcessingError, match="refiner switch on the original backend does not support the DDIM"):
        process(refiner_request(sampler_name="DDIM", refiner_checkpoint="sdxl-refiner"), original_family)


# --- through the API's translation ------------------------------------------------------------------------------


def encoded_png(image: Image.Image) -> str:
    import base64
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.slow
def test_api_bodies_run_pix2pix_and_the_refiner_on_the_original_backend(original_family) -> None:
    from modules.api.models import Img2ImgBody, Txt2ImgBody
    from modules.api.translate import TranslationContext, translate_img2img, translate_txt2img

    context = TranslationContext(original_family.options, original_family.models.registry)

    def settings(checkpoint: str) -> dict:
        return {"sd_sampling_backend": "original", "sd_model_checkpoint": checkpoint}

    size = {"width": SIZE, "height": SIZE, "steps": 4}
    edit = translate_img2img(
        Img2ImgBody(
            init_images=[encoded_png(source_image())],
            image_cfg_scale=1.8,
            override_settings=settings("sd1-pix2pix"),
            **size,
        ),
        context,
    )
    assert not edit.unsupported and edit.request.sampling_backend == "original"
    result = process(edit.request.model_copy(update=NOT_SAVED), original_family)
    assert "Image CFG scale: 1.8" in result.infotexts[0] and "Model: sd1-pix2pix," in result.infotexts[0]
    refined = translate_txt2img(
        Txt2ImgBody(
            refiner_checkpoint="sdxl-refiner", refiner_switch_at=0.5, override_settings=settings("sdxl"), **size
        ),
        context,
    )
    assert not refined.unsupported and refined.request.sampling_backend == "original"
    result = process(refined.request.model_copy(update=NOT_SAVED), original_family)
    assert "Refiner: sdxl-refiner [" in result.infotexts[0] and "Refiner switch at: 0.5" in result.infotexts[0]


@pytest.mark.slow
def test_sdxl_empty_negative_prompt_rows_are_zeros(original_family) -> None:
    """A1111's SDXL ``force_zero_negative_prompt``: all negatives empty -> zero text rows, time ids kept."""
    backend = RecordingOriginal()
    context = ProcessingContext(
        models=original_family.models, backend=backend, options=original_family.options, paths=original_family.paths
    )
    process(tiny_request(checkpoint="sdxl", negative_prompt="", steps=1, **NOT_SAVED), context)
    process(tiny_request(checkpoint="sdxl", negative_prompt="blurry", steps=1, **NOT_SAVED), context)
    (_, (empty,)), (_, (written,)) = backend.calls
    assert not empty["hidden"][1].any() and not empty["added"]["text_embeds"][1].any()
    assert empty["hidden"][0].any() and empty["added"]["time_ids"][1].tolist() == [SIZE, SIZE, 0, 0, SIZE, SIZE]
    assert written["hidden"][1].any() and written["added"]["text_embeds"][1].any()
