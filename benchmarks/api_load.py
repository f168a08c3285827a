"""The API under load on the tiny model: jobs/s and p50/p95 latency for 1, 4 and 8 concurrent clients, with the
SQLite queue in its file (``queue.db``, WAL; what webui.py runs) against the same queue in an in-memory SQLite
database (no disk), interleaved level by level so a busy machine weighs on both alike; then the queue's own cost
per job (add + claim + finish) on each, and the queue + HTTP overhead against running the jobs in-process.

A real server on loopback (uvicorn in a thread), real HTTP with httpx. Prints figures only.
Usage: venv/bin/python benchmarks/api_load.py [--jobs 24] [--clients 1 4 8] [--steps 2] [--size 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from modules.generation import GenerationService
from modules.jobs.database import Database
from modules.jobs.store import JobState, JobStore
from modules.processing.processing import process
from modules.processing.requests import Txt2ImgRequest
from tests.api_support import ApiServer, copy_checkpoints, start_api_server, write_tiny_checkpoints


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run_clients(url: str, clients: int, jobs: int, body: dict) -> tuple[float, list[float]]:
    """``jobs`` requests spread over ``clients`` threads; returns (wall seconds, per-request latencies)."""
    per_client = [jobs // clients + (1 if index < jobs % clients else 0) for index in range(clients)]

    def client_loop(count: int) -> list[float]:
        latencies = []
        with httpx.Client(base_url=url, timeout=3600) as client:
            for _ in range(count):
                started = time.perf_counter()
                response = client.post("/sdapi/v1/txt2img", json=body)
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)
        return latencies

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [value for values in pool.map(client_loop, per_client) for value in values]
    return time.perf_counter() - started, latencies


def use_queue(server: ApiServer, database: Database) -> None:
    """Swap the server's generation service for one over ``database`` (benchmark only: the txt2img route reads
    ``application.service`` per request)."""
    application = server.application
    old = application.service
    application.service = GenerationService(old.context, JobStore(database), application.history)
    old.shutdown()


def queue_cost(database: Database, count: int = 300) -> float:
    """Seconds per job of the queue alone: add, claim (with the request read back), finish."""
    store = JobStore(database)
    request = Txt2ImgRequest(prompt="a cube", steps=2, width=64, height=64, save_images=True)
    started = time.perf_counter()
    for index in range(count):
        store.add(f"cost-{index}-{time.monotonic_ns()}", f"user{index % 4}", request)
        record, _ = store.claim_next()
        store.finish(record.id, JobState.DONE, ["outputs/x.png"])
    return (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=24, help="jobs per concurrency level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two queues per level")
    args = parser.parse_args()
    body = {"prompt": "a cube", "seed": 1, "steps": args.steps, "width": args.size, "height": args.size}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_tiny_checkpoints(root / "checkpoints", names=("tiny",))
        copy_checkpoints(root / "checkpoints", root / "data")
        server = start_api_server(root / "data")
        queues = {"sqlite-file": Database(root / "bench-queue.db"), "sqlite-memory": Database()}
        try:
            run_clients(server.url, 1, 2, body)  # warm-up: model load, first-call costs
            print(f"tiny model, {args.size}x{args.size}, {args.steps} steps, {args.jobs} jobs per level and round")
            print(f"{'clients':>8} {'queue':>14} {'jobs/s':>8} {'p50 s':>8} {'p95 s':>8}")
            for clients in args.clients:
                figures: dict[str, list[tuple[float, list[float]]]] = {name: [] for name in queues}
                for _ in range(args.rounds):
                    for name, database in queues.items():
                        use_queue(server, database)
                        figures[name].append(run_clients(server.url, clients, args.jobs, body))
                for name, runs in figures.items():
                    wall = sum(run[0] for run in runs)
                    latencies = [value for run in runs for value in run[1]]
                    print(
                        f"{clients:>8} {name:>14} {len(latencies) / wall:>8.2f} {statistics.median(latencies):>8.3f} "
                        f"{percentile(latencies, 0.95):>8.3f}"
                    )
            for name, database in (("sqlite-file", Database(root / "cost.db")), ("sqlite-memory", Database())):
                print(f"queue alone ({name}): {queue_cost(database) * 1000:.2f} ms/job (add + claim + finish)")
            context = server.application.service.context
            request = Txt2ImgRequest(**{**body, "sampler_name": "Euler", "save_images": False})
            process(request, context)
            started = time.perf_counter()
            for _ in range(args.jobs):
                process(request, context)
            in_process = (time.perf_counter() - started) / args.jobs
            use_queue(server, queues["sqlite-file"])
            wall, _ = run_clients(server.url, 1, args.jobs, {**body, "sampler_name": "Euler"})
            through_api = wall / args.jobs
            print(
                f"in-process {in_process * 1000:.1f} ms/job, through API (1 client) {through_api * 1000:.1f} ms/job, "
                f"overhead {(through_api - in_process) * 1000:.1f} ms/job ({through_api / in_process - 1:+.1%})"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
