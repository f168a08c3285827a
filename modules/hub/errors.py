"""Errors of the hub downloader; each message is a sentence a user can act on (never a raw 401/404)."""

from __future__ import annotations


class HubError(Exception):
    """Base of every hub error; ``str(error)`` is shown in the UI and the log."""


class GatedModelError(HubError):
    """A gated or private repository that this token (or no token) may not read."""


class RepositoryMissingError(HubError):
    """No such repository or file on the hub."""


class HubOfflineError(HubError):
    """Offline mode is on, or the hub cannot be reached."""


class DiskFullError(HubError):
    """Not enough free space for a download."""


class DownloadCancelledError(HubError):
    """The user cancelled a download."""
