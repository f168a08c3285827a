"""A1111 hashes, cached in cache.json and recomputed only when the file changes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from modules.models.hashing import HashCache, compute_sha256, legacy_model_hash, short_hash


def write_bytes(path: Path, size: int, seed: int = 0) -> bytes:
    data = bytes((index * 31 + seed) % 251 for index in range(size))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def test_sha256_and_short_hash_match_hashlib(tmp_path: Path) -> None:
    data = write_bytes(tmp_path / "model.safetensors", 3 * 1024 * 1024 + 17)  # several 1 MiB chunks
    expected = hashlib.sha256(data).hexdigest()
    assert HashCache(tmp_path / "cache.json").sha256(tmp_path / "model.safetensors") == expected
    assert short_hash(expected) == expected[:10]


def test_legacy_hash_reads_64_kib_at_one_mib(tmp_path: Path) -> None:
    data = write_bytes(tmp_path / "model.ckpt", 0x100000 + 0x10000 + 5)
    assert legacy_model_hash(tmp_path / "model.ckpt") == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


def test_hash_is_computed_once_then_read_from_cache_json(tmp_path: Path) -> None:
    model = tmp_path / "model.safetensors"
    write_bytes(model, 4096)
    cache_file = tmp_path / "cache.json"
    first = HashCache(cache_file)
    sha256 = first.sha256(model)
    assert first.sha256(model) == sha256 and first.computed_count == 1
    second = HashCache(cache_file)  # a new process reads the file
    assert second.sha256(model) == sha256 and second.computed_count == 0
    entry = json.loads(cache_file.read_text())["hashes"][f"checkpoint/{model.resolve().as_posix()}"]
    assert entry["sha256"] == sha256 and entry["size"] == 4096 and entry["mtime"] == model.stat().st_mtime


def test_changed_size_or_mtime_recomputes(tmp_path: Path) -> None:
    model = tmp_path / "model.safetensors"
    write_bytes(model, 4096)
    cache = HashCache(tmp_path / "cache.json")
    original = cache.sha256(model)
    stat = model.stat()
    data = write_bytes(model, 4096, seed=1)  # same size, new content
    os.utime(model, (stat.st_atime, stat.st_mtime + 10))
    assert cache.sha256(model) == hashlib.sha256(data).hexdigest() != original
    write_bytes(model, 5000, seed=1)
    os.utime(model, (stat.st_atime, stat.st_mtime + 10))  # same mtime as cached, other size
    assert cache.sha256(model) == hashlib.sha256(model.read_bytes()).hexdigest()
    assert cache.computed_count == 3


def test_cache_keeps_other_sections_and_survives_a_broken_file(tmp_path: Path) -> None:
    cache_file = tmp_path / "cache.json"
    cache_file.write_text(json.dumps({"safetensors-metadata": {"x": 1}}))
    write_bytes(tmp_path / "a.safetensors", 100)
    HashCache(cache_file).sha256(tmp_path / "a.safetensors")
    assert json.loads(cache_file.read_text())["safetensors-metadata"] == {"x": 1}
    cache_file.write_text("{broken")
    assert HashCache(cache_file).sha256(tmp_path / "a.safetensors")
    assert "hashes" in json.loads(cache_file.read_text())


def test_diffusers_folder_hash_is_stable_and_covers_weights_only(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    write_bytes(folder / "unet" / "diffusion_pytorch_model.safetensors", 1000, seed=1)
    write_bytes(folder / "vae" / "diffusion_pytorch_model.safetensors", 500, seed=2)
    (folder / "model_index.json").write_text("{}")
    first = compute_sha256(folder)
    expected = hashlib.sha256()
    for relative in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        expected.update(relative.encode() + b"\0" + (folder / relative).read_bytes())
    assert first == expected.hexdigest()
    (folder / "model_index.json").write_text('{"changed": true}')
    assert compute_sha256(folder) == first
    write_bytes(folder / "vae" / "diffusion_pytorch_model.safetensors", 500, seed=3)
    assert compute_sha256(folder) != first
    cache = HashCache(tmp_path / "cache.json")
    assert cache.sha256(folder) == cache.sha256(folder) and cache.computed_count == 1
