"""Load with a crash: 8 logins x 20 txt2img jobs against webui.py, kill -9 of the server in the middle, restart.
Nothing queued is lost (every job waiting at the kill is done after the restart), no job runs twice, every saved
image opens, and only the job that was running at the kill is failed, with the restart reason."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image

from modules.jobs.store import RESTART_REASON
from tests.api_support import SMALL, write_tiny_checkpoints
from tests.helpers import REPO_ROOT, free_port

pytestmark = pytest.mark.slow

CLIENTS = 8
JOBS_PER_CLIENT = 20
TOTAL = CLIENTS * JOBS_PER_CLIENT
LOGINS = [(f"user{index}", f"pass{index}") for index in range(CLIENTS)]
START_SECONDS = 240
FINISH_SECONDS = 900


@contextmanager
def webui(data_dir: Path, log: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """webui.py (API only, the logins above) on a free port; yields (process, url); stopped (killed) afterwards."""
    port = free_port()
    logins = ",".join(f"{user}:{password}" for user, password in LOGINS)
    command = [sys.executable, "webui.py", "--data-dir", str(data_dir), "--port", str(port), "--nowebui"]
    command += ["--api-auth", logins]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "EASEL_LOG_LEVEL": "WARNING"}
    with log.open("a") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert process.poll() is None, f"webui.py exited:\n{log.read_text(errors='replace')[-4000:]}"
            assert time.monotonic() < deadline, "webui.py did not start"
            try:
                if httpx.get(f"{url}/internal/pending-tasks", auth=LOGINS[0], timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def rows(database: Path) -> dict[str, sqlite3.Row]:
    connection = sqlite3.connect(database, timeout=30)
    connection.row_factory = sqlite3.Row
    try:
        return {row["id"]: row for row in connection.execute("SELECT id, state, error, result_paths FROM jobs")}
    finally:
        connection.close()


def submit_all(url: str) -> None:
    """Every client sends its 20 jobs at once; the answers (and the errors of the kill) are not looked at."""

    async def client_jobs(index: int) -> None:
        async with httpx.AsyncClient(base_url=url, auth=LOGINS[index], timeout=FINISH_SECONDS) as client:
            jobs = [
                client.post(
                    "/sdapi/v1/txt2img",
                    json={
                        **SMALL,
                        "seed": 1000 * (index + 1) + job,
                        "save_images": True,
                        "force_task_id": f"{index}-{job}",
                    },
                )
                for job in range(JOBS_PER_CLIENT)
            ]
            await asyncio.gather(*jobs, return_exceptions=True)

    async def everyone() -> None:
        await asyncio.gather(*(client_jobs(index) for index in range(CLIENTS)))

    asyncio.run(everyone())


def saved_seeds(outputs: Path) -> list[int]:
    seeds = []
    for path in outputs.rglob("*.png"):
        with Image.open(path) as image:
            image.load()  # a broken file raises
        seeds.append(int(path.stem.split("-")[1]))
    return seeds


def wait_for(predicate, what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_kill_and_restart_loses_no_queued_job_and_runs_none_twice(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_tiny_checkpoints(data_dir / "models" / "Stable-diffusion", names=("tiny",))
    database, outputs, log = data_dir / "queue.db", data_dir / "outputs", tmp_path / "webui.log"

    with webui(data_dir, log) as (process, url):
        clients = threading.Thread(target=submit_all, args=(url,), daemon=True)
        clients.start()
        wait_for(lambda: database.exists() and len(rows(database)) == TOTAL, "every job to be queued", START_SECONDS)
        done = lambda: sum(row["state"] == "done" for row in rows(database).values())  # noqa: E731
        wait_for(lambda: done() >= TOTAL // 5, "a fifth of the jobs to finish", FINISH_SECONDS)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    at_kill = rows(database)
    waiting_at_kill = {job_id for job_id, row in at_kill.items() if row["state"] == "queued"}
    running_at_kill = {job_id for job_id, row in at_kill.items() if row["state"] == "running"}
    assert len(at_kill) == TOTAL and waiting_at_kill and len(running_at_kill) <= 1
    clients.join(60)

    with webui(data_dir, log):
        wait_for(
            lambda: all(row["state"] not in ("queued", "running") for row in rows(database).values()),
            "the resumed jobs to finish",
            FINISH_SECONDS,
        )
    after = rows(database)
    failed = {job_id: row["error"] for job_id, row in after.items() if row["state"] != "done"}
    assert failed == {job_id: RESTART_REASON for job_id in running_at_kill}
    assert all(after[job_id]["state"] == "done" for job_id in waiting_at_kill)
    done_ids = [job_id for job_id, row in after.items() if row["state"] == "done"]
    for job_id in done_ids:
        for path in json.loads(after[job_id]["result_paths"]):
            assert Path(path).is_file(), f"job {job_id} lost its image {path}"
    seeds = saved_seeds(outputs)
    assert len(seeds) == len(set(seeds)), "a job ran twice"
    expected = {1000 * (int(job_id.split("-")[0]) + 1) + int(job_id.split("-")[1]) for job_id in done_ids}
    assert expected <= set(seeds)
    assert len(seeds) - len(expected) <= len(running_at_kill)  # at most the killed job's image, saved before the kill
