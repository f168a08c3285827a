"""Which extensions exist, which are enabled, what git says about them, and their metadata.ini (A1111's rules)."""

from __future__ import annotations

import configparser
import graphlib
import json
import logging
import subprocess
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from modules.options import write_json_atomic
from modules.paths import DataPaths

logger = logging.getLogger(__name__)

GIT_TIMEOUT_SECONDS = 30


class DisableMode(StrEnum):
    """A1111's ``disable_all_extensions`` setting and flags: none, extra (user ones), all."""

    NONE = "none"
    EXTRA = "extra"
    ALL = "all"


@dataclass(frozen=True)
class GitInfo:
    remote: str = ""
    branch: str = ""
    commit_hash: str = ""
    commit_date: int = 0

    @property
    def version(self) -> str:
        return self.commit_hash[:8]


@dataclass
class Extension:
    name: str  # the folder name
    path: Path
    builtin: bool
    enabled: bool = True
    canonical_name: str = ""  # metadata.ini [Extension] Name, else the folder name in lower case
    requires: list[str] = field(default_factory=list)
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    git: GitInfo = field(default_factory=GitInfo)
    error: str | None = None  # why it failed to load (shown in the Extensions tab)
    scripts: list[str] = field(default_factory=list)  # titles of the scripts it registered

    @property
    def status(self) -> str:
        if self.error:
            return "failed"
        return "enabled" if self.enabled else "disabled"


def run_git(folder: Path, *arguments: str, timeout: float = GIT_TIMEOUT_SECONDS) -> str:
    """A git command in ``folder``; raises RuntimeError with git's message when it fails."""
    try:
        completed = subprocess.run(
            ["git", *arguments], cwd=folder, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RuntimeError(f"git {' '.join(arguments)} failed: {error}") from error
    if completed.returncode != 0:
        raise RuntimeError(f"git {' '.join(arguments)}: {completed.stderr.strip() or completed.stdout.strip()}")
    return completed.stdout.strip()


def read_git_info(folder: Path) -> GitInfo:
    """Remote URL, branch, HEAD and its committer time; empty when the folder is not a git clone."""
    if not (folder / ".git").exists():
        return GitInfo()
    try:
        head = run_git(folder, "log", "-1", "--format=%H %ct")
        commit_hash, _, date = head.partition(" ")
        branch = run_git(folder, "rev-parse", "--abbrev-ref", "HEAD")
        try:
            remote = run_git(folder, "remote", "get-url", run_git(folder, "remote").splitlines()[0])
        except (RuntimeError, IndexError):
            remote = ""
        return GitInfo(remote=remote, branch=branch, commit_hash=commit_hash, commit_date=int(date or 0))
    except RuntimeError as error:
        logger.warning("extension git info unreadable path=%s error=%s", folder, error)
        return GitInfo()


def read_metadata(extension: Extension) -> None:
    """metadata.ini: [Extension] Name, Requires; Before / After (comma-separated canonical names)."""
    extension.canonical_name = extension.name.lower()
    path = extension.path / "metadata.ini"
    if not path.exists():
        return
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as error:
        extension.error = f"metadata.ini unreadable: {error}"
        return
    section = parser["Extension"] if parser.has_section("Extension") else {}

    def names(key: str) -> list[str]:
        return [name.strip().lower() for name in str(section.get(key, "")).split(",") if name.strip()]

    extension.canonical_name = str(section.get("Name", extension.name)).strip().lower() or extension.name.lower()
    extension.requires, extension.before, extension.after = names("Requires"), names("Before"), names("After")


def read_config(config_file: Path) -> dict:
    """config.json as a dict (empty when missing or unreadable)."""
    try:
        data = json.loads(config_file.read_text(encoding="utf-8")) if config_file.exists() else {}
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def update_config(config_file: Path, changes: dict) -> None:
    """Write keys into config.json, keeping every other key."""
    data = read_config(config_file)
    data.update(changes)
    write_json_atomic(config_file, data)


def read_disabled(config_file: Path) -> tuple[list[str], DisableMode]:
    """config.json's ``disabled_extensions`` and ``disable_all_extensions`` (A1111's keys)."""
    data = read_config(config_file)
    disabled = [str(name) for name in data.get("disabled_extensions", []) if isinstance(name, str)]
    try:
        mode = DisableMode(data.get("disable_all_extensions", "none"))
    except ValueError:
        mode = DisableMode.NONE
    return disabled, mode


def write_disabled(config_file: Path, disabled: list[str], mode: DisableMode = DisableMode.NONE) -> None:
    """Save the disabled list into config.json, keeping every other key."""
    update_config(config_file, {"disabled_extensions": sorted(set(disabled)), "disable_all_extensions": mode.value})


def list_extensions(paths: DataPaths, mode: DisableMode = DisableMode.NONE, with_git: bool = True) -> list[Extension]:
    """Every extension folder (built-in ones first, each group sorted by name), enabled unless disabled by name or
    by the mode; ordered by metadata.ini Before / After; a missing requirement marks it failed."""
    disabled, saved_mode = read_disabled(paths.config_file)
    mode = max(mode, saved_mode, key=list(DisableMode).index)
    found = []
    for folder, builtin in ((paths.builtin_extensions_dir, True), (paths.extensions_dir, False)):
        if not folder.is_dir():
            continue
        for path in sorted(item for item in folder.iterdir() if item.is_dir() and not item.name.startswith(".")):
            off = path.name in disabled or mode is DisableMode.ALL or (mode is DisableMode.EXTRA and not builtin)
            extension = Extension(path.name, path, builtin, enabled=not off)
            read_metadata(extension)
            if with_git and not builtin:
                extension.git = read_git_info(path)
            found.append(extension)
    check_requirements(found)
    return ordered(found)


def check_requirements(extensions: list[Extension]) -> None:
    enabled = {extension.canonical_name for extension in extensions if extension.enabled}
    for extension in extensions:
        missing = [name for name in extension.requires if name not in enabled]
        if extension.enabled and missing and not extension.error:
            extension.error = f"requires {', '.join(missing)}, which is not installed or not enabled"


def ordered(extensions: list[Extension]) -> list[Extension]:
    """Load order: the listing order, refined by Before / After (a cycle keeps the listing order)."""
    by_name = {extension.canonical_name: extension for extension in extensions}
    graph: dict[str, set[str]] = {name: set() for name in by_name}
    for extension in extensions:
        graph[extension.canonical_name] |= {name for name in extension.after if name in by_name}
        for name in extension.before:
            if name in by_name:
                graph[name].add(extension.canonical_name)
    sorter = graphlib.TopologicalSorter(graph)
    try:
        sorter.prepare()
    except graphlib.CycleError as error:
        logger.warning("extension order has a cycle %s; using the folder order", error.args[1])
        return extensions
    position = {extension.canonical_name: index for index, extension in enumerate(extensions)}
    result = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        result += [by_name[name] for name in ready]
        sorter.done(*ready)
    return result


def page_assets(extensions: list[Extension]) -> tuple[list[Path], list[Path]]:
    """(javascript/*.js, style.css) of the loaded extensions, in load order (added to the UI's page)."""
    scripts: list[Path] = []
    styles: list[Path] = []
    for extension in extensions:
        if extension.enabled and not extension.error:
            scripts += sorted((extension.path / "javascript").glob("*.js"))
            if (extension.path / "style.css").exists():
                styles.append(extension.path / "style.css")
    return scripts, styles
