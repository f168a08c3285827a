"""A thin client over huggingface_hub: search, repository files, and one-file downloads with clear errors.

Everything network-bound goes through ``huggingface_hub`` (``HfApi.list_models``, ``HfApi.model_info``,
``hf_hub_download``); this module only picks the fields Easel shows and turns the library's HTTP errors
into sentences (a gated repository says where to accept its license instead of "401 Client Error").
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from itertools import islice
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx2
from huggingface_hub import HfApi, constants, get_token, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from modules.hub.errors import DiskFullError, GatedModelError, HubError, HubOfflineError, RepositoryMissingError

logger = logging.getLogger(__name__)

PAGE_SIZE = 20
NETWORK_ERRORS = (httpx2.ConnectError, httpx2.TimeoutException, httpx2.RemoteProtocolError, httpx2.NetworkError)


class SearchKind(StrEnum):
    """What the Models tab searches for; each maps onto hub tags (see SEARCH_FILTERS)."""

    DIFFUSERS = "Diffusers pipelines"
    LORA = "LoRA"
    TEXTUAL_INVERSION = "Textual inversion"
    VAE = "VAE"
    UPSCALER = "Upscaler"
    ANY = "Any model"


class SortKey(StrEnum):
    DOWNLOADS = "downloads"
    LIKES = "likes"
    LAST_MODIFIED = "last_modified"


@dataclass(frozen=True)
class SearchFilter:
    """Arguments of ``HfApi.list_models`` for one kind; ``default_search`` is used when the query is empty."""

    tags: tuple[str, ...] = ()
    pipeline_tag: str | None = None
    default_search: str | None = None


SEARCH_FILTERS: MappingProxyType[SearchKind, SearchFilter] = MappingProxyType(
    {
        SearchKind.DIFFUSERS: SearchFilter(tags=("diffusers",), pipeline_tag="text-to-image"),
        SearchKind.LORA: SearchFilter(tags=("lora",)),
        SearchKind.TEXTUAL_INVERSION: SearchFilter(tags=("textual_inversion",)),
        # The hub has no VAE or upscaler tag; a name search is the closest filter.
        SearchKind.VAE: SearchFilter(tags=("diffusers",), default_search="vae"),
        SearchKind.UPSCALER: SearchFilter(default_search="esrgan"),
        SearchKind.ANY: SearchFilter(),
    }
)
SEARCH_FIELDS: tuple[str, ...] = ("pipeline_tag", "downloads", "likes", "lastModified", "gated", "tags", "private")


@dataclass(frozen=True)
class ModelSummary:
    """One row of the search table."""

    id: str
    kind: str
    downloads: int
    likes: int
    last_modified: datetime | None
    gated: bool


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int


@dataclass(frozen=True)
class RepoListing:
    """A repository's files at one commit."""

    repo_id: str
    commit: str
    files: tuple[RepoFile, ...]
    gated: bool

    @property
    def total_bytes(self) -> int:
        return sum(item.size for item in self.files)

    @property
    def is_diffusers_pipeline(self) -> bool:
        return any(item.path == "model_index.json" for item in self.files)


def model_page(endpoint: str, repo_id: str) -> str:
    return f"{endpoint.rstrip('/')}/{repo_id}"


def summary_from_info(info: Any, kind: SearchKind) -> ModelSummary:
    label = info.pipeline_tag or ("" if kind is SearchKind.ANY else kind.value)
    return ModelSummary(
        id=info.id,
        kind=label or "-",
        downloads=int(info.downloads or 0),
        likes=int(info.likes or 0),
        last_modified=info.last_modified,
        gated=bool(info.gated),
    )


