"""Prompt editing and alternation feed the UNet the embedding A1111 feeds it, call by call, on both backends.

A1111 (``CFGDenoiser.forward`` -> ``reconstruct_multicond_batch(cond, self.step)``): ``self.step`` is 0 at the
first model call and grows by one per call; the call takes the first schedule entry with
``step <= end_at_step``. So ``[a:b:0.5]`` at 20 steps (end_at_step 10) feeds ``a`` to calls 0-10 and ``b`` to
calls 11-19, and ``[a|b]`` (schedule ``[[1, a], [2, b], [3, a], ...]``) feeds a, a, b, a, b, ... A second-order
sampler (``second_order`` in A1111's sampler list: Heun, DPM2, DPM2 a, DPM++ 2S a, DPM++ SDE, Restart) has its
schedule built on ``steps * 2`` (``SamplerData.total_steps`` in ``setup_conds``), the hires pass's likewise
(``calculate_hr_conds``, whose base steps are the first pass's doubled ``firstpass_steps``). The expected
sequences below are written out from that rule; each test also runs the same request on the other backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from modules.backends.diffusers_backend import DiffusersBackend
from modules.backends.original.backend import OriginalBackend
from modules.models.detection import ModelArchitecture
from modules.models.service import ModelService
from modules.options import Options
from modules.paths import DataPaths
from modules.processing.processing import ProcessingContext, process
from modules.prompts.conditioning import prompt_encoder_of
from modules.tiny_model import build_tiny_pipeline, write_diffusers
from tests.helpers import make_manager, tiny_img2img, tiny_request

CAT, DOG, HAT, NEGATIVE = "a cat", "a dog", "a hat", "blurry"
C, D = (CAT,), (DOG,)


def a1111_calls(schedule: list[tuple[int, tuple[str, ...]]], calls: int) -> list[tuple[str, ...]]:
    """A1111's pick for each 0-based model call: the first entry with ``call <= end_at_step`` (else the last)."""
    return [next((texts for end, texts in schedule if call <= end), schedule[-1][1]) for call in range(calls)]


def with_backend(context: ProcessingContext, backend: object) -> ProcessingContext:
    return ProcessingContext(
        models=context.models,
        backend=backend,  # type: ignore[arg-type]
        options=context.options,
        paths=context.paths,
        postprocessor=context.postprocessor,
    )


@contextmanager
def fed_prompts(context: ProcessingContext) -> Iterator[list[tuple[str, ...]]]:
    """Per UNet call, the prompt texts of its rows other than the negative prompt (in row order), found by
    comparing each row of ``encoder_hidden_states`` with the encoded texts (a forward pre-hook, not a mock)."""
    model = context.models.ensure_loaded()
    encoder = prompt_encoder_of(model)
    encoded = {text: encoder.encode(text) for text in (CAT, DOG, HAT, NEGATIVE)}
    seen: list[tuple[str, ...]] = []

    def names(rows: torch.Tensor, pooled: bool) -> list[str]:
        found = []
        for row in rows.float():
            known = {text: (item.pooled if pooled else item.embeds)[0] for text, item in encoded.items()}
            matches = [text for text, value in known.items() if torch.allclose(row, value, atol=1e-5, rtol=0)]
            assert len(matches) == 1, f"a UNet row matches {matches or 'no known prompt'} (pooled: {pooled})"
            found.extend(matches)
        return found

    def record(module, args, kwargs) -> None:
        rows = names(kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None), pooled=False)
        assert rows.count(NEGATIVE) == 1, f"expected one negative row per call, got {rows}"
        added = kwargs.get("added_cond_kwargs") or {}
        if "text_embeds" in added:  # SDXL: the pooled embeddings switch with the hidden states
            assert names(added["text_embeds"], pooled=True) == rows
        seen.append(tuple(text for text in rows if text != NEGATIVE))

    handle = model.pipeline.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def both_backends(context: ProcessingContext, make_request=tiny_request, **fields) -> dict[str, list[tuple[str, ...]]]:
    """The per-call prompt sequence of the same request on each backend."""
    sequences = {}
    for backend in (DiffusersBackend(), OriginalBackend()):
        with fed_prompts(context) as seen:
            process(make_request(negative_prompt=NEGATIVE, **fields), with_backend(context, backend))
        sequences[backend.name] = list(seen)
    return sequences


