"""The page's parts without a browser: scripts and styles injected in order, the settings the page sees (no
secrets), quicksettings, the Settings pages, stable checkpoint choices, and the download line fixes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from modules.application import Application
from modules.cmd_args import build_parser
from modules.hub.client import RepoFile, RepoListing
from modules.hub.downloads import DownloadJob, DownloadState, format_bytes
from modules.options import Options
from modules.ui import checkpoints
from modules.ui.app import create_ui, kept_choice
from modules.ui.models_tab import ModelsTab, start_download
from modules.ui.page import (
    inline_script,
    localization_files,
    localization_json,
    options_json,
    page_css,
    page_head,
    script_files,
)
from modules.ui.quicksettings import apply_quicksetting, quicksetting_names
from modules.ui.settings import grouped_option_names, page_elem_id, setting_component
from tests.api_support import write_tiny_checkpoints


@pytest.fixture(scope="module")
def application(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Application]:
    data_dir = tmp_path_factory.mktemp("ui-page")
    write_tiny_checkpoints(data_dir / "models" / "Stable-diffusion", ("tiny", "tiny2"))
    extension = data_dir / "extensions" / "sample-extension"
    (extension / "javascript").mkdir(parents=True)
    (extension / "javascript" / "sample.js").write_text("onUiLoaded(() => { window.sampleLoaded = true; });")
    (extension / "style.css").write_text(".sample { color: red; }")
    created = Application.create(build_parser().parse_args(["--data-dir", str(data_dir)]))
    yield created
    created.service.shutdown()


def test_scripts_page_api_first_then_easel_then_extensions(application: Application) -> None:
    files = script_files(application.paths)
    names = [path.name for path in files]
    assert names[0] == "page.js"
    assert {"edit-attention.js", "jobs.js", "contextMenus.js", "imageviewer.js", "settings.js"} <= set(names)
    assert names[-1] == "sample.js" and files[-1].parent.parent.name == "sample-extension"
    head = page_head(files)
    assert head.index('data-source="page.js"') < head.index('data-source="sample.js"')
    assert "window.sampleLoaded = true" in head
    assert ".sample { color: red; }" in page_css(
        "body {}", [application.paths.extensions_dir / "sample-extension" / "style.css"]
    )


def test_a_closing_script_tag_inside_a_script_is_escaped(tmp_path: Path) -> None:
    script = tmp_path / "x.js"
    script.write_text('const html = "</script><b>";')
    text = inline_script(script)
    assert text.count("</script") == 1 and text.endswith("</script>")
    assert '"<\\/script><b>"' in text


def test_the_page_sees_the_settings_but_never_the_token() -> None:
    options = Options(hf_token="hf_secret_value", keyedit_precision_attention=0.05)
    values = json.loads(options_json(options))
    assert values["keyedit_precision_attention"] == 0.05
    assert values["quicksettings_list"] == ["sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"]
    assert "hf_token" not in values and "hf_secret_value" not in options_json(options)


def test_the_page_sees_extension_settings_from_config_json(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"my_extension_option": 3, "samples_format": "jpg", "hf_token": "hf_secret_value"}),
        encoding="utf-8",
    )
    values = json.loads(options_json(Options(samples_format="webp"), config))
    assert values["my_extension_option"] == 3
    assert values["samples_format"] == "webp"  # the live value, not the file's
    assert "hf_token" not in values
    assert json.loads(options_json(Options(), tmp_path / "missing.json"))["samples_format"] == "png"


def test_quicksettings_apply_at_once_and_refuse_bad_values(application: Application) -> None:
    assert quicksetting_names(application) == ["sd_vae", "CLIP_stop_at_last_layers"]
    kept, error = apply_quicksetting(application, "CLIP_stop_at_last_layers", 2)
    assert (kept, error) == (2, "")
    assert json.loads(application.paths.config_file.read_text())["CLIP_stop_at_last_layers"] == 2
    kept, error = apply_quicksetting(application, "CLIP_stop_at_last_layers", 40)
    assert kept == 2 and "Clip skip not changed" in error
    application.update_options(quicksettings_list=["sd_model_checkpoint", "no_such_setting", "samples_format"])
    try:
        assert quicksetting_names(application) == ["samples_format"]
    finally:
        application.update_options(quicksettings_list=Options().quicksettings_list, CLIP_stop_at_last_layers=1)


def test_settings_pages_list_every_option_once_and_leave_quicksettings_out() -> None:
    groups = grouped_option_names(["sd_vae"])
    listed = [name for _, names in groups for name in names]
    assert len(listed) == len(set(listed))
    assert set(listed) == set(Options.model_fields) - {"sd_model_checkpoint", "hf_token", "sd_vae"}
    titles = [title for title, _ in groups]
    assert titles[:3] == ["Saving images/grids", "Paths for saving", "Saving to a directory"]
    assert page_elem_id("Saving images/grids") == "settings_page_saving_images_grids"


def test_setting_controls_offer_the_allowed_values(application: Application) -> None:
    with gr.Blocks():
        theme = setting_component(application, "theme", "Dark")
        whitespace = setting_component(application, "keyedit_delimiters_whitespace", ["Tab"])
        vae = setting_component(application, "sd_vae", "Automatic")
        quick = setting_component(application, "quicksettings_list", ["sd_vae"])
    assert isinstance(theme, gr.Dropdown) and [value for _, value in theme.choices] == [
        "Follow the browser",
        "Light",
        "Dark",
    ]
    assert isinstance(whitespace, gr.CheckboxGroup) and whitespace.value == ["Tab"]
    assert [value for _, value in vae.choices][:2] == ["Automatic", "None"]
    assert quick.multiselect and "sd_model_checkpoint" in [value for _, value in quick.choices]


def test_checkpoint_choices_keep_their_value_when_the_title_gains_its_hash(application: Application) -> None:
    application.service.run_task(lambda: application.models.load("tiny"))
    choices = checkpoints.checkpoint_choices(application)
    assert len(choices) >= 2 and all(label.startswith(value) and "[" not in value for label, value in choices)
    assert any(label.endswith("]") for label, _ in choices)  # the loaded one is hashed: its title grew
    title = application.registry.find("tiny").title
    assert kept_choice(application, title) == application.registry.find("tiny").relative_name
    assert kept_choice(application, "gone-meanwhile") == application.registry.find("tiny").relative_name


def test_a_repeated_switch_to_the_loaded_checkpoint_loads_nothing(application: Application) -> None:
    application.service.run_task(lambda: application.models.load("tiny"))
    loaded = application.models.current
    outcome = checkpoints.switch_checkpoint(application, application.registry.find("tiny").relative_name)
    assert outcome.error == "" and application.models.current is loaded


def test_checkpoint_state_follows_a_new_file_and_a_load(application: Application) -> None:
    before = checkpoints.checkpoint_state(application)
    write_tiny_checkpoints(application.paths.checkpoints_dir, ("tiny3",))
    application.registry.refresh()
    after_file = checkpoints.checkpoint_state(application)
    assert after_file != before
    application.service.run_task(lambda: application.models.load("tiny2"))
    assert checkpoints.checkpoint_state(application) != after_file


def test_the_ui_builds_with_quicksettings_in_the_top_bar(application: Application) -> None:
    blocks = create_ui(application)
    ids = {getattr(block, "elem_id", None) for block in blocks.blocks.values()}
    assert {"setting_sd_vae", "setting_CLIP_stop_at_last_layers", "settings_json", "txt2img_paste"} <= ids
    assert {"txt2img_clear_prompt", "settings_search", "settings_page_choice"} <= ids
    quick_ids = [block for block in blocks.blocks.values() if getattr(block, "elem_id", None) == "setting_sd_vae"]
    assert len(quick_ids) == 1  # shown at the top, not a second time in Settings


def test_a_finished_download_says_no_eta_and_keeps_its_speed(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([110.0, 130.0, 500.0])  # end() reads 110 s; later reads must not change the speed
    monkeypatch.setattr("modules.hub.downloads.time.monotonic", lambda: next(clock))
    job = DownloadJob(repo_id="org/model", description="org/model", total_bytes=10 * 1024 * 1024)
    job.state, job.started = DownloadState.RUNNING, 100.0
    job.transferred_bytes = job.finished_bytes = 10 * 1024 * 1024
    job.end(DownloadState.DONE, "saved")  # at 110 s
    first, later = job.status(), job.status()
    assert first.speed_bytes == later.speed_bytes == 1024 * 1024
    assert "ETA" not in first.describe() and "- -" not in first.describe()
    assert "10.0 MiB / 10.0 MiB" in first.describe() and "1.0 MiB/s" in first.describe()


def test_sizes_are_binary_units() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 1024**3) == "3.0 GiB"


def test_a_gated_repository_without_token_is_refused_before_starting() -> None:
    listing = RepoListing("org/gated", "abc", (RepoFile("model.safetensors", 10),), gated=True)
    client = SimpleNamespace(endpoint="http://hub.test", list_files=lambda repo: listing, token=lambda: None)
    downloads = SimpleNamespace(start_files=pytest.fail, start_pipeline=pytest.fail)
    message = start_download(
        ModelsTab(downloads, client), "org/gated", False, False, ["model.safetensors"], "Checkpoint"
    )
    assert "gated" in message and "Download started" not in message


def test_localization_files_from_easel_data_and_extensions(tmp_path: Path) -> None:
    from modules.paths import DataPaths

    paths = DataPaths.create(tmp_path)
    (tmp_path / "localizations").mkdir()
    (tmp_path / "localizations" / "de.json").write_text('{"Generate": "Erzeugen", "Steps": 5}', encoding="utf-8")
    (tmp_path / "localizations" / "broken.json").write_text("{not json", encoding="utf-8")
    extension = tmp_path / "extensions" / "lang-pack" / "localizations"
    extension.mkdir(parents=True)
    (extension / "fr.json").write_text('{"Generate": "Générer"}', encoding="utf-8")
    found = localization_files(paths)
    assert {"de", "fr", "broken"} <= set(found)
    assert json.loads(localization_json(paths, "de")) == {"Generate": "Erzeugen", "Steps": "5"}
    assert json.loads(localization_json(paths, "fr")) == {"Generate": "Générer"}
    assert localization_json(paths, "broken") == "{}"
    assert localization_json(paths, "None") == "{}" and localization_json(paths, "missing") == "{}"


def test_clip_skip_quicksetting_moves_the_tabs_sliders(application: Application) -> None:
    blocks = create_ui(application)
    moved: set[str] = set()
    for function in blocks.fns.values():
        inputs = {getattr(component, "elem_id", None) for component in function.inputs}
        if "setting_CLIP_stop_at_last_layers" in inputs and function.fn is not None:
            outputs = {getattr(component, "elem_id", None) for component in function.outputs}
            if "txt2img_clip_skip" in outputs:
                moved = outputs
                assert function.fn(3) == [3] * len(outputs)
    assert {"txt2img_clip_skip", "img2img_clip_skip", "inpaint_clip_skip"} <= moved
