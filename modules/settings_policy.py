"""Who may change the global settings, and which values they may take (issue 20: a LAN-shared server).

The API (``POST /sdapi/v1/options``) and the Settings tab both ask this policy before ``update_options``:

- with ``--admin-user``, only that login changes settings (others use ``override_settings`` per request);
- folder settings (``outdir_*``) are paths under the data dir: absolute paths and ``..`` are refused unless
  ``--allow-outside-data-dir``; with ``--hide-ui-dir-config`` (implied by ``--listen``, ``--server-name`` and
  ``--share`` unless ``--enable-insecure-dir-access``) they cannot be changed at all;
- enumerated settings must name something that exists (image format, sampler, schedule type, face restorer, VAE),
  so a bad value is refused before it is saved, never after a job has spent its compute.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from modules.options import IMAGE_FORMAT_NAMES
from modules.postprocess.downloads import KNOWN_FACE_RESTORERS
from modules.samplers import SCHEDULE_TYPES, SamplerError, find_sampler

FOLDER_SETTING_PREFIX = "outdir_"
VAE_SPECIAL_CHOICES = ("Automatic", "None")


class SettingsRefusedError(ValueError):
    """A settings change that is refused; ``status_code`` is 403 for who, 400 for what."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


class PathOutsideDataDirError(ValueError):
    """A folder given by a user that is absolute or leaves the data dir (``..``)."""


def serves_beyond_this_machine(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "listen", False) or getattr(args, "server_name", None) or getattr(args, "share", False))


def directories_hidden(args: argparse.Namespace) -> bool:
    """A1111's ``--hide-ui-dir-config``; serving on the network implies it unless the operator opens it again."""
    if getattr(args, "hide_ui_dir_config", False):
        return True
    return serves_beyond_this_machine(args) and not getattr(args, "enable_insecure_dir_access", False)


def resolve_user_folder(data_dir: Path, text: str, allow_outside: bool = False) -> Path:
    """A folder a user typed, as a path: relative to the data dir and inside it, unless ``allow_outside``."""
    path = Path(text.strip())
    if allow_outside:
        return path if path.is_absolute() else data_dir / path
    if path.is_absolute() or PurePath(text).anchor:
        raise PathOutsideDataDirError(f"{text!r} is an absolute path; give a folder relative to the data dir")
    if ".." in path.parts:
        raise PathOutsideDataDirError(f"{text!r} leaves the data dir ('..'); give a folder inside it")
    resolved = (data_dir / path).resolve()
    if not resolved.is_relative_to(data_dir.resolve()):
        raise PathOutsideDataDirError(f"{text!r} leads outside the data dir (through a link)")
    return data_dir / path


@dataclass(frozen=True)
class SettingsPolicy:
    """Built from the flags once; ``vae_names`` lists the VAE files known now (it follows refreshes)."""

    data_dir: Path
    admin_user: str | None = None
    folders_locked: bool = False
    allow_outside_data_dir: bool = False
    vae_names: Callable[[], Iterable[str]] = tuple

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, data_dir: Path, vae_names: Callable[[], Iterable[str]] = tuple
    ) -> SettingsPolicy:
        return cls(
            data_dir=data_dir,
            admin_user=getattr(args, "admin_user", None),
            folders_locked=directories_hidden(args),
            allow_outside_data_dir=bool(getattr(args, "allow_outside_data_dir", False)),
            vae_names=vae_names,
        )

    def may_change(self, user: str | None) -> bool:
        return not self.admin_user or user == self.admin_user

    def check(self, changes: Mapping[str, Any], user: str | None) -> None:
        """Raise SettingsRefusedError when ``user`` may not make ``changes`` or a value is not allowed."""
        if not self.may_change(user):
            raise SettingsRefusedError(
                "only the admin login (--admin-user) may change settings; "
                "send override_settings with a request to change them for that request only",
                status_code=403,
            )
        problems = [problem for key, value in changes.items() if (problem := self.problem(key, value))]
        if problems:
            raise SettingsRefusedError("settings not changed:\n" + "\n".join(problems))

    def problem(self, key: str, value: Any) -> str | None:
        if key.startswith(FOLDER_SETTING_PREFIX):
            return self.folder_problem(key, value)
        allowed = self.choices(key)
        if allowed is not None and str(value) not in allowed:
            return f"{key}: {value!r} is not one of {', '.join(allowed)}"
        if key == "default_sampler":
            try:
                find_sampler(str(value))
            except SamplerError as error:
                return f"{key}: {error}"
        return None

    def folder_problem(self, key: str, value: Any) -> str | None:
        if self.folders_locked:
            return (
                f"{key}: folder settings cannot be changed on this server (--hide-ui-dir-config, implied by "
                "--listen; the operator may start it with --enable-insecure-dir-access)"
            )
        if not str(value).strip():
            return None
        try:
            resolve_user_folder(self.data_dir, str(value), self.allow_outside_data_dir)
        except PathOutsideDataDirError as error:
            return f"{key}: {error} (or start the server with --allow-outside-data-dir)"
        return None

    def user_folder(self, text: str) -> Path:
        """A server folder typed into the UI (Extras > Batch from Directory), when this server allows them."""
        if self.folders_locked:
            raise SettingsRefusedError(
                "server folders are off on this server (--hide-ui-dir-config, implied by --listen; the operator "
                "may start it with --enable-insecure-dir-access); use Batch Process to upload the images",
                status_code=403,
            )
        try:
            return resolve_user_folder(self.data_dir, text, self.allow_outside_data_dir)
        except PathOutsideDataDirError as error:
            raise SettingsRefusedError(f"{error} (or start the server with --allow-outside-data-dir)") from error

    def choices(self, key: str) -> tuple[str, ...] | None:
        """The allowed values of an enumerated setting (None: not enumerated here)."""
        if key in ("samples_format", "grid_format"):
            return IMAGE_FORMAT_NAMES
        if key == "default_scheduler":
            return SCHEDULE_TYPES
        if key == "face_restoration_model":
            return tuple(model.name for model in KNOWN_FACE_RESTORERS)
        if key == "sd_vae":
            return (*VAE_SPECIAL_CHOICES, *self.vae_names())
        return None


def settings_policy(application: Any) -> SettingsPolicy:
    """The policy of a running application (its flags, data dir and VAE files)."""

    def vae_names() -> list[str]:
        networks = application.networks
        return [entry.file_name for entry in networks.registry.entries("vae")] if networks is not None else []

    return SettingsPolicy.from_args(application.args, application.paths.data_dir, vae_names)
