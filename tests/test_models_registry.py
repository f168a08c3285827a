"""The registry lists single files and diffusers folders (not .config sidecars) and resolves A1111 titles."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modules.models.errors import CheckpointNotFoundError
from modules.models.hashing import HashCache, legacy_model_hash
from modules.models.registry import CheckpointRegistry


def make_tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "alpha.safetensors").write_bytes(b"alpha-weights" * 100_000)  # over 1 MiB: a real legacy hash
    (root / "sub" / "beta.ckpt").write_bytes(b"beta")
    (root / "sub" / "deeper" / "gamma.pt").write_bytes(b"gamma")
    (root / "notes.txt").write_text("not a model")
    (root / ".hidden.safetensors").write_bytes(b"x")
    sidecar = root / "alpha.config"
    (sidecar / "unet").mkdir(parents=True)
    (sidecar / "model_index.json").write_text("{}")
    diffusers = root / "sub" / "delta"
    (diffusers / "unet").mkdir(parents=True)
    (diffusers / "model_index.json").write_text("{}")
    (diffusers / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"delta")


@pytest.fixture
def registry(tmp_path: Path) -> CheckpointRegistry:
    root = tmp_path / "Stable-diffusion"
    make_tree(root)
    extra = tmp_path / "elsewhere" / "epsilon.safetensors"
    extra.parent.mkdir()
    extra.write_bytes(b"epsilon")
    return CheckpointRegistry([root, tmp_path / "missing"], HashCache(tmp_path / "cache.json"), extra_files=[extra])


def test_lists_files_and_diffusers_folders_but_not_sidecars(registry: CheckpointRegistry) -> None:
    listed = {info.name: info.kind for info in registry.refresh()}
    assert listed == {
        "alpha": "single-file",
        "sub/beta": "single-file",
        "sub/deeper/gamma": "single-file",
        "sub/delta": "diffusers",
        "epsilon": "single-file",
    }
    names = [info.name for info in registry.checkpoints()]
    assert names == sorted(names, key=str.lower)


def test_titles_follow_a1111(registry: CheckpointRegistry) -> None:
    beta = registry.find("sub/beta")
    assert beta.title == "sub/beta.ckpt" and beta.filename == "beta.ckpt" and beta.size_bytes == 4
    sha256 = registry.hash_of(beta)
    assert sha256 == hashlib.sha256(b"beta").hexdigest()
    assert registry.find("sub/beta").title == f"sub/beta.ckpt [{sha256[:10]}]"


@pytest.mark.parametrize("query", ["alpha", "alpha.safetensors", "alpha.safetensors [0000000000]", " alpha "])
def test_find_by_names(registry: CheckpointRegistry, query: str) -> None:
    assert registry.find(query).name == "alpha"


def test_find_by_title_with_hash_short_and_full_hash(registry: CheckpointRegistry) -> None:
    gamma = registry.find("gamma.pt")  # file name alone
    sha256 = registry.hash_of(gamma)
    assert registry.find(f"sub/deeper/gamma.pt [{sha256[:10]}]").name == "sub/deeper/gamma"
    assert registry.find(sha256[:10]).name == "sub/deeper/gamma"
    assert registry.find(sha256).name == "sub/deeper/gamma"
    assert registry.find("sub\\deeper\\gamma").name == "sub/deeper/gamma"  # Windows-style title


def test_find_by_legacy_hash(registry: CheckpointRegistry, tmp_path: Path) -> None:
    legacy = legacy_model_hash(tmp_path / "Stable-diffusion" / "alpha.safetensors")
    assert registry.find(legacy).name == "alpha"


def test_hashes_survive_a_refresh_through_the_cache(registry: CheckpointRegistry) -> None:
    sha256 = registry.hash_of(registry.find("sub/delta"))
    assert registry.refresh() and registry.find("sub/delta").sha256 == sha256
    assert registry.hash_cache.computed_count == 1


def test_unknown_name_raises(registry: CheckpointRegistry) -> None:
    with pytest.raises(CheckpointNotFoundError, match="nothing-like-this"):
        registry.find("nothing-like-this")
    with pytest.raises(CheckpointNotFoundError):
        registry.find("abcdef0123")  # looks like a hash, matches none


def test_missing_explicit_ckpt_is_reported(tmp_path: Path) -> None:
    registry = CheckpointRegistry([], HashCache(tmp_path / "c.json"), extra_files=[tmp_path / "nope.safetensors"])
    with pytest.raises(CheckpointNotFoundError, match=r"nope\.safetensors"):
        registry.refresh()
