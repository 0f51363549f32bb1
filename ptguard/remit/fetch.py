"""Fetch a remittance file from a clearinghouse URL, only under allow-listed bases (SSRF guard), with limits."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import requests

from ptguard.errors import FhirServerError, InputError

FETCH_BASES_SETTING = "PTGUARD_REMIT_FETCH_BASES"
FETCH_TOKEN_SETTING = "PTGUARD_REMIT_FETCH_TOKEN"  # noqa: S105 - the variable name, not a secret
CHUNK = 64 * 1024


class FetchError(FhirServerError):
    """The clearinghouse file could not be fetched (status, timeout, size); the message names no secret."""


def parse_bases(raw: str | None) -> list[str]:
    """Comma-separated absolute http(s) base URLs; each kept with a trailing slash."""
    out = []
    for part in (raw or "").split(","):
        base = part.strip()
        if not base:
            continue
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise InputError(f"{FETCH_BASES_SETTING}: {base!r} is not an absolute http(s) base URL")
        out.append(base if base.endswith("/") else base + "/")
    return out


def allowed(url: str, bases: Sequence[str]) -> bool:
    """True when `url` is under one of `bases`: same scheme, same host and port, path below the base path."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return False
    if "\\" in url or any(ch.isspace() for ch in url) or ".." in parts.path.split("/"):
        return False
    for base in bases:
        b = urlsplit(base)
        if (parts.scheme, parts.netloc.lower()) == (b.scheme, b.netloc.lower()) and (parts.path + "/").startswith(
            b.path if b.path.endswith("/") else b.path + "/"
        ):
            return True
    return False


def fetch(
    url: str,
    *,
    bases: Sequence[str],
    max_bytes: int,
    timeout: tuple[float, float] = (5.0, 30.0),
    token: str | None = None,
    session: requests.Session | None = None,
) -> bytes:
    """GET the file (no redirects followed) and return its bytes; refuses URLs outside `bases` and oversized files."""
    if not allowed(url, bases):
        raise InputError("file_url is not under an allow-listed clearinghouse base (PTGUARD_REMIT_FETCH_BASES)")
    headers = {"Accept": "application/edi-x12, text/plain, application/octet-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    http = session or requests.Session()
    host = urlsplit(url).netloc
    try:
        with http.get(url, headers=headers, timeout=timeout, stream=True, allow_redirects=False) as response:
            if response.status_code != 200:
                raise FetchError(f"GET file from {host}: HTTP {response.status_code}", status=response.status_code)
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(f"GET file from {host}: {declared} bytes is over the {max_bytes} byte limit")
            body = bytearray()
            for chunk in response.iter_content(CHUNK):
                body.extend(chunk)
                if len(body) > max_bytes:
                    raise FetchError(f"GET file from {host}: over the {max_bytes} byte limit")
            return bytes(body)
    except requests.exceptions.Timeout:
        raise FetchError(f"GET file from {host}: timed out") from None
    except requests.exceptions.RequestException as exc:
        raise FetchError(f"GET file from {host}: {type(exc).__name__}") from None
    finally:
        if session is None:
            http.close()
