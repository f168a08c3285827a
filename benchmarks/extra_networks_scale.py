"""Extra Networks at scale: 5,000 small LoRA files (50 subfolders, some previews and .json), then the times of
the folder scan, opening the tab (list + filter + render a page of cards), searching, and building the app.

Prints figures only. Usage: venv/bin/python benchmarks/extra_networks_scale.py [--count 5000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from PIL import Image
from safetensors.torch import save_file

from modules.networks.cards import CardKind, SortKey, filter_cards, list_cards
from modules.networks.registry import NetworkRegistry


def make_files(lora_dir: Path, count: int) -> None:
    tensors = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0),
    }
    preview = Image.new("RGB", (256, 256), (120, 80, 200))
    for index in range(count):
        folder = lora_dir / f"folder{index % 50:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"style_{index:05d}"
        save_file(tensors, str(folder / f"{name}.safetensors"), metadata={"ss_output_name": name})
        if index % 10 == 0:
            preview.save(folder / f"{name}.png")
            (folder / f"{name}.json").write_text(json.dumps({"description": f"style number {index}"}))


def timed(label: str, function, repeat: int = 3):
    best = float("inf")
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    print(f"{label:<42} {best * 1000:9.1f} ms")
    return result


def measure_app_start(data_dir: Path) -> None:
    from modules.application import Application
    from modules.cmd_args import build_parser
    from modules.ui.app import create_ui

    args = build_parser().parse_args(["--data-dir", str(data_dir), "--no-download-sd-model"])
    started = time.perf_counter()
    application = Application.create(args)
    created = time.perf_counter() - started
    create_ui(application)
    print(f"{'app start: Application.create':<42} {created * 1000:9.1f} ms")
    print(f"{'app start: + create_ui (whole UI)':<42} {(time.perf_counter() - started) * 1000:9.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--keep", type=Path, default=None, help="write the files here (kept) instead of a temp dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        data_dir = args.keep or Path(temporary)
        lora_dir = data_dir / "models" / "Lora"
        started = time.perf_counter()
        make_files(lora_dir, args.count)
        print(f"made {args.count} LoRA files in {time.perf_counter() - started:.1f} s under {lora_dir}")
        registry = NetworkRegistry([lora_dir], [], [])
        timed("scan (os.scandir walk, best of 3)", lambda: registry.refresh(["lora"]))
        cards = timed("list cards", lambda: list_cards(CardKind.LORA, registry, None))
        timed("filter all + sort by name", lambda: filter_cards(cards, "", "All", SortKey.NAME, False, registry))
        timed("search 'style_012'", lambda: filter_cards(cards, "style_012", "All", SortKey.NAME, False, registry))
        timed("search + subfolder + sort by date", lambda: filter_cards(cards, "style", "folder07", SortKey.DATE, True))
        from modules.ui.extra_networks import CardRenderer

        networks = SimpleNamespace(registry=registry)
        renderer = CardRenderer(SimpleNamespace(networks=networks))  # type: ignore[arg-type]

        def open_tab() -> str:
            return renderer.render(filter_cards(list_cards(CardKind.LORA, registry, None), "", "All", SortKey.NAME))

        renderer.thumbnails.clear()
        timed("open tab (cold metadata + previews)", open_tab, repeat=1)
        timed("open tab (warm)", open_tab)
        timed(
            "search + render",
            lambda: renderer.render(filter_cards(cards, "style_04", "All", SortKey.NAME, False, registry)),
        )
        measure_app_start(data_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
