"""Fetch a remittance file from a clearinghouse URL, only under allow-listed bases (SSRF guard), with limits."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from urllib.parse import quote, unquote, urlsplit

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


def normalise(url: str, bases: Sequence[str]) -> str | None:
    """The URL to fetch when `url` is under one of `bases`, else None.

    The path is percent-decoded and normalised (`.`/`..` resolved) before it is compared with the base paths, so
    `%2e%2e` or `%2E%2E` cannot climb out of a base; `;` path parameters (`..;/`), encoded slashes or backslashes
    (`%2f`, `%5c`), backslashes, whitespace, control characters, user-info and a `%` left after decoding (double
    encoding) are refused outright. The returned URL is rebuilt from the normalised path (what is checked is what
    is fetched).
    """
    if not isinstance(url, str) or "\\" in url or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password or parts.fragment:
        return None
    raw_path = parts.path or "/"
    lowered = raw_path.lower()
    if ";" in raw_path or "%2f" in lowered or "%5c" in lowered or "%3b" in lowered:
        return None
    path = unquote(raw_path, errors="strict")
    if "%" in path or "\\" in path or ";" in path or not path.startswith("/") or path.startswith("//"):
        return None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        return None
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        return None
    if path.endswith("/") and normal != "/":
        normal += "/"
    for base in bases:
        b = urlsplit(base)
        base_path = b.path if b.path.endswith("/") else b.path + "/"
        if (scheme, parts.netloc.lower()) == (b.scheme.lower(), b.netloc.lower()) and (normal + "/").startswith(
            base_path
        ):
            query = f"?{parts.query}" if parts.query else ""
            return f"{scheme}://{parts.netloc}{quote(normal, safe='/')}{query}"
    return None


def allowed(url: str, bases: Sequence[str]) -> bool:
    """True when `url` is under one of `bases`: same scheme, same host and port, normalised path below the base."""
    try:
        return normalise(url, bases) is not None
    except (ValueError, UnicodeError):
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
    try:
        target = normalise(url, bases)
    except (ValueError, UnicodeError):
        target = None
    if target is None:
        raise InputError("file_url is not under an allow-listed clearinghouse base (PTGUARD_REMIT_FETCH_BASES)")
    url = target
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
            if declared and declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
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
