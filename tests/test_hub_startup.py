"""First start: the default model is downloaded when no checkpoint exists (not offline, not with the flag);
the Models tab's handlers show search rows, a download's progress and friendly errors."""

from __future__ import annotations

import logging
import time

import pytest
import torch

from modules.application import Application
from modules.cmd_args import build_parser
from modules.hub.client import HubClient, SearchKind, SortKey
from modules.hub.downloads import DownloadManager, DownloadState
from modules.hub.startup import DEFAULT_MODEL_REPO, prepare_models, start_default_model
from modules.ui.models_tab import ModelsTab, progress_html, search_table, start_download
from tests.hub_server import FakeRepo, serve_hub, tiny_pipeline_files


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    from modules.tiny_model import build_tiny_pipeline

    folder = tmp_path_factory.mktemp("tiny")
    build_tiny_pipeline(seed=5).to(torch.float16).save_pretrained(folder, safe_serialization=True, variant="fp16")
    return tiny_pipeline_files(folder)


def make_application(tmp_path, *flags: str) -> Application:
    return Application.create(build_parser().parse_args(["--data-dir", str(tmp_path), *flags]))


def make_downloads(application: Application, url: str) -> DownloadManager:
    return DownloadManager(HubClient(url), application.paths, on_complete=lambda job: application.registry.refresh())


def test_first_start_downloads_the_default_model_and_lists_it(tmp_path, tiny_files):
    application = make_application(tmp_path, "--ckpt-cache", "3")
    with serve_hub() as hub:
        hub.add(FakeRepo(DEFAULT_MODEL_REPO, tiny_files, "text-to-image", ("diffusers",)))
        downloads = make_downloads(application, hub.url)
        prepare_models(application, downloads, offline=False)
        assert application.models.manager.cache_size == 3
        deadline = time.monotonic() + 30
        while not downloads.jobs() and time.monotonic() < deadline:  # started in a background thread
            time.sleep(0.05)
        [job] = downloads.jobs()
        job.future.result(timeout=60)
        assert job.repo_id == DEFAULT_MODEL_REPO and job.status().state is DownloadState.DONE
        assert start_default_model(application, downloads, offline=False) is None, "a checkpoint exists now"
    assert [info.name for info in application.registry.checkpoints()] == [DEFAULT_MODEL_REPO]
    assert application.initial_checkpoint() == DEFAULT_MODEL_REPO


def test_no_download_when_told_or_offline(tmp_path, caplog):
    application = make_application(tmp_path, "--no-download-sd-model")
    with serve_hub() as hub:
        downloads = make_downloads(application, hub.url)
        assert start_default_model(application, downloads, offline=False) is None
        application.args.no_download_sd_model = False
        with caplog.at_level(logging.WARNING):
            assert start_default_model(application, downloads, offline=True) is None
        assert not [request for request in hub.requests if "/resolve/" in request[1]]
    assert "offline" in caplog.text and "Stable-diffusion" in caplog.text


def test_models_tab_handlers_show_rows_progress_and_errors(tmp_path, tiny_files):
    application = make_application(tmp_path)
    with serve_hub() as hub:
        hub.add(FakeRepo("org/tiny", tiny_files, "text-to-image", ("diffusers",), downloads=7, likes=2))
        hub.add(FakeRepo("corp/gated", {"model_index.json": b"{}"}, "text-to-image", ("diffusers",), gated=True))
        downloads = make_downloads(application, hub.url)
        tab = ModelsTab(downloads=downloads, client=downloads.client)
        rows, _ = search_table(tab.client, "tiny", SearchKind.DIFFUSERS.value, SortKey.LIKES.value, 0)
        assert rows == [["org/tiny", "text-to-image", 7, 2, "2024-01-01", ""]]
        message = start_download(tab, "org/tiny", True, True, [], "Checkpoint")
        assert "Download started" in message
        downloads.jobs()[0].future.result(timeout=60)
        assert "done" in progress_html(downloads) and "100%" in progress_html(downloads)
        gated = start_download(tab, "corp/gated", True, True, [], "Checkpoint")
        # refused at once (no token), not "Download started" followed by a failure
        assert "Download started" not in gated
        assert "this model is gated: accept its license at" in gated
        assert len(downloads.jobs()) == 1
    assert [info.name for info in application.registry.checkpoints()] == ["org/tiny"]


def test_save_loaded_checkpoint_as_a_folder_from_the_tab(tmp_path):
    from modules.tiny_model import build_tiny_pipeline, write_diffusers
    from modules.ui.models_tab import save_loaded_as

    application = make_application(tmp_path)
    write_diffusers(build_tiny_pipeline(seed=9), application.paths.checkpoints_dir / "tiny")
    application.registry.refresh()
    assert "No checkpoint is loaded" in save_loaded_as(application, "copy", False)
    application.models.load("tiny")
    assert "Saved tiny" in save_loaded_as(application, "copy.safetensors", True)
    assert "copy.safetensors" in [info.relative_name for info in application.registry.checkpoints()]
    assert "already exists" in save_loaded_as(application, "copy.safetensors", True)
    application.service.shutdown()
