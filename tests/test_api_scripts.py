"""Scripts over /sdapi/v1 as A1111 clients use them: X/Y/Z plot with positional script_args, /scripts and
/script-info shapes, A1111's 422 answers for unknown or misplaced script names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from modules.processing.infotext import parse_infotext, read_infotext
from tests.api_support import SMALL, ApiServer, copy_checkpoints, decode_png, start_api_server, write_tiny_checkpoints

XYZ_ARGS = [4, "2,3", [], 6, "3,7", [], 0, "", [], True, True, False, False, False, False, False, 0, False]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("api-scripts")
    write_tiny_checkpoints(root / "checkpoints", ("tiny",))
    copy_checkpoints(root / "checkpoints", root / "data")
    running = start_api_server(root / "data")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: ApiServer) -> httpx.Client:
    return server.client()


def test_xyz_plot_with_positional_script_args(client: httpx.Client, server: ApiServer) -> None:
    body = {
        "prompt": "a fox",
        "seed": 42,
        "sampler_name": "Euler",
        "script_name": "X/Y/Z Plot",
        "script_args": XYZ_ARGS,
        **SMALL,
    }
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    info = json.loads(answer["info"])
    assert len(answer["images"]) == 5 and len(info["infotexts"]) == 5 and info["index_of_first_image"] == 1
    grid = decode_png(answer["images"][0])
    assert grid.size == (176, 137)
    grid_parameters = parse_infotext(read_infotext(grid))
    assert grid_parameters["Script"] == "X/Y/Z plot" and grid_parameters["X Type"] == "Steps"
    cells = [parse_infotext(text) for text in info["infotexts"][1:]]
    assert [(cell["Steps"], float(cell["CFG scale"])) for cell in cells] == [("2", 3), ("3", 3), ("2", 7), ("3", 7)]
    assert {cell["Seed"] for cell in cells} == {"42"}
    grids = list((server.data_dir / "outputs" / "txt2img-grids").rglob("*.png"))
    assert len(grids) == 1 and "X/Y/Z plot" in read_infotext(Image.open(grids[0]))


XYZ_INFOTEXT = (
    "a fox\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 42, Size: 64x64, Script: X/Y/Z plot, "
    'X Type: Steps, X Values: "2,3", Y Type: CFG Scale, Y Values: "3,7"'
)


def test_infotext_fills_script_args_and_sent_args_win(client: httpx.Client) -> None:
    """A1111's ``infotext`` field: the script's controls named in its infotext_fields get the written values."""
    body = {"prompt": "a fox", "script_name": "x/y/z plot", "infotext": XYZ_INFOTEXT, **SMALL}
    answer = client.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    grid = parse_infotext(json.loads(answer.json()["info"])["infotexts"][0])
    assert (grid["X Type"], grid["X Values"], grid["Y Type"], grid["Y Values"]) == ("Steps", "2,3", "CFG Scale", "3,7")
    assert decode_png(answer.json()["images"][0]).size == (176, 137)
    sent = client.post("/sdapi/v1/txt2img", json={**body, "script_args": [4, "2"]})
    grid = parse_infotext(json.loads(sent.json()["info"])["infotexts"][0])
    assert (grid["X Values"], grid["Y Type"], grid["Y Values"]) == ("2", "CFG Scale", "3,7")
    wrong = XYZ_INFOTEXT.replace("X Type: Steps", "X Type: Nope")
    unknown = client.post("/sdapi/v1/txt2img", json={**body, "infotext": wrong})
    assert unknown.status_code == 422 and "unknown choice 'Nope'" in unknown.json()["detail"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"script_name": "nope"}, "Script 'nope' not found"),
        ({"alwayson_scripts": {"nope": {"args": []}}}, "Script 'nope' not found"),
        ({"alwayson_scripts": {"x/y/z plot": {"args": []}}}, "Cannot have a selectable script in the always on"),
        ({"script_name": "x/y/z plot", "script_args": [99]}, "index 99 is out of range"),
    ],
)
def test_script_names_are_checked_as_a1111_does(client: httpx.Client, body: dict, detail: str) -> None:
    response = client.post("/sdapi/v1/txt2img", json={**body, **SMALL})
    assert response.status_code == 422
    assert detail in response.json()["detail"]


def test_img2img_only_scripts_are_not_offered_to_txt2img(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/txt2img", json={"script_name": "loopback", **SMALL})
    assert response.status_code == 422 and response.json()["detail"] == "Script 'loopback' not found"


def test_scripts_and_script_info_shapes(client: httpx.Client) -> None:
    names = client.get("/sdapi/v1/scripts").json()
    assert names["img2img"] == [
        "loopback",
        "outpainting mk2",
        "poor man's outpainting",
        "prompt matrix",
        "prompts from file or textbox",
        "sd upscale",
        "x/y/z plot",
        "controlnet",
    ]
    info = client.get("/sdapi/v1/script-info").json()
    assert [entry["is_img2img"] for entry in info] == [False] * 4 + [True] * 8
    controlnet = next(entry for entry in info if entry["name"] == "controlnet" and not entry["is_img2img"])
    assert controlnet["is_alwayson"] is True and len(controlnet["args"]) == 3
    assert controlnet["args"][0]["value"]["module"] == "none" and controlnet["args"][0]["value"]["enabled"] is False
    xyz = next(entry for entry in info if entry["name"] == "x/y/z plot" and not entry["is_img2img"])
    assert xyz["is_alwayson"] is False and len(xyz["args"]) == 18
    first = xyz["args"][0]
    assert first["label"] == "X type" and first["value"] == "Seed" and first["choices"].index("Steps") == 4
    assert set(first) == {"label", "value", "minimum", "maximum", "step", "choices"}
    margin = xyz["args"][16]
    assert (margin["label"], margin["minimum"], margin["maximum"], margin["step"]) == ("Grid margins (px)", 0, 500, 2)


def test_extensions_lists_git_clones_in_a1111_shape(server: ApiServer, tmp_path) -> None:
    from modules.extensions.manage import install_from_url
    from modules.extensions.registry import list_extensions
    from tests.extension_support import make_git_extension

    paths = server.application.paths
    install_from_url(paths.extensions_dir, make_git_extension(tmp_path).as_uri())
    (paths.extensions_dir / "plain-folder").mkdir()
    server.application.extensions = list_extensions(paths)
    items = server.client().get("/sdapi/v1/extensions").json()
    assert [item["name"] for item in items] == ["git-ext"]
    item = items[0]
    assert set(item) == {"name", "remote", "branch", "commit_hash", "version", "commit_date", "enabled"}
    assert item["version"] == item["commit_hash"][:8] and isinstance(item["commit_date"], str) and item["enabled"]


def test_an_a1111_extension_works_through_the_api(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The test extension, unchanged: named in alwayson_scripts with A1111's positional args, its selectable script
    by script_name; both listed in /scripts and /script-info."""
    from modules.cmd_args import build_parser
    from modules.compat import loader
    from tests.extension_support import write_test_extension

    root = tmp_path_factory.mktemp("api-extension")
    write_tiny_checkpoints(root / "checkpoints", ("tiny",))
    copy_checkpoints(root / "checkpoints", root / "data")
    write_test_extension(root / "data" / "extensions")
    running = start_api_server(root / "data")
    try:
        argv = ["--data-dir", str(root / "data"), "--test-ext-word", "heron"]
        loader.attach(running.application, loader.parse_with_extensions(build_parser(), argv))
        client = running.client()
        assert "test twice" in client.get("/sdapi/v1/scripts").json()["txt2img"]
        info = client.get("/sdapi/v1/script-info").json()
        always_on = next(entry for entry in info if entry["name"] == "test always on" and not entry["is_img2img"])
        assert always_on["is_alwayson"] and [arg["label"] for arg in always_on["args"]] == ["Enabled", "Flip"]
        body = {"prompt": "a fox", "alwayson_scripts": {"Test Always On": {"args": [True, False]}}, **SMALL}
        answer = json.loads(client.post("/sdapi/v1/txt2img", json=body).json()["info"])
        assert answer["all_prompts"] == ["a fox, heron from settings"]
        assert parse_infotext(answer["infotexts"][0])["Test ext"] == "heron"
        plain = json.loads(client.post("/sdapi/v1/txt2img", json={"prompt": "a fox", **SMALL}).json()["info"])
        assert plain["all_prompts"] == ["a fox"]  # always on, but disabled by its default args
        twice = {"prompt": "a fox", "script_name": "test twice", "script_args": [2], **SMALL}
        answer = json.loads(client.post("/sdapi/v1/txt2img", json=twice).json()["info"])
        assert [parse_infotext(text)["Seed"] for text in answer["infotexts"]] == ["100", "101"]
        check_extension_settings(client, running.application.paths.config_file, body)
    finally:
        running.stop()