@pytest.mark.parametrize(
    ("prompt", "sampler", "steps", "expected"),
    [
        ("a [cat:dog:0.5]", "Euler", 4, [C, C, C, D]),  # end_at_step int(0.5 * 4) = 2
        ("a [cat:dog:0.5]", "Euler", 5, [C, C, C, D, D]),  # int(2.5) = 2
        ("a [cat:dog:0.5]", "Euler", 20, [C] * 11 + [D] * 9),  # end_at_step 10: calls 0-10
        # 7 model calls: A1111 counts calls, not steps, and builds a second-order sampler's schedule on 2 * 4 = 8
        # steps: end_at_step int(0.5 * 8) = 4 (calls 0-4), not int(0.5 * 4) = 2.
        ("a [cat:dog:0.5]", "Heun", 4, [C] * 5 + [D] * 2),
        ("a [cat:dog:2]", "Heun", 4, [C, C, C, D, D, D, D]),  # an integer `when` is a call number either way
        ("a [cat:dog:0.25]", "DPM2", 4, [C] * 3 + [D] * 4),  # int(0.25 * 8) = 2 (on plain steps: 1)
        ("a [cat:dog:0.25]", "DPM++ SDE", 4, [C] * 3 + [D] * 4),
        ("a [cat:dog:0.5]", "DPM++ 2M", 4, [C, C, C, D]),  # not second-order: the schedule spans 4 steps
        ("a [cat|dog]", "Euler", 4, [C, C, D, C]),  # [[1, cat], [2, dog], [3, cat], [4, dog]]
    ],
)
def test_each_model_call_gets_a1111_s_embedding(context, prompt, sampler, steps, expected) -> None:
    sequences = both_backends(context, prompt=prompt, sampler_name=sampler, steps=steps)
    assert sequences["diffusers"] == expected
    assert sequences["original"] == expected


def test_and_parts_switch_at_a1111_s_step(context) -> None:
    sequences = both_backends(context, prompt="a [cat:dog:0.5] AND a hat", steps=4, cfg_scale=7.0)
    expected = a1111_calls([(2, (CAT, HAT)), (4, (DOG, HAT))], 4)
    assert expected == [(CAT, HAT)] * 3 + [(DOG, HAT)]
    assert sequences["diffusers"] == sequences["original"] == expected


def test_img2img_schedules_over_the_requested_steps(context) -> None:
    # A1111 schedules img2img over p.steps (end_at_step int(0.25 * 8) = 2) and runs t_enc + 1 = 5 calls from
    # call 0; the diffusers backend runs int(8 * 0.5) = 4 calls and feeds them the same schedule.
    sequences = both_backends(context, tiny_img2img, prompt="a [cat:dog:0.25]", steps=8, denoising_strength=0.5)
    expected = a1111_calls([(2, C), (8, D)], 5)
    assert expected == [C, C, C, D, D]
    assert sequences["original"] == expected
    assert sequences["diffusers"] == expected[:4]


