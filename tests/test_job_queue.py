"""The SQLite job queue: lossless rows, fair order between logins, limits, cancel, and a restart that resumes."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules.generation import GenerationService, JobCancelledError, JobState, QueueFullError
from modules.jobs.codec import decode_request, encode_request
from modules.jobs.database import Database
from modules.jobs.store import RESTART_REASON, JobStore
from modules.options import Options
from tests.helpers import tiny_img2img, tiny_request

WAIT = 120


def blocked(service: GenerationService) -> threading.Event:
    """Holds the worker with an internal task until the returned event is set (tasks run before generations)."""
    release = threading.Event()
    service.submit_task(lambda: release.wait(WAIT), kind="hold")
    return release


def test_requests_travel_through_the_table_losslessly() -> None:
    mask = Image.fromarray(np.random.default_rng(1).integers(0, 2, (64, 64), dtype=np.uint8) * 255, mode="L")
    rgba = Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 64, 4), dtype=np.uint8), mode="RGBA")
    for request in (
        tiny_request(prompt="a (boat:1.2)", styles=["s"], extra={"x": [1, 2]}, enable_hr=True),
        tiny_img2img(mask=mask, inpainting_fill=2, resize_mode=1),
        tiny_img2img(init_image=rgba),
    ):
        kind, text = encode_request(request)
        back = decode_request(kind, text)
        assert type(back) is type(request)
        plain = {key: value for key, value in request.model_dump().items() if not isinstance(value, Image.Image)}
        assert {key: value for key, value in back.model_dump().items() if key in plain} == plain
        for name in ("init_image", "mask"):
            original, restored = getattr(request, name, None), getattr(back, name, None)
            if original is not None:
                assert restored.mode == original.mode and restored.size == original.size
                assert np.array_equal(np.asarray(restored), np.asarray(original))


def test_fair_order_is_round_robin_between_logins() -> None:
    store = JobStore(Database())
    for index in range(100):
        store.add(f"a{index}", "alice", tiny_request(seed=index))
    store.claim_next()  # alice's first job runs
    store.add("b0", "bob", tiny_request())
    store.add("c0", "carol", tiny_request())
    store.add("b1", "bob", tiny_request())
    order = store.waiting_ids()
    # bob's and carol's first jobs wait behind one more of alice's; each login's k-th job is in the k-th round
    assert order[:6] == ["a1", "b0", "c0", "a2", "b1", "a3"]
    assert store.position("b0") == 2 and store.position("a99") == 102
    assert store.position("a0") == 0  # running


def test_per_login_limit_counts_waiting_jobs_only(context) -> None:
    service = GenerationService(replace(context, options=Options(queue_max_jobs_per_user=2)))
    release = blocked(service)
    try:
        first = service.submit(tiny_request(seed=1), owner="alice")
        service.submit(tiny_request(seed=2), owner="alice")
        with pytest.raises(QueueFullError, match="limit 2"):
            service.submit(tiny_request(seed=3), owner="alice")
        service.submit(tiny_request(seed=4), owner="bob")  # bob has his own allowance
        assert service.cancel(first.id, owner="alice")
        service.submit(tiny_request(seed=5), owner="alice")  # room again
    finally:
        release.set()
        service.shutdown()


def test_cancel_by_owner_or_admin_only(context) -> None:
    service = GenerationService(context)
    release = blocked(service)
    try:
        mine = service.submit(tiny_request(seed=1), owner="alice")
        other = service.submit(tiny_request(seed=2), owner="bob")
        kept = service.submit(tiny_request(seed=3), owner="bob")
        assert not service.cancel(mine.id, owner="bob"), "bob cannot cancel alice's job"
        assert not service.cancel("no-such-job", owner="bob")
        assert service.cancel(mine.id, owner="alice")
        assert service.cancel(other.id, owner="root", admin=True)
        assert not service.cancel(mine.id, owner="alice"), "already cancelled"
        with pytest.raises(JobCancelledError):
            mine.future.result(timeout=1)
        assert service.store.record(other.id).state is JobState.CANCELLED
        assert [job.id for job in service.pending() if job.kind == "generate"] == [kept.id]
        release.set()
        assert len(kept.future.result(timeout=WAIT).images) == 1
        assert service.store.record(kept.id).state is JobState.DONE
        assert service.store.record(mine.id).state is JobState.CANCELLED
    finally:
        release.set()
        service.shutdown()


def test_restart_resumes_waiting_jobs_in_order_and_fails_the_running_one(context, tmp_path: Path) -> None:
    location = tmp_path / "queue.db"
    before = JobStore(Database(location))  # the previous process: one job running, three waiting, then killed
    before.add("running", "alice", tiny_request(seed=10, save_images=True))
    before.claim_next()
    for job_id, owner, seed in (("w1", "alice", 11), ("w2", "alice", 12), ("w3", "bob", 13)):
        before.add(job_id, owner, tiny_request(seed=seed, save_images=True))
    before.database.close()

    service = GenerationService(context, JobStore(Database(location)))
    try:
        resumed = [service.job(job_id) for job_id in ("w1", "w3", "w2")]
        results = [job.future.result(timeout=WAIT) for job in resumed]
        assert [result.seeds for result in results] == [[11], [13], [12]]  # fair order: w3 is bob's first
        records = {job_id: service.store.record(job_id) for job_id in ("running", "w1", "w2", "w3")}
        assert records["running"].state is JobState.FAILED and records["running"].error == RESTART_REASON
        for job_id in ("w1", "w2", "w3"):
            assert records[job_id].state is JobState.DONE
            assert [Path(path).exists() for path in records[job_id].result_paths] == [True]
        starts = [records[job_id].started_at for job_id in ("w1", "w3", "w2")]
        assert starts == sorted(starts)
    finally:
        service.shutdown()


def test_finished_rows_beyond_the_kept_number_are_forgotten_waiting_ones_never() -> None:
    store = JobStore(Database(), keep_finished=3, trim_every=2)
    for index in range(8):
        store.add(f"j{index}", "alice", tiny_request(prompt=f"job {index}"))
    for _ in range(6):
        record, _request = store.claim_next()
        store.finish(record.id, JobState.DONE, ["x.png"])
    kept = [record.id for record in store.list()]
    assert kept == ["j6", "j7", "j5", "j4", "j3"]  # trimmed after the 6th finish: the 3 newest finished stay
    assert [record.prompt for record in store.list() if record.state is JobState.QUEUED] == ["job 6", "job 7"]


def test_a_page_closed_while_its_job_waits_cancels_the_job(context) -> None:
    """The UI's job stream: when Gradio closes it (the page went away) before the job started, the job is cancelled."""
    from modules.ui.handlers import stream_job

    service = GenerationService(context)
    try:
        release = blocked(service)
        updates = stream_job(service, tiny_request(steps=1), owner="ann", poll_seconds=0.05)
        first = next(updates)
        assert "queue" in (first.progress or "").lower()
        [job] = [job for job in service.pending() if job.owner == "ann"]
        updates.close()
        assert job.state is JobState.CANCELLED
        with pytest.raises(JobCancelledError, match="page was closed"):
            job.future.result(timeout=WAIT)
        release.set()
    finally:
        service.shutdown()


