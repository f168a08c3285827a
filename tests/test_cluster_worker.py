"""The Ray-free parts of the Ray workers (issue 19): the saver seam and the worker body, run in this process.
The real cluster is tests/test_ray_cluster.py (slow)."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from modules.cluster.worker import STORAGE_HINT, GenerationWorker, WorkerJob
from modules.cmd_args import build_parser
from modules.options import Options
from modules.paths import DataPaths
from modules.processing.processing import ProcessingError, process
from modules.processing.saver import DeferredSaver, replay
from tests.helpers import pixels, tiny_request


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_deferred_files_replayed_here_are_the_files_processing_writes(context, tmp_path: Path) -> None:
    at_once, deferred = DataPaths.create(tmp_path / "a"), DataPaths.create(tmp_path / "b")
    at_once.ensure(), deferred.ensure()
    request = tiny_request(save_images=True, n_iter=2)
    written = process(request, replace(context, paths=at_once))
    saver = DeferredSaver()
    recorded = process(request, replace(context, paths=deferred, saver=saver))
    assert files_under(deferred.outputs_dir) == {} and not deferred.params_file.exists()
    assert [order.method for order in saver.orders] == ["save_image", "save_image", "save_grid", "write_params"]
    pickle.dumps(saver.orders)  # what a worker sends back: plain data (no run, no listeners, no locks)
    replay(saver.orders, recorded)
    assert [path.relative_to(deferred.data_dir) for path in recorded.saved_paths] == [
        path.relative_to(at_once.data_dir) for path in written.saved_paths
    ]
    assert recorded.grid_path.relative_to(deferred.data_dir) == written.grid_path.relative_to(at_once.data_dir)
    assert files_under(deferred.outputs_dir) == files_under(at_once.outputs_dir)
    assert deferred.params_file.read_text() == at_once.params_file.read_text()


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> GenerationWorker:
    from tests.api_support import write_tiny_checkpoints

    data_dir = tmp_path_factory.mktemp("worker")
    write_tiny_checkpoints(data_dir / "models" / "Stable-diffusion", ("tiny",))
    args = build_parser().parse_args(["--data-dir", str(data_dir), "--use-cpu", "all"])
    return GenerationWorker("worker-9", args)


def job(request, checkpoint: str | None = "tiny", job_id: str = "job-1") -> WorkerJob:
    return WorkerJob(job_id=job_id, request=request, checkpoint=checkpoint, options=Options().model_dump())


def test_a_worker_runs_the_job_records_its_files_and_names_itself(worker: GenerationWorker, context) -> None:
    outcome = worker.run(job(tiny_request(save_images=True)))
    assert outcome.result.worker == "worker-9"
    assert [order.method for order in outcome.orders] == ["save_image", "write_params"]
    assert not any(worker.paths.outputs_dir.rglob("*.png"))  # written by Easel, not here
    assert outcome.checkpoint_path and outcome.checkpoint_path.endswith("tiny")
    reference = process(tiny_request(), context)
    assert (pixels(outcome.result.images[0]) == pixels(reference.images[0])).all()
    info = worker.describe()
    assert info.name == "worker-9" and info.device == "cpu" and info.job is None
    assert info.checkpoint_path == outcome.checkpoint_path and info.memory["process"]["rss"] > 0


def test_a_worker_takes_easels_settings_with_each_job(worker: GenerationWorker) -> None:
    options = Options(samples_format="jpg").model_dump()
    outcome = worker.run(replace(job(tiny_request(save_images=True)), options=options))
    assert outcome.orders[0].kwargs["file_format"] == "jpg"
    assert isinstance(outcome.orders[0].args[0], Image.Image)


def test_a_worker_without_the_file_says_the_storage_model(worker: GenerationWorker) -> None:
    with pytest.raises(ProcessingError, match=STORAGE_HINT):
        worker.run(job(tiny_request(), checkpoint="absent-model"))


def test_signals_reach_only_a_job_running_on_the_worker(worker: GenerationWorker) -> None:
    assert worker.signal("not-running", "interrupt") is False
    assert worker.progress("not-running") is None
    with pytest.raises(ValueError):
        worker.signal("job-1", "explode")


def test_the_models_tab_lists_each_worker(worker: GenerationWorker) -> None:
    from types import SimpleNamespace

    from modules.ui.models_tab import WORKER_HEADERS, worker_rows

    info = replace(worker.describe(), job="job-7")
    (row,) = worker_rows(SimpleNamespace(workers=lambda: [info]))
    assert dict(zip(WORKER_HEADERS, row, strict=True)) | {"process RAM": ""} == {
        "worker": "worker-9",
        "node": info.node,
        "device": "cpu",
        "checkpoint": info.checkpoint or "(none)",
        "job": "job-7",
        "process RAM": "",
        "GPU memory used": "-",
    }
    assert row[5].endswith("B")
    assert worker_rows(SimpleNamespace(workers=None)) == []


def test_ray_is_not_imported_without_ray_address(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from modules.application import Application; from modules.cmd_args import build_parser; "
        "import modules.api.routes, modules.server; "
        f"Application.create(build_parser().parse_args(['--data-dir', {str(tmp_path)!r}, '--use-cpu', 'all'])); "
        "print('ray' in sys.modules)"
    )
    root = Path(__file__).resolve().parent.parent
    answer = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert answer.stdout.strip().splitlines()[-1] == "False"


class GateRunner:
    """A runner of two slots whose jobs wait for their gate: the generation service's side of Ray workers."""

    slots = 2

    def __init__(self) -> None:
        import queue
        import threading

        self.free = threading.Semaphore(2)
        self.started: queue.Queue[str] = queue.Queue()
        self.gate = threading.Event()
        self.closed = False

    def hold(self) -> object:
        self.free.acquire()
        return object()

    def release(self, slot: object | None) -> None:
        if slot is not None:
            self.free.release()

    def run(self, job, request, slot):
        from modules.processing.run import ProcessingResult

        self.started.put(job.id)
        self.gate.wait(30)
        self.release(slot)
        return ProcessingResult(interrupted=job.control.interrupted, worker=f"gate-{request.seed}")

    def close(self) -> None:
        self.closed = True


