"""Load: 8 concurrent clients x 25 txt2img jobs on the tiny model; no error, 200 images, all saved."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.api_support import SMALL, copy_checkpoints, decode_png, start_api_server, write_tiny_checkpoints

CLIENTS = 8
JOBS_PER_CLIENT = 25


@pytest.mark.slow
def test_eight_clients_twenty_five_jobs_each(tmp_path: Path) -> None:
    write_tiny_checkpoints(tmp_path / "checkpoints", names=("tiny",))
    copy_checkpoints(tmp_path / "checkpoints", tmp_path / "data")
    server = start_api_server(tmp_path / "data")
    try:

        def run_client(index: int) -> list[tuple[int, int]]:
            client = server.client(timeout=1800)
            outcomes = []
            for job in range(JOBS_PER_CLIENT):
                seed = 1000 * (index + 1) + job
                response = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": seed, "save_images": True})
                if response.status_code != 200:
                    outcomes.append((response.status_code, -1))
                    continue
                body = response.json()
                assert decode_png(body["images"][0]).size == (64, 64)
                outcomes.append((200, json.loads(body["info"])["seed"]))
            return outcomes

        with ThreadPoolExecutor(CLIENTS) as pool:
            results = [outcome for outcomes in pool.map(run_client, range(CLIENTS)) for outcome in outcomes]
    finally:
        server.stop()
    errors = [status for status, _ in results if status != 200]
    assert errors == []
    seeds = sorted(seed for _, seed in results)
    expected = sorted(1000 * (index + 1) + job for index in range(CLIENTS) for job in range(JOBS_PER_CLIENT))
    assert seeds == expected
    saved = sorted(int(path.stem.split("-")[1]) for path in (tmp_path / "data" / "outputs").rglob("*.png"))
    assert saved == expected