def test_an_older_queue_db_gets_the_scripts_column(tmp_path: Path) -> None:
    """A queue.db written before jobs kept their scripts: the column is added on open, its queued jobs stay."""
    import sqlite3

    path = tmp_path / "queue.db"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, owner TEXT NOT NULL, "
            "kind TEXT NOT NULL, request TEXT NOT NULL, prompt TEXT NOT NULL DEFAULT '', state TEXT NOT NULL, "
            "round INTEGER NOT NULL, queued_at REAL NOT NULL, started_at REAL, finished_at REAL, "
            "result_paths TEXT NOT NULL DEFAULT '[]', error TEXT)"
        )
        kind, text = encode_request(tiny_request())
        connection.execute(
            "INSERT INTO jobs (id, owner, kind, request, state, round, queued_at) "
            "VALUES ('old', '', ?, ?, 'queued', 1, 0)",
            (kind, text),
        )
    store = JobStore(Database(path))
    record, _request = store.claim_next()
    assert record.id == "old" and record.scripts is None
    assert store.add("new", "", tiny_request(), scripts='{"selected": null}').scripts == '{"selected": null}'


def test_script_arguments_with_units_are_stored_as_plain_data():
    """A ControlNet unit (a dataclass with enums and an image) is stored as its fields; read back, the script's own
    conversion makes the same unit again."""
    from PIL import Image

    from modules.controlnet.units import ControlMode, ControlUnit, as_unit
    from modules.jobs.codec import decode_value, encode_value

    image = Image.new("RGB", (8, 8), (1, 2, 3))
    unit = ControlUnit(enabled=True, model="tiny", weight=0.5, image=image, control_mode=ControlMode.CONTROL)
    stored = decode_value(encode_value({"unit_0": unit}))["unit_0"]
    assert stored["control_mode"] == "ControlNet is more important" and stored["weight"] == 0.5
    back = as_unit(stored)
    assert (back.enabled, back.model, back.control_mode) == (True, "tiny", ControlMode.CONTROL)
    assert back.image.tobytes() == unit.image.tobytes()