class HubClient:
    """Talks to one hub endpoint; the token is read on every call (a new token applies at once)."""

    def __init__(self, endpoint: str | None = None, token_provider: Callable[[], str | None] = lambda: None) -> None:
        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        self.token_provider = token_provider
        self.api = HfApi(endpoint=self.endpoint)

    def token(self) -> str | None:
        """The Settings token, else HF_TOKEN or a saved ``hf auth login`` (the library's lookup)."""
        return self.token_provider() or get_token()

    def search(
        self, query: str = "", kind: SearchKind = SearchKind.DIFFUSERS, sort: SortKey = SortKey.DOWNLOADS, page: int = 0
    ) -> list[ModelSummary]:
        """One page (PAGE_SIZE rows) of models, best first by ``sort``."""
        search_filter = SEARCH_FILTERS[kind]
        start = max(page, 0) * PAGE_SIZE
        with translated_errors(self.endpoint, "", has_token=self.token() is not None):
            models = self.api.list_models(
                search=query.strip() or search_filter.default_search,
                filter=list(search_filter.tags) or None,
                pipeline_tag=search_filter.pipeline_tag,
                sort=sort.value,
                limit=start + PAGE_SIZE,
                expand=list(SEARCH_FIELDS),
                token=self.token() or False,
            )
            rows = [summary_from_info(info, kind) for info in islice(models, start, start + PAGE_SIZE)]
        logger.info(
            "hub search query=%r kind=%s sort=%s page=%d rows=%d", query, kind.name, sort.value, page, len(rows)
        )
        return rows

    def list_files(self, repo_id: str, revision: str | None = None) -> RepoListing:
        """Every file of the repository with its size, at the commit the revision points to."""
        with translated_errors(self.endpoint, repo_id, has_token=self.token() is not None):
            info = self.api.model_info(repo_id, revision=revision, files_metadata=True, token=self.token() or False)
        files = tuple(RepoFile(path=item.rfilename, size=int(item.size or 0)) for item in info.siblings or ())
        return RepoListing(repo_id=repo_id, commit=str(info.sha), files=files, gated=bool(info.gated))

    def download(
        self,
        repo_id: str,
        filename: str,
        revision: str,
        cache_dir: Path | None = None,
        local_dir: Path | None = None,
        progress_class: type | None = None,
    ) -> Path:
        """One file into the hub cache (``cache_dir``) or a plain folder (``local_dir``); returns its path."""
        with translated_errors(self.endpoint, repo_id, has_token=self.token() is not None):
            path = hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache_dir,
                local_dir=local_dir,
                endpoint=self.endpoint,
                token=self.token() or False,
                tqdm_class=progress_class,
            )
        return Path(str(path))


@contextmanager
def translated_errors(endpoint: str, repo_id: str, has_token: bool) -> Iterator[None]:
    """Turn huggingface_hub / network / disk errors into HubError subclasses with a readable message."""
    try:
        yield
    except GatedRepoError as error:
        raise gated_error(endpoint, repo_id, has_token) from error
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as error:
        status = error.response.status_code if getattr(error, "response", None) is not None else None
        if status in (401, 403) and not isinstance(error, EntryNotFoundError):
            raise gated_error(endpoint, repo_id, has_token, private_possible=True) from error
        raise RepositoryMissingError(f"{repo_id or 'the request'} was not found on {endpoint}") from error
    except OfflineModeIsEnabled as error:
        raise HubOfflineError(
            "offline mode is on (HF_HUB_OFFLINE=1): the hub is not contacted; unset it to search or download"
        ) from error
    except NETWORK_ERRORS as error:
        raise HubOfflineError(f"cannot reach {endpoint}: {type(error).__name__}: {error}") from error
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise gated_error(endpoint, repo_id, has_token) from error
        raise HubError(f"the hub answered HTTP {status} for {repo_id or 'the request'}") from error
    except OSError as error:
        if error.errno == errno.ENOSPC or "Not enough free disk space" in str(error):
            raise DiskFullError(f"disk full while downloading {repo_id}: {error}") from error
        raise


def gated_error(endpoint: str, repo_id: str, has_token: bool, private_possible: bool = False) -> GatedModelError:
    page = model_page(endpoint, repo_id)
    kind = "gated or private" if private_possible else "gated"
    if has_token:
        return GatedModelError(
            f"this model is {kind} and your token has no access: accept its license at {page} "
            "with the account of your token (or check the token's permissions)"
        )
    return GatedModelError(
        f"this model is {kind}: accept its license at {page} and set a token "
        "(Settings > Hugging Face token, or the HF_TOKEN environment variable)"
    )