def test_the_service_runs_as_many_jobs_as_the_runner_has_slots(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from modules.generation import GenerationService, JobState
    from modules.scripts.runner import BoundScripts

    runner = GateRunner()
    context = SimpleNamespace(options=Options(), paths=DataPaths.create(tmp_path))
    service = GenerationService(context, runner=runner)
    first = service.submit(tiny_request(seed=1), owner="alice")
    second = service.submit(tiny_request(seed=2), owner="bob")
    third = service.submit(tiny_request(seed=3), owner="alice")
    assert {runner.started.get(timeout=10), runner.started.get(timeout=10)} == {first.id, second.id}
    assert {job.id for job in service.running()} == {first.id, second.id}
    assert third.state is JobState.QUEUED and service.position(third) == 1
    assert service.interrupt(owner="bob")  # bob's own running job, not alice's
    assert second.control.interrupted and not first.control.interrupted
    runner.gate.set()
    results = [job.future.result(timeout=10) for job in (first, second, third)]
    assert [result.worker for result in results] == ["gate-1", "gate-2", "gate-3"]
    assert [result.interrupted for result in results] == [False, True, False]
    scripted = service.submit(tiny_request(), owner="alice", scripts=BoundScripts(always_on=[(object(), {})]))
    with pytest.raises(ProcessingError, match="cannot run on Ray workers"):
        scripted.future.result(timeout=10)
    # an always-on script left at its defaults (ControlNet with no unit enabled) does nothing: the job runs
    idle_script = object()
    idle = BoundScripts(always_on=[(idle_script, {"enabled": False})], defaults={id(idle_script): {"enabled": False}})
    ran = service.submit(tiny_request(seed=4), owner="alice", scripts=idle).future.result(timeout=10)
    assert ran.worker == "gate-4"
    service.shutdown()
    assert runner.closed


def test_an_address_where_no_head_answers_is_refused_at_once() -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install -r requirements-ray.txt)")
    from modules.cluster.pool import ClusterError, probe_address
    from tests.helpers import free_port

    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ClusterError, match=f"no Ray head answers at {address}"):
        probe_address(address)


def test_with_workers_a_checkpoint_choice_is_saved_not_loaded_here(tmp_path: Path) -> None:
    from modules.application import Application
    from modules.ui.checkpoints import switch_checkpoint
    from tests.api_support import write_tiny_checkpoints

    write_tiny_checkpoints(tmp_path / "models" / "Stable-diffusion", ("tiny", "tiny2"))
    application = Application.create(build_parser().parse_args(["--data-dir", str(tmp_path), "--use-cpu", "all"]))
    application.workers = list  # as with --ray-address: the workers (none here) load checkpoints, not Easel
    switched = switch_checkpoint(application, "tiny2")
    assert switched.title.startswith("tiny2") and application.models.current is None
    assert application.options.sd_model_checkpoint == switched.title
    assert application.checkpoint_for(None)[0] == switched.title  # the jobs' checkpoint follows the choice
    assert "Could not choose" in switch_checkpoint(application, "absent").error
    application.service.shutdown()
