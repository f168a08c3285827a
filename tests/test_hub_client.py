"""The hub client against a local fake hub: search and sort, paging, gated repositories, the token kept secret."""

from __future__ import annotations

import json
import logging
import stat

import pytest

from modules.hub.client import PAGE_SIZE, HubClient, SearchKind, SortKey
from modules.hub.errors import GatedModelError, RepositoryMissingError
from modules.options import Options
from tests.hub_server import FakeRepo, serve_hub

SECRET = "hf_test_secret_token_1234567890"


@pytest.fixture
def hub():
    with serve_hub() as fake:
        fake.add(FakeRepo("org/alpha-sd", {"model_index.json": b"{}"}, "text-to-image", ("diffusers",), 50, 3))
        fake.add(FakeRepo("org/beta-sd", {"model_index.json": b"{}"}, "text-to-image", ("diffusers",), 10, 30))
        fake.add(
            FakeRepo(
                "org/gamma-sd",
                {"model_index.json": b"{}"},
                "text-to-image",
                ("diffusers",),
                30,
                1,
                last_modified="2025-06-01T00:00:00.000Z",
            )
        )
        fake.add(FakeRepo("someone/style-lora", {"style.safetensors": b"x" * 10}, None, ("lora",), 99, 5))
        fake.add(FakeRepo("corp/gated-sd", {"model_index.json": b"{}"}, "text-to-image", ("diffusers",), gated=True))
        yield fake


def test_search_filters_by_kind_and_sorts(hub):
    client = HubClient(hub.url)
    by_downloads = client.search("", SearchKind.DIFFUSERS, SortKey.DOWNLOADS)
    assert [row.id for row in by_downloads] == ["org/alpha-sd", "org/gamma-sd", "org/beta-sd", "corp/gated-sd"]
    assert [row.id for row in client.search("", SearchKind.DIFFUSERS, SortKey.LIKES)][:2] == [
        "org/beta-sd",
        "org/alpha-sd",
    ]
    assert client.search("", SearchKind.DIFFUSERS, SortKey.LAST_MODIFIED)[0].id == "org/gamma-sd"
    loras = client.search("style", SearchKind.LORA)
    assert [(row.id, row.kind, row.downloads, row.likes) for row in loras] == [("someone/style-lora", "LoRA", 99, 5)]
    gated = [row for row in by_downloads if row.gated]
    assert [row.id for row in gated] == ["corp/gated-sd"]
    query = dict(item.split("=", 1) for item in hub.requests[0][1].split("?", 1)[1].split("&"))
    assert query["filter"] == "diffusers" and query["pipeline_tag"] == "text-to-image"


def test_search_pages(hub):
    for index in range(PAGE_SIZE + 5):
        hub.add(FakeRepo(f"bulk/model-{index:02d}", {}, None, ("lora",), downloads=1000 - index))
    client = HubClient(hub.url)
    first = client.search("bulk", SearchKind.LORA, SortKey.DOWNLOADS, page=0)
    second = client.search("bulk", SearchKind.LORA, SortKey.DOWNLOADS, page=1)
    assert len(first) == PAGE_SIZE and len(second) == 5
    assert first[0].id == "bulk/model-00" and second[0].id == f"bulk/model-{PAGE_SIZE:02d}"


def test_repository_files_and_sizes(hub):
    hub.add(FakeRepo("org/files", {"a.safetensors": b"1" * 100, "unet/config.json": b"{}"}))
    listing = HubClient(hub.url).list_files("org/files")
    assert {item.path: item.size for item in listing.files} == {"a.safetensors": 100, "unet/config.json": 2}
    assert listing.total_bytes == 102 and listing.commit == hub.repos["org/files"].sha


def test_gated_repository_gives_the_license_message(hub, tmp_path):
    client = HubClient(hub.url)
    listing = client.list_files("corp/gated-sd")
    assert listing.gated
    with pytest.raises(GatedModelError) as raised:
        client.download("corp/gated-sd", "model_index.json", listing.commit, cache_dir=tmp_path)
    message = str(raised.value)
    assert message.startswith("this model is gated: accept its license at")
    assert f"{hub.url}/corp/gated-sd" in message and "set a token" in message
    assert "401" not in message and "404" not in message


def test_wrong_token_is_told_it_has_no_access(hub, tmp_path):
    client = HubClient(hub.url, token_provider=lambda: "hf_wrong")
    with pytest.raises(GatedModelError, match="your token has no access"):
        client.download("corp/gated-sd", "model_index.json", "main", cache_dir=tmp_path)


def test_missing_repository_is_not_a_raw_error(hub, tmp_path):
    with pytest.raises(GatedModelError, match="gated or private"):
        HubClient(hub.url).list_files("nobody/nothing")  # the hub answers 401 for missing and private alike
    hub.add(FakeRepo("org/empty", {}))
    with pytest.raises(RepositoryMissingError, match="not found"):
        HubClient(hub.url).download("org/empty", "nope.bin", "main", local_dir=tmp_path)


def test_token_is_sent_but_never_logged_nor_dumped(hub, tmp_path, caplog):
    hub.valid_tokens.add(SECRET)
    options = Options(hf_token=SECRET)
    client = HubClient(hub.url, token_provider=lambda: options.hf_token)
    with caplog.at_level(logging.DEBUG):
        listing = client.list_files("corp/gated-sd")
        path = client.download("corp/gated-sd", "model_index.json", listing.commit, cache_dir=tmp_path)
        logging.getLogger("test").info("options=%r dump=%s", options, options.model_dump())
    assert path.read_bytes() == b"{}"
    assert any(headers.get("authorization") == f"Bearer {SECRET}" for _, _, headers in hub.requests)
    assert SECRET not in caplog.text
    assert "hf_token" not in options.model_dump() and SECRET not in options.model_dump_json()


def test_token_is_stored_with_owner_only_permissions(tmp_path):
    config = tmp_path / "config.json"
    Options(hf_token=SECRET, default_steps=12).save(config)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    saved = json.loads(config.read_text())
    assert saved["hf_token"] == SECRET and saved["default_steps"] == 12
    assert Options.load(config).hf_token == SECRET
    Options(hf_token="").save(config)
    assert "hf_token" not in json.loads(config.read_text()), "clearing the token removes it from the file"
