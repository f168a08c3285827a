"""System info (versions, device, memory, models, compute) and the benchmark; /internal/sysinfo and /sdapi/v1/memory."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from modules.system_info import BenchmarkHistory, benchmark_sizes, collect, run_benchmark
from tests.api_support import ApiServer, copy_checkpoints, start_api_server, write_tiny_checkpoints


def test_collect_reports_versions_device_models_and_compute(context):
    context.models.ensure_loaded()
    info = collect(context.models, argparse.Namespace(api_auth="user:secret", listen=False))
    assert {"python", "torch", "cuda", "diffusers", "transformers", "gradio"} <= set(info["versions"])
    assert info["versions"]["diffusers"] == "0.42.1"
    assert info["device"]["device"] == "cpu" and info["device"]["dtype"] == "float32"
    assert info["memory"]["ram"]["total"] > 0
    assert info["flags"] == {"api_auth": "<hidden>", "listen": False}
    model = info["models"][0]
    assert model["name"] == context.models.current.name and model["weights_mb"] > 0
    assert model["attention"] == ["AttnProcessor2_0"] and model["compute_applied"] == []
    assert info["compute"]["compile_unet"] is False and "torch_tf32_matmul" in info["compute"]


def test_benchmark_times_each_batch_size_and_the_history_keeps_runs(context, tmp_path):
    rows = run_benchmark(context, steps=2, batch_sizes=(1, 2), sizes=[64])
    assert [(row.width, row.batch_size, row.steps) for row in rows] == [(64, 1, 2), (64, 2, 2)]
    assert all(row.its > 0 and row.seconds > 0 and row.compute == "eager" for row in rows)
    assert rows[1].images_per_second == pytest.approx(2 / rows[1].seconds, rel=0.01)
    history = BenchmarkHistory(tmp_path / "benchmarks.json")
    history.add(rows)
    assert history.add(rows[:1]) == [*rows, rows[0]]
    assert BenchmarkHistory(tmp_path / "benchmarks.json").rows()[2] == rows[0]
    assert benchmark_sizes(1024) == [512, 1024] and benchmark_sizes(512) == [512]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("sysinfo")
    write_tiny_checkpoints(root / "checkpoints", names=("tiny",))
    copy_checkpoints(root / "checkpoints", root / "data")
    running = start_api_server(root / "data", flags=("--api-auth", "user:pw", "--opt-channelslast"))
    yield running
    running.stop()


def test_sysinfo_route_reports_flags_and_compute(server):
    client = server.client()
    client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64})
    info = client.get("/internal/sysinfo").json()
    assert info["flags"]["api_auth"] == "<hidden>" and info["flags"]["opt_channelslast"] is True
    assert info["compute"]["channels_last"] is True
    assert info["models"][0]["compute_applied"] == ["channels_last"]
    memory = client.get("/sdapi/v1/memory").json()
    assert memory["ram"]["total"] == info["memory"]["ram"]["total"] > 0
    assert server.client(auth=None).get("/internal/sysinfo").status_code == 401
