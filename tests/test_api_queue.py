"""One queue for every user: arrival order kept, each sees only their own jobs, interrupt acts on one's own job."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.api_support import SMALL, ApiServer, copy_checkpoints, start_api_server, write_tiny_checkpoints

ALICE, BOB, ROOT = ("alice", "a-pass"), ("bob", "b-pass"), ("root", "r-pass")
LONG = {**SMALL, "n_iter": 20}
HOLDING = {**SMALL, "n_iter": 6}  # keeps the queue busy while others arrive
WAIT_SECONDS = 300


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("api-queue")
    write_tiny_checkpoints(root / "checkpoints", names=("tiny",))
    copy_checkpoints(root / "checkpoints", root / "data")
    logins = ",".join(":".join(login) for login in (ALICE, BOB, ROOT))
    running = start_api_server(root / "data", ["--api-auth", logins, "--admin-user", "root"])
    yield running
    running.stop()


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def task_state(client: httpx.Client, task_id: str) -> dict:
    return client.post("/internal/progress", json={"id_task": task_id}).json()


def submit(pool: ThreadPoolExecutor, client: httpx.Client, body: dict) -> Future:
    return pool.submit(client.post, "/sdapi/v1/txt2img", json=body)


def info(future: Future) -> dict:
    response = future.result(timeout=WAIT_SECONDS)
    assert response.status_code == 200, response.text
    return json.loads(response.json()["info"])


def saved_seeds_in_order(data_dir: Path) -> list[int]:
    files = sorted((data_dir / "outputs" / "txt2img-images").rglob("*.png"))
    return [int(path.stem.split("-")[1]) for path in files]


def test_two_users_share_one_queue_in_order_and_only_touch_their_own_jobs(server: ApiServer) -> None:
    alice, bob, root = server.client(ALICE), server.client(BOB), server.client(ROOT)
    with ThreadPoolExecutor(4) as pool:
        long_job = submit(pool, alice, {**HOLDING, "seed": 1, "force_task_id": "alice-long"})
        wait_for(lambda: task_state(alice, "alice-long")["active"], "alice's long job to start")
        # bob has no job: his interrupt and skip touch nothing (they would act on his own job only)
        assert bob.post("/sdapi/v1/interrupt").status_code == 200
        assert bob.post("/sdapi/v1/skip").status_code == 200
        queued = []
        for client, task_id, seed in ((alice, "a1", 101), (bob, "b1", 102), (alice, "a2", 103)):
            body = {**SMALL, "seed": seed, "save_images": True, "force_task_id": task_id}
            queued.append(submit(pool, client, body))
            wait_for(lambda task_id=task_id: task_id in root.get("/internal/pending-tasks").json()["tasks"], task_id)

        assert root.get("/internal/pending-tasks").json() == {"size": 3, "tasks": ["a1", "b1", "a2"]}
        assert alice.get("/internal/pending-tasks").json()["tasks"] == ["a1", "a2"]
        assert bob.get("/internal/pending-tasks").json()["tasks"] == ["b1"]
        assert task_state(alice, "a2")["queued"] is True and task_state(alice, "a2")["queue_position"] == 3
        hidden = task_state(bob, "a1")
        assert hidden["queued"] is False and hidden["active"] is False  # not bob's job
        assert bob.get("/sdapi/v1/progress").json()["current_task"] == "b1"  # his own, queued
        assert alice.get("/sdapi/v1/progress").json()["current_task"] == "alice-long"

        long_info = info(long_job)
        assert long_info["interrupted"] is False and len(long_info["all_seeds"]) == HOLDING["n_iter"]
        assert [info(future)["seed"] for future in queued] == [101, 102, 103]
    assert saved_seeds_in_order(server.data_dir) == [101, 102, 103]
    assert task_state(alice, "a1")["completed"] is True


def test_own_interrupt_stops_the_job_and_admin_may_stop_anyones(server: ApiServer) -> None:
    alice, bob, root = server.client(ALICE), server.client(BOB), server.client(ROOT)
    with ThreadPoolExecutor(2) as pool:
        for owner, stopper, task_id in ((alice, alice, "alice-stop"), (bob, root, "bob-stop")):
            job = submit(pool, owner, {**LONG, "seed": 5, "force_task_id": task_id})
            wait_for(lambda task_id=task_id, owner=owner: task_state(owner, task_id)["active"], task_id)
            assert stopper.post("/sdapi/v1/interrupt").status_code == 200
            stopped = info(job)
            assert stopped["interrupted"] is True and len(stopped["all_seeds"]) < LONG["n_iter"]


def test_force_task_id_in_use_is_a_conflict(server: ApiServer) -> None:
    alice = server.client(ALICE)
    with ThreadPoolExecutor(1) as pool:
        job = submit(pool, alice, {**LONG, "seed": 8, "force_task_id": "dup"})
        wait_for(lambda: task_state(alice, "dup")["active"], "dup")
        again = alice.post("/sdapi/v1/txt2img", json={**SMALL, "force_task_id": "dup"})
        assert again.status_code == 409
        alice.post("/sdapi/v1/interrupt")
        info(job)


def test_cancel_by_id_is_the_owners_and_another_login_learns_nothing(server: ApiServer) -> None:
    alice, bob, root = server.client(ALICE), server.client(BOB), server.client(ROOT)
    with ThreadPoolExecutor(3) as pool:
        holding = submit(pool, alice, {**HOLDING, "seed": 20, "force_task_id": "hold-c"})
        wait_for(lambda: task_state(alice, "hold-c")["active"], "the holding job")
        waiting = submit(pool, alice, {**SMALL, "seed": 21, "force_task_id": "to-cancel"})
        kept = submit(pool, bob, {**SMALL, "seed": 22, "force_task_id": "bob-kept"})
        wait_for(lambda: {"to-cancel", "bob-kept"} <= set(root.get("/internal/pending-tasks").json()["tasks"]), "jobs")

        listed = {item["id"]: item for item in alice.get("/internal/queue").json()["items"]}
        assert listed["to-cancel"]["state"] == "queued" and listed["to-cancel"]["position"] >= 1
        assert "bob-kept" not in listed
        assert {"to-cancel", "bob-kept", "hold-c"} <= {
            item["id"] for item in root.get("/internal/queue").json()["items"]
        }

        unknown = bob.post("/internal/queue/cancel", json={"id_task": "no-such-job"})
        others = bob.post("/internal/queue/cancel", json={"id_task": "to-cancel"})
        assert others.status_code == unknown.status_code == 404
        assert others.json()["detail"] == unknown.json()["detail"]
        assert alice.post("/internal/queue/cancel", json={"id_task": "to-cancel"}).json() == {"cancelled": True}
        answer = waiting.result(timeout=WAIT_SECONDS)
        assert answer.status_code == 409 and "cancelled" in answer.json()["detail"]
        assert info(kept)["seed"] == 22
        info(holding)
    states = {item["id"]: item["state"] for item in alice.get("/internal/queue").json()["items"]}
    assert states["to-cancel"] == "cancelled" and states["hold-c"] == "done"


def test_over_the_per_login_limit_is_a_429(server: ApiServer) -> None:
    alice, bob = server.client(ALICE), server.client(BOB)
    server.application.update_options(queue_max_jobs_per_user=1)
    try:
        with ThreadPoolExecutor(3) as pool:
            holding = submit(pool, bob, {**HOLDING, "seed": 30, "force_task_id": "hold-l"})
            wait_for(lambda: task_state(bob, "hold-l")["active"], "the holding job")
            first = submit(pool, alice, {**SMALL, "seed": 31, "force_task_id": "limit-1"})
            wait_for(lambda: task_state(alice, "limit-1")["queued"], "alice's first job")
            refused = alice.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 32})
            assert refused.status_code == 429 and "limit 1" in refused.json()["detail"]
            assert info(first)["seed"] == 31
            info(holding)
    finally:
        server.application.update_options(queue_max_jobs_per_user=0)


def test_a_client_gone_before_its_job_starts_cancels_it(server: ApiServer) -> None:
    # The worker is held by an internal task (they run before generations), so "gone" waits in the queue
    # whatever the machine's speed.
    release = threading.Event()
    server.application.service.submit_task(lambda: release.wait(WAIT_SECONDS), kind="hold")
    impatient = server.client(ALICE, timeout=1.0)
    store = server.application.service.store
    try:
        with pytest.raises(httpx.TimeoutException):
            impatient.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 41, "force_task_id": "gone"})
        impatient.close()
        wait_for(lambda: store.record("gone").state == "cancelled", "the job of the gone client to be cancelled")
        assert store.record("gone").error == "the client disconnected"
    finally:
        release.set()
    assert store.record("gone").started_at is None
