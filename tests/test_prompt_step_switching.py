"""Scheduled conditioning reaches the tiny UNet at the right steps through callback_on_step_end."""

from __future__ import annotations

import pytest
import torch
from diffusers import EulerDiscreteScheduler

from modules.prompts.conditioning import PromptEncoder
from modules.prompts.step_switching import ScheduledEmbeddings


def run_and_record(pipeline, schedule: ScheduledEmbeddings, steps: int, guidance_scale: float) -> list[torch.Tensor]:
    """The encoder_hidden_states the UNet received at each step (a forward pre-hook, not a mock)."""
    seen: list[torch.Tensor] = []

    def record(module, args, kwargs) -> None:
        seen.append(kwargs["encoder_hidden_states"].clone())

    handle = pipeline.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        pipeline(
            **schedule.at_step(0).as_kwargs(),
            num_inference_steps=steps,
            height=64,
            width=64,
            guidance_scale=guidance_scale,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
            callback_on_step_end=schedule,
            callback_on_step_end_tensor_inputs=schedule.tensor_inputs,
        )
    finally:
        handle.remove()
    return seen


@pytest.fixture
def euler_pipeline(tiny_pipeline):
    """The tiny pipeline's components with Euler (one UNet call per step; PNDM adds a warm-up call)."""
    scheduler = EulerDiscreteScheduler.from_config(tiny_pipeline.scheduler.config)
    pipeline = type(tiny_pipeline)(**{**tiny_pipeline.components, "scheduler": scheduler})
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture
def encoder(tiny_pipeline) -> PromptEncoder:
    return PromptEncoder.for_pipeline(tiny_pipeline, model_key="tiny")


def test_prompt_editing_switches_at_the_right_step(euler_pipeline, encoder: PromptEncoder) -> None:
    positive = encoder.encode_conditioning("a [cat:dog:2]", steps=4)
    negative = encoder.encode_conditioning("blurry", steps=4, split_and=False)
    positive, negative = encoder.align([positive, negative])
    schedule = ScheduledEmbeddings([positive], [negative])
    seen = run_and_record(euler_pipeline, schedule, steps=4, guidance_scale=7.0)
    cat, dog, blurry = (encoder.encode(text).embeds for text in ("a cat", "a dog", "blurry"))
    assert len(seen) == 4
    # A1111 (reconstruct_cond_batch): 0-based model call `step` takes the first entry with step <= end_at_step;
    # the schedule is [[2, "a cat"], [4, "a dog"]], so calls 0, 1 and 2 get "a cat" and only call 3 "a dog".
    for step, hidden in enumerate(seen):
        assert hidden.shape == (2, 77, 32)
        torch.testing.assert_close(hidden[0:1], blurry)
        torch.testing.assert_close(hidden[1:2], cat if step <= 2 else dog, msg=f"step {step}")


def test_alternation_flips_every_step_after_the_first_two_without_guidance(
    euler_pipeline, encoder: PromptEncoder
) -> None:
    positive = encoder.encode_conditioning("a [cat|dog]", steps=4)
    schedule = ScheduledEmbeddings([positive], None)
    seen = run_and_record(euler_pipeline, schedule, steps=4, guidance_scale=1.0)
    cat, dog = encoder.encode("a cat").embeds, encoder.encode("a dog").embeds
    # A1111's schedule is [[1, cat], [2, dog], [3, cat], [4, dog]] and its 0-based model call `step` takes the first
    # entry with step <= end_at_step: calls 0 and 1 both get "cat" (entry 1), then dog, cat.
    assert [torch.equal(hidden, cat) for hidden in seen] == [True, True, False, True]
    assert torch.equal(seen[2], dog)


def test_and_prompts_are_refused_with_a_clear_error(encoder: PromptEncoder) -> None:
    with pytest.raises(ValueError, match="AND"):
        ScheduledEmbeddings([encoder.encode_conditioning("a AND b", steps=4)], None)
