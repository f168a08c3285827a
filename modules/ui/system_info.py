"""The System info tab: versions, device and memory, flags, loaded models, the compute settings in force; and the
Benchmark (it/s at batch 1, 2, 4 on the loaded model; a table that keeps past runs)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields

import gradio as gr

from modules.application import Application
from modules.system_info import BenchmarkHistory, BenchmarkRow, collect, run_benchmark
from modules.ui.messages import status_html

HEADERS = [field.name for field in fields(BenchmarkRow)]


def benchmark_history(application: Application) -> BenchmarkHistory:
    return BenchmarkHistory(application.paths.data_dir / "benchmarks.json")


def table(rows: list[BenchmarkRow]) -> list[list[object]]:
    return [list(asdict(row).values()) for row in reversed(rows)]  # newest first


def system_info_text(application: Application) -> str:
    return json.dumps(collect(application.models, application.args), indent=2, default=str)


def run_benchmark_job(application: Application, steps: float | None) -> tuple[list[list[object]], str]:
    """Queued like a generation (never overlaps one); the rows are added to the history."""
    count = max(1, int(steps or 20))
    context = application.service.context
    try:
        rows = application.service.run_task(lambda: run_benchmark(context, steps=count), kind="benchmark")
    except Exception as error:  # shown in the tab: no checkpoint, out of memory ...
        return table(benchmark_history(application).rows()), status_html(f"Benchmark failed: {error}", "error")
    history = benchmark_history(application).add(rows)
    best = max(rows, key=lambda row: row.its)
    message = (
        f"Benchmark done: {len(rows)} runs; best {best.its} it/s at {best.width}x{best.height} batch {best.batch_size}"
    )
    return table(history), status_html(message)


def create_system_info_tab(application: Application) -> None:
    with gr.Row():
        refresh = gr.Button("Refresh", elem_id="system_info_refresh", scale=0, min_width=160)
    info = gr.Code(system_info_text(application), language="json", label="System info", elem_id="system_info_json")
    gr.Markdown(
        "**Benchmark**: txt2img through Easel's normal path on the loaded model (Euler, seed 1), at 512x512 and the "
        "checkpoint's native size, batch 1, 2 and 4, after one untimed warm-up per size. it/s = steps / seconds of "
        "the whole job (prompt encoding, denoising and decoding included)."
    )
    with gr.Row():
        steps = gr.Number(20, label="Steps", precision=0, minimum=1, maximum=150, elem_id="benchmark_steps")
        start = gr.Button("Benchmark", variant="primary", elem_id="benchmark_run", scale=0, min_width=160)
    status = gr.HTML(elem_id="benchmark_status")
    results = gr.Dataframe(
        table(benchmark_history(application).rows()),
        headers=HEADERS,
        label="Benchmark runs (newest first)",
        interactive=False,
        elem_id="benchmark_table",
    )
    refresh.click(lambda: system_info_text(application), outputs=info, api_visibility="private")
    start.click(
        lambda count: run_benchmark_job(application, count),
        inputs=steps,
        outputs=[results, status],
        api_visibility="private",
    ).then(lambda: system_info_text(application), outputs=info, api_visibility="private")
