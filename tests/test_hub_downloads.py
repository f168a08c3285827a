"""Downloads from a local fake hub: a diffusers pipeline into the hub cache (listed and loadable), a LoRA into
models/Lora, a cut connection that resumes, a cancel that leaves nothing listed."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
import torch
from safetensors.torch import load as safetensors_load

from modules.devices import MemoryPolicy
from modules.hub.client import HubClient, RepoFile
from modules.hub.downloads import DownloadManager, DownloadState
from modules.hub.files import FileKind, select_pipeline_files
from modules.models.hashing import HashCache
from modules.models.manager import ModelManager
from modules.models.registry import CheckpointRegistry
from modules.paths import DataPaths
from tests.hub_server import FakeRepo, serve_hub, tiny_pipeline_files


@pytest.fixture
def paths(tmp_path):
    data = DataPaths.create(tmp_path)
    data.ensure()
    return data


@pytest.fixture
def hub():
    with serve_hub() as fake:
        yield fake


@pytest.fixture(scope="module")
def fp16_pipeline_files(tmp_path_factory):
    """The tiny pipeline saved as the hub has SD 1.5: fp16 variants, plus .bin duplicates and extras to skip."""
    from modules.tiny_model import build_tiny_pipeline

    folder = tmp_path_factory.mktemp("tiny-fp16")
    build_tiny_pipeline(seed=3).to(torch.float16).save_pretrained(folder, safe_serialization=True, variant="fp16")
    files = tiny_pipeline_files(folder)
    files["unet/diffusion_pytorch_model.bin"] = b"duplicate pickle"
    files["safety_checker/model.safetensors"] = b"not wanted"
    files["v1-5-pruned.ckpt"] = b"root single file"
    files["README.md"] = b"# card"
    return files


def make_registry(paths: DataPaths) -> CheckpointRegistry:
    registry = CheckpointRegistry(paths.checkpoint_dirs, HashCache(paths.cache_file))
    registry.refresh()
    return registry


def wait(job, timeout: float = 60.0):
    job.future.result(timeout=timeout)
    return job.status()


def test_pipeline_file_selection_prefers_fp16_safetensors_and_fetches_model_index_last():
    listing = [
        RepoFile(name, 1)
        for name in (
            "model_index.json",
            "v1-5-pruned.safetensors",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_pytorch_model.bin",
            "text_encoder/model.fp16-00001-of-00002.safetensors",
            "text_encoder/model.fp16-00002-of-00002.safetensors",
            "text_encoder/model.safetensors.index.fp16.json",
            "text_encoder/model.safetensors.index.json",
            "text_encoder/model-00001-of-00001.safetensors",
            "text_encoder/config.json",
            "vae/diffusion_pytorch_model.safetensors",
            "vae/config.json",
            "scheduler/scheduler_config.json",
            "safety_checker/model.fp16.safetensors",
            "tokenizer/vocab.json",
        )
    ]
    chosen = [item.path for item in select_pipeline_files(listing)]
    assert chosen[-1] == "model_index.json"
    assert set(chosen) == {
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/model.fp16-00001-of-00002.safetensors",
        "text_encoder/model.fp16-00002-of-00002.safetensors",
        "text_encoder/model.safetensors.index.fp16.json",
        "text_encoder/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "scheduler/scheduler_config.json",
        "tokenizer/vocab.json",
    }
    full = [item.path for item in select_pipeline_files(listing, fp16=False)]
    assert (
        "unet/diffusion_pytorch_model.safetensors" in full
        and "unet/diffusion_pytorch_model.fp16.safetensors" not in full
    )


def test_diffusers_download_lands_in_the_cache_and_is_listed_and_loads(paths, hub, fp16_pipeline_files):
    hub.add(FakeRepo("org/tiny-sd", fp16_pipeline_files, "text-to-image", ("diffusers",)))
    registry = make_registry(paths)
    assert registry.checkpoints() == []
    manager = DownloadManager(HubClient(hub.url), paths, on_complete=lambda job: registry.refresh())
    status = wait(manager.start_pipeline("org/tiny-sd"))
    assert status.state is DownloadState.DONE, status.message
    assert status.done_bytes == status.total_bytes > 0
    requested = {path.split("?")[0].rsplit("/", 1)[-1] for method, path, _ in hub.requests if method == "GET"}
    assert "diffusion_pytorch_model.bin" not in requested and "v1-5-pruned.ckpt" not in requested
    assert not any("safety_checker" in path for _, path, _ in hub.requests)
    [info] = registry.checkpoints()
    assert info.name == "org/tiny-sd" and info.kind == "diffusers"
    assert info.path.is_relative_to(paths.diffusers_dir / "models--org--tiny-sd" / "snapshots")
    loaded = ModelManager(registry, MemoryPolicy.cpu(), paths.configs_dir).load(info)
    served = safetensors_load(fp16_pipeline_files["unet/diffusion_pytorch_model.fp16.safetensors"])
    assert torch.equal(loaded.pipeline.unet.conv_in.weight.to(torch.float16), served["conv_in.weight"])


def test_lora_file_goes_to_the_lora_folder(paths, hub):
    data = bytes(range(256)) * 400
    hub.add(FakeRepo("someone/style-lora", {"style.safetensors": data, "README.md": b"card"}, tags=("lora",)))
    manager = DownloadManager(HubClient(hub.url), paths)
    status = wait(manager.start_files("someone/style-lora", [("style.safetensors", FileKind.LORA)]))
    assert status.state is DownloadState.DONE, status.message
    target = paths.lora_dir / "style.safetensors"
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert [item.name for item in paths.lora_dir.iterdir()] == ["style.safetensors"]


def test_a_cut_download_resumes_with_a_range_request(paths, hub):
    # huggingface_hub writes 10 MiB chunks; a cut after 11 MiB resumes at the 10 MiB already on disk
    data = hashlib.sha256(b"seed").digest() * (12 * 1024 * 1024 // 32)
    hub.add(FakeRepo("someone/big-lora", {"big.safetensors": data}))
    hub.cut_after["someone/big-lora/big.safetensors"] = 11 * 1024 * 1024
    manager = DownloadManager(HubClient(hub.url), paths)
    status = wait(manager.start_files("someone/big-lora", [("big.safetensors", FileKind.LORA)]))
    assert status.state is DownloadState.DONE, status.message
    assert hashlib.sha256((paths.lora_dir / "big.safetensors").read_bytes()).hexdigest() == (
        hashlib.sha256(data).hexdigest()
    )
    ranges = [headers.get("range") for method, url, headers in hub.requests if method == "GET" and "/resolve/" in url]
    assert ranges == [None, f"bytes={10 * 1024 * 1024}-"], "the second request continues after the saved bytes"
    assert status.done_bytes == len(data), "resumed bytes are not counted twice"


def test_cancel_leaves_nothing_listed_and_a_restart_completes(paths, hub):
    big = b"\0" * (12 * 1024 * 1024)
    hub.add(FakeRepo("someone/huge-lora", {"huge.safetensors": big}))
    go_on = threading.Event()
    hub.stall_after["someone/huge-lora/huge.safetensors"] = (11 * 1024 * 1024, go_on)
    registry = make_registry(paths)
    manager = DownloadManager(HubClient(hub.url), paths, on_complete=lambda job: registry.refresh())
    job = manager.start_files("someone/huge-lora", [("huge.safetensors", FileKind.CHECKPOINT)])
    deadline = time.monotonic() + 30
    while job.status().done_bytes == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    running = job.status()
    assert running.state is DownloadState.RUNNING and 0 < running.done_bytes < running.total_bytes
    assert running.speed_bytes > 0 and running.eta_seconds is not None
    manager.cancel(job.id)
    go_on.set()
    status = wait(job)
    assert status.state is DownloadState.CANCELLED
    assert list(paths.checkpoints_dir.iterdir()) == []
    assert registry.refresh() == []
    status = wait(manager.start_files("someone/huge-lora", [("huge.safetensors", FileKind.CHECKPOINT)]))
    assert status.state is DownloadState.DONE and (paths.checkpoints_dir / "huge.safetensors").stat().st_size == len(
        big
    )
