"""The Ray cluster tests' driver: run by tests/test_ray_cluster.py as ``unshare -n python -m tests.ray_support``.

Inside a private network namespace (loopback only) it starts a real Ray head on 127.0.0.1, builds Easel with
``--ray-address`` and two CPU workers over the tiny checkpoints, runs the scenarios and writes what it saw to a JSON
file; the test asserts on that file. Every connection stays on 127.0.0.1 of the namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modules.application import Application
from modules.cmd_args import build_parser
from modules.generation import Job
from modules.processing.processing import process
from tests.api_support import write_tiny_checkpoints
from tests.helpers import tiny_request

PORT = 6391
RAY = Path(sys.executable).with_name("ray")
JOB_TIMEOUT_S = 300.0


def start_head(temp_dir: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    command = [str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(PORT), "--num-cpus", "2"]
    command += ["--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(temp_dir)]
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})


def stop_head() -> None:
    subprocess.run([str(RAY), "stop", "--force"], capture_output=True, check=False)


def build_application(data_dir: Path, workers: int | None) -> Application:
    """Easel with --ray-address: ``workers`` CPU workers, or None: one per GPU of the cluster."""
    argv = ["--data-dir", str(data_dir), "--use-cpu", "all", "--nowebui", "--api", "--ray-address", f"127.0.0.1:{PORT}"]
    argv += ["--ray-workers", str(workers)] if workers else []
    application = Application.create(build_parser().parse_args(argv))
    if workers:
        wait_for(lambda: len(application.workers()) == workers, 240, "the Ray workers did not start")
    return application


def wait_for(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(message)
        time.sleep(0.1)


def finish(job: Job) -> Any:
    return job.future.result(timeout=JOB_TIMEOUT_S)


def eight_jobs(application: Application) -> dict[str, Any]:
    """8 jobs from two owners at once; each image compared with the in-process run of the same request."""
    service = application.service
    requests = [tiny_request(seed=100 + index, save_images=True) for index in range(8)]
    jobs = [service.submit(request, owner="alice" if index % 2 else "bob") for index, request in enumerate(requests)]
    results = [finish(job) for job in jobs]
    torch.set_num_threads(1)  # the workers' thread count (one CPU each)
    local = application.service.context
    local.models.ensure_loaded(application.checkpoint_for(None)[0])
    same = []
    for request, result in zip(requests, results, strict=True):
        reference = process(request.model_copy(update={"save_images": False}), local)
        same.append(bool(np.array_equal(np.asarray(reference.images[0]), np.asarray(result.images[0]))))
    return {
        "states": [job.state.value for job in jobs],
        "workers": [result.worker for result in results],
        "same_pixels": same,
        "saved": [[str(path) for path in result.saved_paths] for result in results],
        "infotexts": [result.infotexts[0] for result in results],
    }


def checkpoint_routing(application: Application) -> dict[str, Any]:
    """Alternating per-request checkpoints, one job at a time: each goes to the worker that holds it."""
    service = application.service
    order = ["tiny2", "tiny", "tiny2", "tiny", "tiny2"]
    ran = []
    for index, name in enumerate(order):
        result = finish(service.submit(tiny_request(seed=index, checkpoint=name), owner="alice"))
        held = {info.name: info.checkpoint for info in application.workers()}
        ran.append({"checkpoint": name, "worker": result.worker, "held": held})
    return {"runs": ran}


def api_answers(application: Application) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from modules.server import create_app, server_options_from_args

    options = server_options_from_args(application.args, (), ())
    with TestClient(create_app(application, options, None)) as client:
        answer = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "steps": 2, "width": 64, "height": 64})
        memory = client.get("/sdapi/v1/memory").json()
    info = json.loads(answer.json()["info"]) if answer.status_code == 200 else {}
    return {"status": answer.status_code, "worker": info.get("worker"), "memory_workers": memory.get("workers")}


def running_on_worker(application: Application, job: Job) -> None:
    """Waits until the job's streamed progress shows a sampling step (it runs on a worker)."""
    wait_for(lambda: job.control.snapshot().sampling_step > 0, JOB_TIMEOUT_S, "no progress came back")


def interrupt(application: Application) -> dict[str, Any]:
    application.options.live_previews_enable = True
    application.options.show_progress_every_n_steps = 1
    service = application.service
    job = service.submit(tiny_request(seed=7, steps=150, n_iter=4), owner="bob")
    running_on_worker(application, job)
    step_seen = job.control.snapshot().sampling_step
    preview_seen = job.control.snapshot().preview is not None
    refused_for_other = service.interrupt(owner="alice", job_id=job.id)
    accepted = service.interrupt(owner="bob", job_id=job.id)
    result = finish(job)
    return {
        "step_seen": step_seen,
        "preview_seen": preview_seen,
        "refused_for_other_owner": not refused_for_other,
        "accepted": accepted,
        "interrupted": result.interrupted,
        "images": len(result.images),
        "last_step": job.control.snapshot().sampling_step,
        "worker": result.worker,
    }


