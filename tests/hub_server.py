"""A local stand-in for the subset of the Hugging Face hub API Easel uses (tests only, 127.0.0.1).

Serves from files the test registers: ``GET /api/models`` (search, tag filter, pipeline_tag, sort, limit),
``GET /api/models/{repo}`` (siblings with sizes), ``HEAD``/``GET /{repo}/resolve/{rev}/{file}`` with the
headers huggingface_hub reads (X-Repo-Commit, ETag, Content-Length), Range requests (206), gated
repositories (401/403 with X-Error-Code: GatedRepo), a connection cut after N bytes, once per file, and a stall
(part of a file, then a wait for the test).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import httpx2
from huggingface_hub import set_client_factory
from huggingface_hub.utils._http import default_client_factory

RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)$")
INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+?)(/revision/(?P<revision>[^/]+))?$")
SORT_FIELDS = {"downloads": "downloads", "likes": "likes", "lastModified": "lastModified"}


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    pipeline_tag: str | None = None
    tags: tuple[str, ...] = ()
    downloads: int = 0
    likes: int = 0
    last_modified: str = "2024-01-01T00:00:00.000Z"
    gated: bool = False
    sha: str = ""

    def __post_init__(self) -> None:
        self.sha = self.sha or hashlib.sha1(self.repo_id.encode()).hexdigest()

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.repo_id,
            "pipeline_tag": self.pipeline_tag,
            "tags": list(self.tags),
            "downloads": self.downloads,
            "likes": self.likes,
            "lastModified": self.last_modified,
            "gated": "manual" if self.gated else False,
            "private": False,
        }


@dataclass
class FakeHub:
    """State shared with the handler: repos, accepted tokens, one-shot cuts, and every request seen."""

    repos: dict[str, FakeRepo] = field(default_factory=dict)
    valid_tokens: set[str] = field(default_factory=set)
    cut_after: dict[str, int] = field(default_factory=dict)
    stall_after: dict[str, tuple[int, threading.Event]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def add(self, repo: FakeRepo) -> FakeRepo:
        self.repos[repo.repo_id] = repo
        return repo

    def search(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        rows = list(self.repos.values())
        if search := query.get("search", [""])[0].lower():
            rows = [repo for repo in rows if search in repo.repo_id.lower()]
        for tag in query.get("filter", []):
            rows = [repo for repo in rows if tag in repo.tags]
        if pipeline := query.get("pipeline_tag", [""])[0]:
            rows = [repo for repo in rows if repo.pipeline_tag == pipeline]
        if sort := SORT_FIELDS.get(query.get("sort", [""])[0]):
            rows.sort(key=lambda repo: repo.summary()[sort], reverse=True)
        limit = int(query.get("limit", ["1000"])[0])
        return [repo.summary() for repo in rows[:limit]]


class Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        self.handle_request(send_body=True)

    def do_HEAD(self) -> None:
        self.handle_request(send_body=False)

    def handle_request(self, send_body: bool) -> None:
        parsed = urlparse(self.path)
        path = unquote(parsed.path)
        self.hub.requests.append((self.command, self.path, {key.lower(): value for key, value in self.headers.items()}))
        if path == "/api/models":
            return self.send_json(self.hub.search(parse_qs(parsed.query)))
        if match := INFO.match(path):
            return self.send_info(match.group("repo"))
        if match := RESOLVE.match(path):
            return self.send_file(match.group("repo"), match.group("file"), send_body)
        self.send_error_code(404, "RepoNotFound", "not found")

    def send_json(self, data: Any) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_error_code(self, status: int, code: str, message: str, send_body: bool = True) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def send_info(self, repo_id: str) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self.send_error_code(401, "RepoNotFound", "Repository not found")
        siblings = [{"rfilename": name, "size": len(data)} for name, data in sorted(repo.files.items())]
        self.send_json({**repo.summary(), "sha": repo.sha, "siblings": siblings})

    def authorized(self, repo: FakeRepo, send_body: bool) -> bool:
        if not repo.gated:
            return True
        token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if token in self.hub.valid_tokens:
            return True
        status = 403 if token else 401
        self.send_error_code(status, "GatedRepo", f"Access to model {repo.repo_id} is restricted.", send_body)
        return False

    def send_file(self, repo_id: str, filename: str, send_body: bool) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self.send_error_code(401, "RepoNotFound", "Repository not found", send_body)
        if not self.authorized(repo, send_body):
            return None
        if filename not in repo.files:
            return self.send_error_code(404, "EntryNotFound", "Entry not found", send_body)
        data = repo.files[filename]
        start = 0
        if match := re.match(r"bytes=(\d+)-", self.headers.get("Range", "")):
            start = int(match.group(1))
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", repo.sha)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if not send_body:
            return None
        cut = self.hub.cut_after.pop(f"{repo_id}/{filename}", None)
        if cut is not None:
            self.wfile.write(data[start : start + cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # the peer sees a body shorter than Content-Length
            return None
        stall = self.hub.stall_after.pop(f"{repo_id}/{filename}", None)
        if stall is not None:  # send part, wait until the test says go on, send the rest
            self.wfile.write(data[start : start + stall[0]])
            self.wfile.flush()
            stall[1].wait(timeout=30)
            start += stall[0]
        self.wfile.write(data[start:])


def loopback_only(request: httpx2.Request) -> None:
    """Tests never touch the network: any request not to 127.0.0.1 fails."""
    if request.url.host != "127.0.0.1":
        raise RuntimeError(f"test tried to reach {request.url}")


@contextmanager
def serve_hub() -> Iterator[FakeHub]:
    """Run the fake hub on a free port; huggingface_hub's client may talk only to it while this runs.

    The conftest keeps HF_HUB_OFFLINE=1 (which blocks every request in the library's default client); the
    library's public ``set_client_factory`` swaps in a client that allows 127.0.0.1 and nothing else."""
    hub = FakeHub()
    handler = type("BoundHandler", (Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    set_client_factory(
        lambda: httpx2.Client(event_hooks={"request": [loopback_only]}, follow_redirects=True, timeout=30)
    )
    try:
        yield hub
    finally:
        set_client_factory(default_client_factory)
        server.shutdown()
        server.server_close()


def tiny_pipeline_files(folder: Path) -> dict[str, bytes]:
    """Every file of a saved diffusers folder, keyed by its repository path."""
    return {item.relative_to(folder).as_posix(): item.read_bytes() for item in folder.rglob("*") if item.is_file()}
