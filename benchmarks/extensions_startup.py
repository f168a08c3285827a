"""Start-up cost of extensions: N small A1111-style extensions (a preload flag, a settings callback and an
always-on script with two controls each), timed through what webui.py does: parse with preload, build the
application, attach (install.py skipped), and the script catalogue of both tabs with their controls.
Prints figures only. Usage: venv/bin/python benchmarks/extensions_startup.py [--count 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modules.application import Application
from modules.cmd_args import build_parser
from modules.compat import loader

SCRIPT = """
import gradio as gr
from modules import scripts, script_callbacks, shared


def settings():
    shared.opts.add_option("bench_{index}_on", shared.OptionInfo(False, "Bench {index}", section=("b", "B")))


script_callbacks.on_ui_settings(settings)


class Bench(scripts.Script):
    def title(self):
        return "Bench {index}"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return [gr.Checkbox(label="Enabled", value=False), gr.Slider(minimum=0, maximum=1, value=0.5, label="S")]

    def process(self, p, enabled, strength):
        if enabled:
            p.extra_generation_params["Bench {index}"] = strength
"""
PRELOAD = "def preload(parser):\n    parser.add_argument('--bench-{index}', default=None)\n"


def write_extensions(folder: Path, count: int) -> None:
    for index in range(count):
        root = folder / f"bench-{index:02d}"
        (root / "scripts").mkdir(parents=True)
        (root / "scripts" / "bench.py").write_text(SCRIPT.replace("{index}", str(index)), encoding="utf-8")
        (root / "preload.py").write_text(PRELOAD.replace("{index}", str(index)), encoding="utf-8")


def start(data_dir: Path, with_extensions: bool) -> float:
    argv = ["--data-dir", str(data_dir), "--skip-install"]
    if not with_extensions:
        argv.append("--disable-all-extensions")
    began = time.perf_counter()
    prepared = loader.parse_with_extensions(build_parser(), argv)
    application = Application.create(prepared.args)
    loader.attach(application, prepared)
    for is_img2img in (False, True):
        tab = application.scripts.tab(is_img2img)
        for script in tab.scripts:
            tab.controls_of(script)
    elapsed = time.perf_counter() - began
    application.service.shutdown()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        write_extensions(data_dir / "extensions", options.count)
        start(data_dir, True)  # warm imports (gradio, torch) so both figures measure the same thing
        without = [start(data_dir, False) for _ in range(options.repeat)]
        with_extensions = [start(data_dir, True) for _ in range(options.repeat)]
    base, loaded = statistics.median(without), statistics.median(with_extensions)
    print(f"extensions: {options.count}, runs: {options.repeat} (median)")
    print(f"start without extensions: {base * 1000:.0f} ms")
    print(f"start with {options.count} extensions: {loaded * 1000:.0f} ms")
    cost = (loaded - base) * 1000
    print(f"cost of the extensions: {cost:.0f} ms ({cost / options.count:.1f} ms each)")


if __name__ == "__main__":
    main()
