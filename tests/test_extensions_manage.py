"""Extensions installed from a local git repository the test makes (a path and a file:// URL), listed with their
git state, disabled and enabled through config.json, updated, removed; installing refused with --listen; the
index of available extensions read from a file, and a clear failure offline."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from modules.cmd_args import build_parser
from modules.extensions import manage
from modules.extensions.registry import DisableMode, list_extensions, read_disabled, write_disabled
from modules.paths import DataPaths
from modules.ui.extensions_tab import index_table, installed_table, installing_allowed, load_index
from tests.extension_support import git, make_git_extension


@pytest.fixture
def paths(tmp_path: Path) -> DataPaths:
    paths = DataPaths.create(tmp_path / "data")
    paths.extensions_dir.mkdir(parents=True)
    return paths


def test_install_disable_update_remove(paths: DataPaths, tmp_path: Path) -> None:
    source = make_git_extension(tmp_path / "sources")
    target = manage.install_from_url(paths.extensions_dir, source.as_uri())
    assert target == paths.extensions_dir / "git-ext" and (target / "scripts" / "git_ext.py").exists()
    (extension,) = list_extensions(paths)
    assert extension.enabled and extension.git.remote == source.as_uri() and extension.git.branch == "master"
    assert extension.git.commit_hash == git(source, "rev-parse", "HEAD") and extension.git.commit_date > 0
    assert "git-ext" in installed_table([extension])
    with pytest.raises(manage.ExtensionError, match="already exists"):
        manage.install_from_url(paths.extensions_dir, source.as_uri())

    write_disabled(paths.config_file, ["git-ext"])
    assert read_disabled(paths.config_file) == (["git-ext"], DisableMode.NONE)
    assert list_extensions(paths)[0].status == "disabled"
    write_disabled(paths.config_file, [])
    assert list_extensions(paths)[0].enabled

    assert manage.check_for_updates(list_extensions(paths)[0]).behind is False
    (source / "README.md").write_text("news\n")
    git(source, "add", ".")
    git(source, "commit", "-q", "-m", "second")
    status = manage.check_for_updates(list_extensions(paths)[0])
    assert status.behind is True and status.message == "new commits"
    assert manage.update(list_extensions(paths)[0]) == git(source, "rev-parse", "HEAD")
    assert (target / "README.md").read_text() == "news\n"

    manage.remove(list_extensions(paths)[0])
    assert not target.exists() and list_extensions(paths) == []


def test_install_from_a_plain_path_with_a_folder_name(paths: DataPaths, tmp_path: Path) -> None:
    source = make_git_extension(tmp_path / "sources", "other")
    target = manage.install_from_url(paths.extensions_dir, str(source), name="renamed")
    assert target.name == "renamed" and list_extensions(paths)[0].git.remote == str(source)
    with pytest.raises(manage.ExtensionError, match="git clone"):
        manage.install_from_url(paths.extensions_dir, str(tmp_path / "nothing-here"))
    assert [path.name for path in paths.extensions_dir.iterdir()] == ["renamed"]


def test_disable_flags(paths: DataPaths) -> None:
    (paths.extensions_dir / "user-ext").mkdir()
    assert [e.enabled for e in list_extensions(paths) if e.name == "user-ext"] == [True]
    assert [e.enabled for e in list_extensions(paths, DisableMode.EXTRA) if e.name == "user-ext"] == [False]
    assert [e.enabled for e in list_extensions(paths, DisableMode.ALL)] == [False]


def test_installing_is_refused_when_listening(tmp_path: Path) -> None:
    class Probe:
        def __init__(self, flags: list[str]) -> None:
            self.args = build_parser().parse_args(["--data-dir", str(tmp_path), *flags])

    assert installing_allowed(Probe([]))
    assert not installing_allowed(Probe(["--listen"]))
    assert installing_allowed(Probe(["--listen", "--enable-insecure-extension-access"]))


def test_extension_index_from_a_file_and_offline(tmp_path: Path) -> None:
    index = tmp_path / "index.json"
    index.write_text('{"extensions": [{"name": "Wildcards", "url": "https://x/wildcards.git", "description": "d"}]}')
    entries = load_index(index.as_uri())
    assert entries[0]["name"] == "Wildcards"
    assert "installed" in index_table(entries, {"https://x/wildcards"})
    with pytest.raises(httpx.HTTPError):
        load_index("http://127.0.0.1:9/index.json")  # nothing listens there: what offline looks like
