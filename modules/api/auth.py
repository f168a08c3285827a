"""HTTP Basic auth for the API (``--api-auth u:p[,u2:p2]``); constant-time comparison of both parts."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import HTTPException, Request

logger = logging.getLogger(__name__)

CHALLENGE = {"WWW-Authenticate": 'Basic realm="Easel API"'}


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the login name ("" without auth) and whether they may act on any job."""

    user: str = ""
    admin: bool = False


def parse_basic(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def credentials_match(given: tuple[str, str], logins: Sequence[tuple[str, str]]) -> bool:
    """Compare against every login (no early exit on the user name) with hmac.compare_digest."""
    matched = False
    for user, password in logins:
        user_ok = hmac.compare_digest(given[0].encode(), user.encode())
        password_ok = hmac.compare_digest(given[1].encode(), password.encode())
        matched |= user_ok and password_ok
    return matched


@dataclass(frozen=True)
class BasicAuth:
    """A FastAPI dependency: the Caller, or 401 with a Basic challenge. No logins means an open API."""

    logins: tuple[tuple[str, str], ...] = ()
    admin_user: str | None = None

    def __call__(self, request: Request) -> Caller:
        if not self.logins:
            return Caller(user="", admin=False)
        given = parse_basic(request.headers.get("authorization"))
        if given is None or not credentials_match(given, self.logins):
            logger.info(
                "api auth refused path=%s client=%s", request.url.path, request.client.host if request.client else "-"
            )
            raise HTTPException(status_code=401, detail="Incorrect username or password", headers=CHALLENGE)
        return Caller(user=given[0], admin=bool(self.admin_user) and given[0] == self.admin_user)
