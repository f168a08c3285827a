"""The Models tab downloads a gated FLUX.1 pipeline from the local fake hub: refused without a token with the
gated message, downloaded with one, listed with its family, loaded and run."""

from __future__ import annotations

import pytest

from modules.devices import MemoryPolicy
from modules.hub.client import HubClient
from modules.hub.downloads import DownloadManager, DownloadState
from modules.models.detection import ModelArchitecture
from modules.models.hashing import HashCache
from modules.models.inventory import checkpoint_family, checkpoint_rows
from modules.models.manager import ModelManager, Task
from modules.models.registry import CheckpointRegistry
from modules.paths import DataPaths
from modules.ui.models_tab import ModelsTab, start_download
from tests.hub_server import FakeRepo, serve_hub, tiny_pipeline_files

TOKEN = "hf_test_token"


@pytest.fixture(scope="module")
def flux_files(tmp_path_factory):
    from modules.tiny_model import build_tiny_pipeline

    folder = tmp_path_factory.mktemp("tiny-flux")
    build_tiny_pipeline(architecture=ModelArchitecture.FLUX, seed=4).save_pretrained(folder, safe_serialization=True)
    files = tiny_pipeline_files(folder)
    files["flux1-dev.safetensors"] = b"root single file, not part of the pipeline"
    return files


def test_models_tab_downloads_a_gated_flux_pipeline_with_a_token(tmp_path, flux_files) -> None:
    paths = DataPaths.create(tmp_path)
    paths.ensure()
    registry = CheckpointRegistry(paths.checkpoint_dirs, HashCache(paths.cache_file))
    token: list[str] = []
    with serve_hub() as hub:
        hub.add(FakeRepo("bfl/tiny-flux", flux_files, "text-to-image", ("diffusers",), gated=True))
        hub.valid_tokens.add(TOKEN)
        client = HubClient(hub.url, token_provider=lambda: token[0] if token else None)
        downloads = DownloadManager(client, paths, on_complete=lambda job: registry.refresh())
        tab = ModelsTab(downloads=downloads, client=client)
        refused = start_download(tab, "bfl/tiny-flux", True, True, [], "")
        assert "gated" in refused and "Download started" not in refused
        token.append(TOKEN)
        started = start_download(tab, "bfl/tiny-flux", True, True, [], "")
        assert "Download started" in started
        job = downloads.jobs()[-1]
        job.future.result(timeout=120)
        status = job.status()
    assert status.state is DownloadState.DONE, status.message
    [info] = registry.checkpoints()
    assert info.name == "bfl/tiny-flux"
    assert checkpoint_family(info).key == "flux"
    assert [row.architecture for row in checkpoint_rows(registry)] == ["FLUX.1"]
    model = ModelManager(registry, MemoryPolicy.cpu(), paths.configs_dir).load(info)
    assert model.family.key == "flux" and model.architecture is ModelArchitecture.FLUX
    assert type(model.pipeline_for(Task.INPAINT)).__name__ == "FluxInpaintPipeline"
