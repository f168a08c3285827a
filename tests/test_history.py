"""The image history: jobs' saved images indexed with their infotext fields, search, owners, favourite, delete,
and the scan of images already in the output folders."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from modules.generation import GenerationService
from modules.jobs.database import Database
from modules.jobs.history import HistoryQuery, ImageHistory
from modules.jobs.store import JobStore
from tests.helpers import tiny_request


def infotext(prompt: str, seed: int, model: str = "tiny", negative: str = "ugly") -> str:
    return (
        f"{prompt}\nNegative prompt: {negative}\n"
        f"Steps: 3, Sampler: Euler, CFG scale: 7, Seed: {seed}, Size: 64x48, Model hash: abc, Model: {model}"
    )


def write_png(path: Path, text: str | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = PngInfo()
    if text is not None:
        metadata.add_text("parameters", text)
    Image.new("RGB", (64, 48), (10, 20, 30)).save(path, pnginfo=metadata)
    return path


@pytest.fixture
def history(tmp_path: Path) -> ImageHistory:
    return ImageHistory(Database(tmp_path / "queue.db"), tmp_path / "outputs")


def test_a_jobs_saved_images_are_indexed_for_their_owner(context, tmp_path: Path) -> None:
    database = Database(tmp_path / "queue.db")
    history = ImageHistory(database, tmp_path / "outputs")
    service = GenerationService(context, JobStore(database), history)
    try:
        request = tiny_request(prompt="a red boat", negative_prompt="blurry", seed=77, save_images=True, batch_size=2)
        result = service.submit(request, owner="alice").future.result(timeout=120)
    finally:
        service.shutdown()
    found = history.search(HistoryQuery(), "alice")
    assert sorted(image.path for image in found) == sorted(path.resolve() for path in result.saved_paths)
    first = next(image for image in found if image.seed == 77)
    assert (first.prompt, first.negative_prompt, first.sampler, first.width, first.height) == (
        "a red boat",
        "blurry",
        "Euler",
        64,
        64,
    )
    assert first.model == "tiny" and first.infotext == result.infotexts[0]
    assert history.search(HistoryQuery(), "bob") == []
    assert len(history.search(HistoryQuery(), None)) == 2  # the admin


def test_search_filters(history: ImageHistory, tmp_path: Path) -> None:
    day = datetime(2026, 3, 14, 12).timestamp()
    entries = [
        ("a red boat at sea", 1, "tiny", day),
        ("a blue car", 2, "other", day + 86_400),
        ("RED car_100%", 3, "tiny", day + 2 * 86_400),
    ]
    for index, (prompt, seed, model, moment) in enumerate(entries):
        path = write_png(tmp_path / "outputs" / f"{index}.png", infotext(prompt, seed, model))
        history.add(path, "alice", infotext(prompt, seed, model), moment)

    def seeds(**filters) -> list[int]:
        return sorted(image.seed for image in history.search(HistoryQuery(**filters), "alice"))

    assert seeds() == [1, 2, 3]
    assert seeds(words="red") == [1, 3]  # any case
    assert seeds(words="boat red") == [1]  # every word
    assert seeds(words="car_100%") == [3] and seeds(words="%") == [3]  # LIKE wildcards are literal
    assert seeds(model="other") == [2]
    assert seeds(seed=3) == [3]
    assert seeds(date_from=date(2026, 3, 15)) == [2, 3]
    assert seeds(date_from=date(2026, 3, 15), date_to=date(2026, 3, 15)) == [2]
    assert seeds(favourites_only=True) == []
    target = history.search(HistoryQuery(seed=2), "alice")[0]
    assert not history.set_favourite(target.id, "bob", True), "not bob's image"
    assert history.set_favourite(target.id, "alice", True)
    assert seeds(favourites_only=True) == [2]


def test_delete_removes_file_text_and_row_for_the_owner_only(history: ImageHistory, tmp_path: Path) -> None:
    path = write_png(tmp_path / "outputs" / "x.png", infotext("a cat", 5))
    path.with_suffix(".txt").write_text(infotext("a cat", 5))
    history.add(path, "alice", infotext("a cat", 5))
    image_id = history.search(HistoryQuery(), "alice")[0].id
    assert not history.delete(image_id, "bob") and path.exists()
    assert history.get(image_id, "bob") is None
    assert history.delete(image_id, "alice")
    assert not path.exists() and not path.with_suffix(".txt").exists()
    assert history.search(HistoryQuery(), None) == []


def test_scan_indexes_existing_images_and_files_deleted_by_hand_drop_out(history: ImageHistory, tmp_path: Path):
    outputs = tmp_path / "outputs"
    kept = write_png(outputs / "txt2img-images" / "2026-01-01" / "00001-11.png", infotext("old boat", 11))
    plain = write_png(outputs / "extras-images" / "00002.png", None)
    (outputs / "notes.txt").write_text("not an image")
    (outputs / "broken.png").write_bytes(b"\x89PNG broken")
    progress = history.start_scan()
    progress.join(60)
    assert history.scan_progress.total == 3 and history.scan_progress.done == 3 and history.scan_progress.added == 2
    assert "2 added" in history.scan_progress.text()
    found = {image.path: image for image in history.search(HistoryQuery(), None)}
    assert set(found) == {kept.resolve(), plain.resolve()}
    assert found[kept.resolve()].prompt == "old boat" and found[kept.resolve()].seed == 11
    assert found[kept.resolve()].owner == ""  # found in the folders: no login known (the admin sees it)
    assert found[kept.resolve()].created_at == pytest.approx(kept.stat().st_mtime)

    plain.unlink()  # deleted by hand
    assert [image.path for image in history.search(HistoryQuery(), None)] == [kept.resolve()]
    kept.unlink()
    history.scan()
    assert history.scan_progress.removed == 1 and history.scan_progress.added == 0
    assert history.scan_progress.total == 1  # only the unreadable file is looked at again
    assert history.search(HistoryQuery(), None) == []
