"""What every backend promises, on the tiny model. A new backend joins by being listed in the registry."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from modules.backends.registry import backend_names, create_backend
from modules.processing.job import JobControl
from modules.processing.processing import ProcessingContext, process
from tests.helpers import StopAtStep, pixels, tiny_img2img, tiny_request


@pytest.fixture(scope="module", params=backend_names())
def backend_context(request, context) -> ProcessingContext:
    """The session's tiny-model context with the backend under test."""
    return ProcessingContext(
        models=context.models, backend=create_backend(request.param), options=context.options, paths=context.paths
    )


class ProgressLog(JobControl):
    """Records (step, total) of every step reported."""

    def __init__(self) -> None:
        super().__init__(preview_every_n_steps=0)
        self.reports: list[tuple[int, int]] = []

    def step_done(self, step, preview=None) -> None:
        super().step_done(step, preview)
        self.reports.append((step, self.snapshot().sampling_steps))


@contextmanager
def unet_calls(context: ProcessingContext) -> Iterator[list[int]]:
    calls: list[int] = []
    handle = context.models.ensure_loaded().pipeline.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def test_same_request_and_seed_give_the_same_bytes(backend_context):
    first = process(tiny_request(seed=21), backend_context).images[0]
    second = process(tiny_request(seed=21), backend_context).images[0]
    other = process(tiny_request(seed=22), backend_context).images[0]
    assert first.tobytes() == second.tobytes()
    assert first.tobytes() != other.tobytes()


def test_image_i_of_a_batch_is_the_single_run_of_seed_plus_i(backend_context):
    batch = process(tiny_request(seed=30, batch_size=2, n_iter=2), backend_context)
    assert batch.seeds == [30, 31, 32, 33] and len(batch.images) == len(batch.infotexts) == 4
    for index, image in enumerate(batch.images):
        single = process(tiny_request(seed=30 + index), backend_context).images[0]
        assert np.abs(pixels(image) - pixels(single)).max() <= 1  # batched CPU kernels may round differently


def test_interrupt_stops_at_the_step_and_keeps_the_image(backend_context):
    control = StopAtStep(1)
    result = process(tiny_request(steps=4, n_iter=2), backend_context, control)
    assert result.interrupted and len(result.images) == 1
    assert control.steps_seen == [1]


def test_skip_ends_the_current_image_and_goes_on(backend_context):
    control = StopAtStep(1, action="skip")
    result = process(tiny_request(steps=3, n_iter=2, seed=40), backend_context, control)
    assert not result.interrupted and len(result.images) == 2
    assert control.steps_seen == [1, 1, 2, 3]
    single = process(tiny_request(steps=3, seed=41), backend_context).images[0]
    assert np.array_equal(pixels(result.images[1]), pixels(single))


def test_progress_counts_the_steps_that_run(backend_context):
    control = ProgressLog()
    with unet_calls(backend_context) as calls:
        process(tiny_request(steps=3), backend_context, control)
    assert control.reports == [(1, 3), (2, 3), (3, 3)] and len(calls) == 3
    control = ProgressLog()
    with unet_calls(backend_context) as calls:
        process(tiny_img2img(steps=4, denoising_strength=0.5), backend_context, control)
    assert [total for _, total in control.reports] == [len(calls)] * len(calls)
    assert [step for step, _ in control.reports] == list(range(1, len(calls) + 1))


def test_hires_runs_both_passes_at_their_sizes(backend_context):
    request = tiny_request(steps=2, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=3, denoising_strength=0.6)
    control = ProgressLog()
    with unet_calls(backend_context) as calls:
        result = process(request, backend_context, control)
    assert result.images[0].size == (96, 96)
    assert len(calls) == 2 + 3
    assert [total for _, total in control.reports] == [2, 2, 3, 3, 3]
