"""Jobs per second on a real Ray cluster with 1 and 2 CPU workers against the in-process run, on the tiny model:
scaling efficiency (2 workers against twice 1 worker) and the cost of the hop per job (a worker's time per job
against the same job in-process at the worker's thread count: request and options out, result and recorded files
back, progress polls, files written here).

The cluster is a real head on 127.0.0.1 started by this script inside a private network namespace (``unshare -n``,
as root; the script re-runs itself there), or an existing one with ``--address`` (then it starts nothing). Prints
figures only. Usage:
    venv/bin/python benchmarks/ray_scaling.py [--jobs 16] [--steps 10] [--size 64]
    venv/bin/python benchmarks/ray_scaling.py --address HOST:PORT --workers 1 2   (an existing cluster)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PORT = 6392
IN_NAMESPACE = "EASEL_BENCH_IN_NAMESPACE"


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--address", default=None, help="an existing cluster (nothing is started)")
    return parser.parse_args()


def start_head(temp_dir: Path, cpus: int) -> None:
    ray = Path(sys.executable).with_name("ray")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    command = [str(ray), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(PORT)]
    command += ["--num-cpus", str(cpus), "--include-dashboard", "false", "--disable-usage-stats"]
    subprocess.run([*command, "--temp-dir", str(temp_dir)], check=True, capture_output=True)


def stop_head() -> None:
    subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], capture_output=True, check=False)


def requests(count: int, steps: int, size: int) -> list:
    from modules.processing.requests import Txt2ImgRequest

    return [
        Txt2ImgRequest(prompt="a red fox", steps=steps, width=size, height=size, seed=index, save_images=True)
        for index in range(count)
    ]


def in_process(data_dir: Path, jobs: list) -> float:
    """Seconds per job run one after another in this process at one torch thread (a CPU worker's count)."""
    import torch

    from modules.application import Application
    from modules.cmd_args import build_parser

    torch.set_num_threads(1)
    application = Application.create(build_parser().parse_args(["--data-dir", str(data_dir), "--use-cpu", "all"]))
    application.service.run_task(lambda: application.models.ensure_loaded("tiny"))
    application.service.submit(jobs[0]).future.result()  # warm-up
    started = time.perf_counter()
    for request in jobs:
        application.service.submit(request).future.result()
    elapsed = time.perf_counter() - started
    application.service.shutdown()
    return elapsed / len(jobs)


def on_ray(data_dir: Path, address: str, workers: int, jobs: list) -> tuple[float, float, float]:
    """(jobs per second with all jobs queued at once, seconds per job one at a time, the mean hop in ms: Easel's
    wall time per job minus the worker's own time for it) on ``workers`` workers."""
    from modules.application import Application
    from modules.cmd_args import build_parser

    argv = ["--data-dir", str(data_dir), "--use-cpu", "all", "--ray-address", address, "--ray-workers", str(workers)]
    application = Application.create(build_parser().parse_args(argv))
    deadline = time.monotonic() + 600
    while len(application.workers()) < workers and time.monotonic() < deadline:
        time.sleep(0.2)
    service = application.service
    for job in [service.submit(request) for request in jobs[:workers]]:  # warm-up: each worker loads the model
        job.future.result()
    started = time.perf_counter()
    for job in [service.submit(request) for request in jobs]:
        job.future.result()
    throughput = len(jobs) / (time.perf_counter() - started)
    single = jobs[: max(4, len(jobs) // 4)]
    pool = service.runner
    pool.hops = type(pool.hops)()  # the hop of jobs run one at a time (no waiting for a free worker)
    started = time.perf_counter()
    for request in single:
        service.submit(request).future.result()
    per_job = (time.perf_counter() - started) / len(single)
    hop_ms = pool.hops.mean_ms
    service.shutdown()
    return throughput, per_job, hop_ms


def measure(options: argparse.Namespace, address: str) -> None:
    from tests.api_support import write_tiny_checkpoints

    with tempfile.TemporaryDirectory(prefix="easel-ray-bench-") as folder:
        data_dir = Path(folder)
        write_tiny_checkpoints(data_dir / "models" / "Stable-diffusion", ("tiny",))
        jobs = requests(options.jobs, options.steps, options.size)
        print(f"tiny model, {options.steps} steps, {options.size}x{options.size}, {options.jobs} jobs, CPU")
        local = in_process(data_dir, jobs)
        print(f"in-process (1 torch thread): {1 / local:.2f} jobs/s, {local * 1000:.0f} ms/job")
        rates: dict[int, float] = {}
        for count in options.workers:
            rate, per_job, hop_ms = on_ray(data_dir, address, count, jobs)
            rates[count] = rate
            one_at_a_time = f"one job at a time {per_job * 1000:.0f} ms/job, of which hop {hop_ms:.0f} ms"
            print(f"ray, {count} worker(s): {rate:.2f} jobs/s; {one_at_a_time}", flush=True)
        local = in_process(data_dir, jobs)  # again: a shared machine's load drifts
        print(f"in-process again: {1 / local:.2f} jobs/s, {local * 1000:.0f} ms/job")
        if 1 in rates and 2 in rates:
            print(f"scaling efficiency 2 workers vs 1: {rates[2] / (2 * rates[1]) * 100:.0f}%")
        print(f"cores on this machine: {os.cpu_count()} (shared with other work: figures are indicative)")


def main() -> int:
    options = parse()
    if options.address:
        measure(options, options.address)
        return 0
    if os.environ.get(IN_NAMESPACE) != "1":  # re-run inside a private network namespace: Ray stays on loopback
        environment = {**os.environ, IN_NAMESPACE: "1", "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        return subprocess.run(["unshare", "-n", sys.executable, *sys.argv], env=environment, check=False).returncode
    with tempfile.TemporaryDirectory(prefix="easel-ray-head-") as temp_dir:
        start_head(Path(temp_dir), cpus=max(options.workers))
        try:
            measure(options, f"127.0.0.1:{PORT}")
        finally:
            stop_head()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