def check_extension_settings(client: httpx.Client, config_file: Path, body: dict) -> None:
    """Settings an extension adds: in GET /options, set by POST /options (saved in config.json), and by
    override_settings for one request only; a bad value is refused."""

    def prompts(**extra: object) -> list[str]:
        return json.loads(client.post("/sdapi/v1/txt2img", json={**body, **extra}).json()["info"])["all_prompts"]

    options = client.get("/sdapi/v1/options").json()
    assert options["test_ext_suffix"] == "from settings" and options["test_ext_zero_guidance"] is False
    assert client.post("/sdapi/v1/options", json={"test_ext_suffix": "via api"}).status_code == 200
    assert client.get("/sdapi/v1/options").json()["test_ext_suffix"] == "via api"
    assert json.loads(config_file.read_text(encoding="utf-8"))["test_ext_suffix"] == "via api"
    assert prompts() == ["a fox, heron via api"]
    assert prompts(override_settings={"test_ext_suffix": "for one"}) == ["a fox, heron for one"]
    assert prompts() == ["a fox, heron via api"]
    pasted = "a fox\nSteps: 2, Sampler: Euler, Seed: 1, Test enabled: True, Test suffix: from infotext"
    assert prompts(alwayson_scripts={}, infotext=pasted) == ["a fox, heron from infotext"]  # setting and script arg
    refused = client.post("/sdapi/v1/options", json={"test_ext_zero_guidance": "maybe"})
    assert refused.status_code == 422 and "test_ext_zero_guidance" in refused.json()["detail"]
    bad_override = client.post("/sdapi/v1/txt2img", json={**body, "override_settings": {"test_ext_zero_guidance": "x"}})
    assert bad_override.status_code in (400, 422)
