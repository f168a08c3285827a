"""Installing, updating and removing extensions with git, and running their install.py (A1111's rules: once, and
again when the file changes; its output logged; skipped with --skip-install)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from modules.extensions.registry import Extension, read_git_info, run_git
from modules.options import write_json_atomic

logger = logging.getLogger(__name__)

CLONE_TIMEOUT_SECONDS = 600
INSTALL_TIMEOUT_SECONDS = 1800
INSTALLED_FILE = "extensions-installed.json"  # under the data folder: install.py hashes already run


class ExtensionError(Exception):
    """An extension operation that cannot be done; the message is shown to the user."""


def folder_name_for(url: str) -> str:
    """The folder a URL clones into: its last path part without ``.git`` (A1111)."""
    path = urlparse(url).path if "://" in url else url
    name = Path(path.rstrip("/")).name.removesuffix(".git")
    if not name or not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name in (".", ".."):
        raise ExtensionError(f"cannot name a folder after {url!r}; give a folder name")
    return name


def install_from_url(extensions_dir: Path, url: str, name: str = "", branch: str = "") -> Path:
    """git clone URL (a local path or file:// works too) into ``extensions_dir/name``."""
    url = url.strip()
    if not url:
        raise ExtensionError("give the URL of the extension's git repository")
    name = name.strip() or folder_name_for(url)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name in (".", ".."):
        raise ExtensionError(f"bad folder name {name!r}")
    target = extensions_dir / name
    if target.exists():
        raise ExtensionError(f"extension folder already exists: {target}")
    extensions_dir.mkdir(parents=True, exist_ok=True)
    temporary = extensions_dir / f".tmp-{name}"
    shutil.rmtree(temporary, ignore_errors=True)
    arguments = ["clone", "--", url, str(temporary)] if not branch else ["clone", "-b", branch, "--", url, str(temporary)]
    try:
        run_git(extensions_dir, *arguments, timeout=CLONE_TIMEOUT_SECONDS)
    except RuntimeError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        raise ExtensionError(str(error)) from error
    temporary.rename(target)
    logger.info("extension installed name=%s url=%s", name, url)
    return target


@dataclass(frozen=True)
class UpdateStatus:
    name: str
    behind: bool | None  # None: not a git clone with a remote, or the check failed
    message: str


def check_for_updates(extension: Extension) -> UpdateStatus:
    """git fetch, then compare HEAD with its upstream."""
    if not extension.git.remote:
        return UpdateStatus(extension.name, None, "not a git clone with a remote")
    try:
        run_git(extension.path, "fetch", "--quiet", timeout=CLONE_TIMEOUT_SECONDS)
        behind = int(run_git(extension.path, "rev-list", "--count", "HEAD..@{u}") or 0)
    except (RuntimeError, ValueError) as error:
        return UpdateStatus(extension.name, None, f"check failed: {error}")
    return UpdateStatus(extension.name, behind > 0, "new commits" if behind else "latest")


def update(extension: Extension) -> str:
    """Fast-forward to the upstream; returns the new commit hash."""
    if not extension.git.remote:
        raise ExtensionError(f"{extension.name} is not a git clone with a remote")
    try:
        run_git(extension.path, "pull", "--ff-only", timeout=CLONE_TIMEOUT_SECONDS)
    except RuntimeError as error:
        raise ExtensionError(str(error)) from error
    info = read_git_info(extension.path)
    logger.info("extension updated name=%s commit=%s", extension.name, info.version)
    return info.commit_hash


def remove(extension: Extension) -> None:
    if extension.builtin:
        raise ExtensionError(f"{extension.name} is built in and cannot be removed")
    shutil.rmtree(extension.path)
    logger.info("extension removed name=%s", extension.name)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_install_scripts(extensions: list[Extension], data_dir: Path, python: str = sys.executable) -> None:
    """Run each enabled extension's install.py that has not run in its present form; output goes to the log, a
    failure marks the extension failed."""
    record_path = data_dir / INSTALLED_FILE
    try:
        record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.exists() else {}
    except (OSError, json.JSONDecodeError):
        record = {}
    changed = False
    for extension in extensions:
        script = extension.path / "install.py"
        if not extension.enabled or extension.error or not script.exists():
            continue
        digest = file_digest(script)
        if record.get(str(extension.path)) == digest:
            continue
        if run_install(extension, script, python):
            record[str(extension.path)] = digest
            changed = True
    if changed:
        write_json_atomic(record_path, record)


def run_install(extension: Extension, script: Path, python: str) -> bool:
    logger.info("extension install.py running name=%s", extension.name)
    try:
        completed = subprocess.run(
            [python, str(script)],
            cwd=extension.path,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        extension.error = f"install.py failed: {error}"
        logger.error("extension install.py failed name=%s error=%s", extension.name, error)
        return False
    for line in (completed.stdout + completed.stderr).splitlines():
        logger.info("extension install.py name=%s output=%s", extension.name, line)
    if completed.returncode != 0:
        extension.error = f"install.py exited with {completed.returncode}"
        logger.error("extension install.py failed name=%s code=%d", extension.name, completed.returncode)
        return False
    return True
