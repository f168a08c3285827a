"""The job queue: arrival order, and interrupt acting on the caller's running job only."""

from __future__ import annotations

import time

from modules.generation import GenerationService, JobState
from modules.processing.requests import Txt2ImgRequest
from tests.helpers import tiny_request


def request(seed: int, steps: int = 8) -> Txt2ImgRequest:
    return tiny_request(prompt="a boat", negative_prompt="", steps=steps, seed=seed)


def wait_until_running(job, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while job.state is not JobState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.state is JobState.RUNNING


def test_interrupt_stops_the_running_job_not_the_queued_one(context):
    service = GenerationService(context)
    try:
        first = service.submit(request(1, steps=40), owner="alice")
        second = service.submit(request(2), owner="alice")
        wait_until_running(first)
        assert service.position(second) == 1
        assert not service.interrupt(owner="bob"), "another user cannot interrupt alice's job"
        assert service.interrupt(owner="alice")
        assert first.future.result(timeout=120).interrupted
        finished = second.future.result(timeout=120)
        assert not finished.interrupted and len(finished.images) == 1
        assert first.number < second.number
    finally:
        service.shutdown()


def test_an_admin_may_interrupt_any_job_and_an_id_names_a_queued_one(context):
    service = GenerationService(context)
    try:
        running = service.submit(request(3, steps=40), owner="alice")
        queued = service.submit(request(4), owner="bob")
        wait_until_running(running)
        assert service.interrupt(owner="bob", job_id=queued.id)
        assert service.interrupt(owner="root", admin=True)
        assert running.future.result(timeout=120).interrupted
        assert queued.future.result(timeout=120).images == []
    finally:
        service.shutdown()
