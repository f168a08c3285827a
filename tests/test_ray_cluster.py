"""Easel over a real Ray cluster on this machine (issue 19): a head on 127.0.0.1 in a private network namespace,
two CPU workers, the tiny checkpoints. The scenarios run once in tests/ray_support.py (under ``unshare -n``, with
the Easel process inside the namespace too); each test asserts on what it reported.

Slow (a cluster start, two workers importing torch and diffusers, about two minutes on two shared cores):
``./test.sh -m slow tests/test_ray_cluster.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 1200


def namespace_refusal() -> str | None:
    """Why the test cannot make a private network namespace here (None: it can)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip (iproute2) is not installed"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True, check=False)
    return None if probe.returncode == 0 else f"unshare -n is not permitted here: {probe.stderr.strip()}"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if importlib.util.find_spec("ray") is None:  # not imported here: only the driver joins the cluster
        pytest.skip("Ray is not installed (pip install -r requirements-ray.txt)")
    refusal = namespace_refusal()
    if refusal:
        pytest.skip(refusal)
    work_dir = tmp_path_factory.mktemp("ray")
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    command = ["unshare", "-n", sys.executable, "-m", "tests.ray_support", str(work_dir)]
    run = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    report_file = work_dir / "report.json"
    assert report_file.exists(), f"the driver wrote no report (rc {run.returncode}):\n{run.stderr[-4000:]}"
    return json.loads(report_file.read_text())


def scenario(report: dict[str, Any], name: str) -> dict[str, Any]:
    found = report.get(name)
    assert found is not None, f"scenario {name} did not run"
    assert "error" not in found, found.get("error")
    return found


def test_eight_jobs_of_two_owners_finish_on_both_workers_with_in_process_pixels(report: dict[str, Any]) -> None:
    found = scenario(report, "eight_jobs")
    assert found["states"] == ["done"] * 8
    assert set(found["workers"]) == {"worker-1", "worker-2"}
    assert found["same_pixels"] == [True] * 8


def test_easel_saves_the_workers_images_with_their_infotext(report: dict[str, Any]) -> None:
    found = scenario(report, "eight_jobs")
    paths = [Path(saved[0]) for saved in found["saved"]]
    assert len({path.name[:5] for path in paths}) == 8  # eight file numbers: saving stays one at a time
    for path, infotext in zip(paths, found["infotexts"], strict=True):
        assert path.is_file()
        with Image.open(path) as image:
            assert image.info["parameters"] == infotext
    assert "Seed: 100," in found["infotexts"][0]


def test_a_per_request_checkpoint_goes_to_the_worker_that_holds_it(report: dict[str, Any]) -> None:
    runs = scenario(report, "checkpoint_routing")["runs"]
    tiny2 = {run["worker"] for run in runs if run["checkpoint"] == "tiny2"}
    tiny = {run["worker"] for run in runs if run["checkpoint"] == "tiny"}
    assert len(tiny2) == 1 and len(tiny) == 1 and tiny2 != tiny
    (holder,) = tiny2
    assert runs[-1]["held"][holder].startswith("tiny2")


def test_api_info_names_the_worker_and_memory_lists_each_worker(report: dict[str, Any]) -> None:
    found = scenario(report, "api")
    assert found["status"] == 200
    assert found["worker"] in {"worker-1", "worker-2"}
    workers = found["memory_workers"]
    assert sorted(worker["name"] for worker in workers) == ["worker-1", "worker-2"]
    for worker in workers:
        assert worker["node"] == "127.0.0.1" and worker["device"] == "cpu"
        assert worker["checkpoint"].startswith("tiny") and worker["memory"]["process"]["rss"] > 0


def test_progress_streams_back_and_an_interrupt_reaches_the_job_on_its_worker(report: dict[str, Any]) -> None:
    found = scenario(report, "interrupt")
    assert found["step_seen"] > 0 and found["preview_seen"]
    assert found["refused_for_other_owner"] and found["accepted"]
    assert found["interrupted"] and found["images"] < 4  # 4 batches of 150 steps asked


def test_workers_follow_gpus_that_join_and_leave(report: dict[str, Any]) -> None:
    found = scenario(report, "join_and_leave")
    assert found["before"] == 0  # one worker per GPU, and the head has none
    assert found["ran_on"] == found["joined"]
    assert found["again"] != found["joined"]  # the node left (its worker dropped) and a new one came


def test_a_cluster_that_disappears_gives_clear_errors_not_hangs(report: dict[str, Any]) -> None:
    found = scenario(report, "cluster_gone")
    assert found["state"] == "failed"
    assert "no Ray worker became available" in found["message"] and "127.0.0.1:6391" in found["message"]
    assert "no Ray worker became available" in found["later_message"]  # the server still answers, clearly
    assert found["workers"] == 0


def test_the_server_joins_a_cluster_that_comes_back(report: dict[str, Any]) -> None:
    found = scenario(report, "cluster_back")
    assert found["state"] == "done" and found["worker"].startswith("worker-")


def test_a_worker_killed_mid_job_is_replaced_and_the_job_retried_elsewhere(report: dict[str, Any]) -> None:
    found = scenario(report, "kill")
    assert found["state"] == "done" and found["images"] == 2
    assert found["retried_on"] != found["killed"]
    assert found["next_job_worker"] != found["killed"]  # the server kept serving
    assert found["killed"] not in found["workers_after"] and len(found["workers_after"]) == 2
