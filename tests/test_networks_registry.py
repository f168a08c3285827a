"""Network folders: scan with subfolders and previews, lazy metadata, A1111 addnet hash, card search and sort."""

from __future__ import annotations

import hashlib
import json
import os

import torch
from PIL import Image
from safetensors.torch import save_file

from modules.models.hashing import HashCache
from modules.networks.cards import CardKind, SortKey, filter_cards, list_cards, subfolders
from modules.networks.registry import NetworkRegistry, addnet_hash


def make_folder(root):
    (root / "people").mkdir(parents=True)
    tags = json.dumps({"set": {"blue hair": 5, "smile": 9}})
    save_file({"a": torch.ones(3)}, str(root / "zeta.safetensors"), metadata={"ss_tag_frequency": tags})
    save_file({"a": torch.zeros(300)}, str(root / "people" / "alpha.safetensors"))
    Image.new("RGB", (8, 8)).save(root / "people" / "alpha.preview.png")
    (root / "people" / "alpha.json").write_text(json.dumps({"description": "portraits", "activation text": "alph"}))
    (root / "notes.txt").write_text("not a network")
    os.utime(root / "zeta.safetensors", (1, 1))


def test_scan_metadata_hash_and_cards(tmp_path):
    root = tmp_path / "Lora"
    make_folder(root)
    registry = NetworkRegistry([root], [], [], HashCache(tmp_path / "cache.json"))
    entries = registry.entries("lora")
    assert [(entry.name, entry.subfolder) for entry in entries] == [("alpha", "people"), ("zeta", "")]
    alpha = registry.find("lora", "ALPHA")
    assert alpha is not None and alpha.preview == root / "people" / "alpha.preview.png"
    assert registry.metadata(alpha).description == "portraits"
    assert registry.metadata(alpha).trigger_words == ("alph",)
    zeta = registry.find("lora", "zeta")
    assert registry.metadata(zeta).trigger_words == ("smile", "blue hair")
    # addnet hash: sha256 of the bytes after the 8-byte length and the JSON header
    data = zeta.path.read_bytes()
    header_length = int.from_bytes(data[:8], "little")
    assert addnet_hash(zeta.path) == hashlib.sha256(data[8 + header_length :]).hexdigest()[:12]
    assert registry.lora_hash(zeta) == addnet_hash(zeta.path)
    assert "lora-addnet/" in (tmp_path / "cache.json").read_text()

    cards = list_cards(CardKind.LORA, registry, None)
    assert subfolders(cards) == ["All", "people"]
    assert [card.value for card in cards] == ["<lora:alpha:1>", "<lora:zeta:1>"]
    assert [card.name for card in filter_cards(cards, "zet")] == ["zeta"]
    assert [card.name for card in filter_cards(cards, "", "people")] == ["alpha"]
    assert [card.name for card in filter_cards(cards, "portraits", networks=registry)] == ["alpha"]  # cached metadata
    assert [card.name for card in filter_cards(cards, sort=SortKey.DATE)] == ["zeta", "alpha"]
    assert [card.name for card in filter_cards(cards, sort=SortKey.SIZE, descending=True)] == ["alpha", "zeta"]