def test_the_hires_pass_switches_at_a1111_s_step(hires_context) -> None:
    # A1111: "1.5" is half the hires steps (end_at_step (1.5 - 1) * 4 = 2 in the hires pass); the first pass's
    # schedule clamps it to its last step, so the first pass is all "a cat". The hires pass counts from call 0.
    fields = {"enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 4, "denoising_strength": 0.6}
    sequences = both_backends(hires_context, prompt="a [cat:dog:1.5]", steps=4, **fields)
    expected = [C] * 4 + a1111_calls([(2, C), (4, D)], 4)
    assert expected == [C] * 4 + [C, C, C, D]
    assert sequences["diffusers"] == sequences["original"] == expected


@pytest.mark.parametrize(
    ("prompt", "sampler", "hires_sampler", "expected"),
    [
        # The Heun hires pass (4 steps, 7 calls) reads "1.5" against 2 * 4 = 8 steps: end_at_step (1.5 - 1) * 8 = 4.
        ("a [cat:dog:1.5]", "Euler", "Heun", [C] * 4 + a1111_calls([(4, C), (8, D)], 7)),
        # A Heun first pass (7 calls) has A1111's firstpass_steps 8: "6" ends at call 6 there (all "a cat"), and the
        # hires pass's integer offset is 8, so 6 - 8 < 1 gives "a dog" from its first call.
        ("a [cat:dog:6]", "Heun", "Euler", a1111_calls([(6, C), (8, D)], 7) + [D] * 4),
    ],
)
def test_the_hires_schedule_doubles_for_second_order_samplers(
    hires_context, prompt, sampler, hires_sampler, expected
) -> None:
    fields = {"enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 4, "denoising_strength": 0.6}
    sequences = both_backends(
        hires_context, prompt=prompt, steps=4, sampler_name=sampler, hr_sampler_name=hires_sampler, **fields
    )
    assert sequences["diffusers"] == sequences["original"] == expected


@pytest.fixture(scope="module")
def xl_context(tmp_path_factory) -> ProcessingContext:
    paths = DataPaths.create(tmp_path_factory.mktemp("data-xl"))
    paths.ensure()
    write_diffusers(build_tiny_pipeline(architecture=ModelArchitecture.SDXL), paths.checkpoints_dir / "tiny_xl")
    return ProcessingContext(
        models=ModelService(make_manager(paths)), backend=DiffusersBackend(), options=Options(), paths=paths
    )


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a [cat:dog:0.5]", [C, C, C, D]),
        ("a [cat:dog:0.5] AND a hat", [(CAT, HAT)] * 3 + [(DOG, HAT)]),
    ],
)
def test_sdxl_hidden_states_and_pooled_embeddings_switch_at_a1111_s_step(xl_context, prompt, expected) -> None:
    sequences = both_backends(xl_context, prompt=prompt, steps=4)
    assert sequences["diffusers"] == sequences["original"] == expected


@pytest.mark.parametrize(
    ("sampler", "expected", "diffusers_calls"),
    [
        ("Euler", a1111_calls([(2, C), (4, D)], 4), [0, 1, 2, 3]),  # end_at_step int(0.5 * 4) = 2
        # end_at_step int(0.5 * 8) = 4 over A1111's 7 calls. diffusers' Heun timesteps are [999, 666, 666, 333, 333,
        # 0, 0]: the base part runs the three at or above the cutoff 500 (calls 0-2), the refiner's part starts at
        # index 2 again (diffusers' odd count below the cutoff for a second-order scheduler), so call 2 runs twice.
        ("Heun", a1111_calls([(4, C), (8, D)], 7), [0, 1, 2, 2, 3, 4, 5, 6]),
    ],
)
def test_the_refiner_part_counts_on_in_one_schedule(xl_context, sampler, expected, diffusers_calls) -> None:
    # A1111 builds one schedule over all the steps and its CFG wrapper counts on across the refiner switch (one
    # sampler call). The checkpoint as its own refiner keeps one UNet to record; Easel still runs two parts.
    sequences = both_backends(
        xl_context,
        prompt="a [cat:dog:0.5]",
        steps=4,
        sampler_name=sampler,
        refiner_checkpoint="tiny_xl",
        refiner_switch_at=0.5,
    )
    assert sequences["original"] == expected
    assert sequences["diffusers"] == [expected[call] for call in diffusers_calls]


def test_the_refiner_part_counts_on_with_and(xl_context) -> None:
    # The AND path (ComposableGuidanceUNet) starts the refiner's part at the base part's call count too.
    sequences = both_backends(
        xl_context,
        prompt="a [cat:dog:0.5] AND a hat",
        steps=4,
        cfg_scale=7.0,
        sampler_name="Euler",
        refiner_checkpoint="tiny_xl",
        refiner_switch_at=0.5,
    )
    assert sequences["diffusers"] == sequences["original"] == [(CAT, HAT)] * 3 + [(DOG, HAT)]