def kill_mid_job(application: Application) -> dict[str, Any]:
    service = application.service
    job = service.submit(tiny_request(seed=9, steps=150, n_iter=2), owner="alice")
    running_on_worker(application, job)
    victim = next(info for info in application.workers() if info.job == job.id)
    os.kill(victim.pid, signal.SIGKILL)
    result = finish(job)
    after = finish(service.submit(tiny_request(seed=10), owner="bob"))
    wait_for(lambda: len(application.workers()) == 2, 240, "the lost worker was not replaced")
    return {
        "killed": victim.name,
        "state": job.state.value,
        "retried_on": result.worker,
        "images": len(result.images),
        "next_job_worker": after.worker,
        "workers_after": sorted(info.name for info in application.workers()),
    }


def cluster_gone(application: Application) -> dict[str, Any]:
    """The whole cluster stops (head and workers): a job then fails with a clear message, and the server lives."""
    pool = application.service.runner
    pool.settings = replace(pool.settings, worker_wait_s=5.0)
    stop_head()
    started = time.monotonic()
    job = application.service.submit(tiny_request(seed=11), owner="alice")
    try:
        finish(job)
        error = ""
    except Exception as failure:  # the clear message is what this scenario records
        error = f"{type(failure).__name__}: {failure}"
    seconds = time.monotonic() - started
    later = application.service.submit(tiny_request(seed=12), owner="bob")
    try:
        finish(later)
        later_error = ""
    except Exception as failure:
        later_error = f"{type(failure).__name__}: {failure}"
    return {
        "state": job.state.value,
        "message": error,
        "seconds": seconds,
        "later_message": later_error,
        "workers": len(application.workers()),
    }


def cluster_back(harness: Harness) -> dict[str, Any]:
    """After cluster_gone: the head starts again and a GPU node joins; the same Easel process joins the new
    cluster by itself, starts a worker there and runs jobs again."""
    easel = harness.application
    start_head(harness.work_dir / "ray")
    harness.join_node()
    wait_for(lambda: len(easel.workers()) == 1, 300, "no worker after the cluster came back")
    result = finish(easel.service.submit(tiny_request(seed=14), owner="alice"))
    return {"state": "done" if result.images else "empty", "worker": result.worker}


@dataclass
class Harness:
    """The Easel under test (join_and_leave replaces it) and the extra node it started."""

    application: Application
    work_dir: Path
    nodes: list[subprocess.Popen] = field(default_factory=list)

    def join_node(self) -> subprocess.Popen:
        """A node joins the cluster with one (declared) GPU and one CPU; ``terminate()`` makes it leave."""
        command = [str(RAY), "start", "--address", f"127.0.0.1:{PORT}", "--node-ip-address", "127.0.0.1"]
        command += ["--num-cpus", "1", "--num-gpus", "1", "--block"]
        node = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.nodes.append(node)
        return node


def join_and_leave(harness: Harness) -> dict[str, Any]:
    """One worker per GPU (no --ray-workers): a node that joins with a GPU gets a worker that takes jobs; when it
    leaves, its worker is dropped; a node that joins again gets a new one. (The node declares a GPU it does not
    have: the worker computes on the CPU, --use-cpu all.)"""
    harness.application.service.shutdown()
    easel = harness.application = build_application(harness.work_dir / "data", workers=None)
    before = len(easel.workers())  # the head has no GPU
    node = harness.join_node()
    wait_for(lambda: len(easel.workers()) == 1, 240, "no worker for the GPU that joined")
    (joined,) = easel.workers()
    result = finish(easel.service.submit(tiny_request(seed=13), owner="alice"))
    node.terminate()
    node.wait(60)
    wait_for(lambda: not easel.workers(), 120, "the worker of the node that left was not dropped")
    harness.join_node()
    wait_for(lambda: len(easel.workers()) == 1, 240, "no worker for the node that joined again")
    (again,) = easel.workers()
    return {"before": before, "joined": joined.name, "ran_on": result.worker, "again": again.name}


SCENARIOS = {
    "eight_jobs": eight_jobs,
    "checkpoint_routing": checkpoint_routing,
    "api": api_answers,
    "interrupt": interrupt,
    "kill": kill_mid_job,
}
# These come last, in this order: join_and_leave replaces the Easel under test (one worker per GPU), cluster_gone
# stops the head, cluster_back starts it again.
LAST = ("join_and_leave", "cluster_gone", "cluster_back")


def main(work_dir: Path, names: list[str]) -> None:
    start_head(work_dir / "ray")
    report: dict[str, Any] = {}
    harness: Harness | None = None
    try:
        write_tiny_checkpoints(work_dir / "data" / "models" / "Stable-diffusion", ("tiny", "tiny2"))
        harness = Harness(build_application(work_dir / "data", workers=2), work_dir)
        for name in names:
            try:
                if name == "join_and_leave":
                    report[name] = join_and_leave(harness)
                elif name == "cluster_gone":
                    report[name] = cluster_gone(harness.application)
                elif name == "cluster_back":
                    report[name] = cluster_back(harness)
                else:
                    report[name] = SCENARIOS[name](harness.application)
            except Exception as error:  # recorded for the test's message; the next scenario still runs
                report[name] = {"error": f"{type(error).__name__}: {error}"}
            (work_dir / "report.json").write_text(json.dumps(report, indent=1))  # what is known if the next dies
        harness.application.service.shutdown()
    finally:
        for node in harness.nodes if harness is not None else []:
            node.terminate()
        (work_dir / "report.json").write_text(json.dumps(report, indent=1))
        stop_head()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:] or [*SCENARIOS, *LAST])
