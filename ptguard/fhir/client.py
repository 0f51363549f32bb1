"""FHIR R4 REST client on requests: timeouts, bearer token, retries on GETs, paging, one error family."""

from __future__ import annotations

import email.utils
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import urljoin, urlsplit

import orjson
import requests
import urllib3

from ptguard.errors import FhirServerError, InputError, NotFoundError
from ptguard.fhir.refs import element

logger = logging.getLogger("ptguard.fhir")

Resource = dict[str, Any]
ParamValue = str | int | float | Sequence[str]
Params = Mapping[str, ParamValue] | Sequence[tuple[str, str]]

FHIR_JSON = "application/fhir+json"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
DEFAULT_MAX_RESPONSE_BYTES = 20 * 1024 * 1024
MIN_TOTAL_TIMEOUT = 30.0  # seconds; with the default read timeout (10 s) a request gets 30 s in all
_CHUNK = 64 * 1024
_TYPE_RE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_MAX_DIAGNOSTICS = 200


class FhirClient:
    """A small, strict FHIR R4 client.

    `timeout` is seconds for connect and for each read (a float, or a (connect, read) pair). A socket read timeout
    alone does not bound a server that trickles bytes, so each request also has a total deadline
    (`total_timeout` seconds, and never past `deadline`, a time.monotonic() value the caller may set) and a size
    cap (`max_response_bytes`): the body is streamed and the response closed as soon as either is exceeded.
    GETs are retried `retries` times with exponential backoff on connection errors and on
    429/502/503/504 (honouring Retry-After up to `max_retry_after` seconds); a read timeout and
    any non-GET are never retried. Errors are raised as FhirServerError (NotFoundError for 404)
    with a one-line message that names the method, resource type, status and the first
    OperationOutcome diagnostics — never the token or a response body.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float | tuple[float, float] = 10.0,
        retries: int = 2,
        session: requests.Session | None = None,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_retry_after: float = 30.0,
        max_pages: int = 100,
        sleep: Callable[[float], None] = time.sleep,
        total_timeout: float | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        deadline: float | None = None,
    ) -> None:
        base = base_url.strip()
        problem = http_url_problem(base)
        if problem is not None:
            raise InputError(f"FHIR base URL {base_url!r}: {problem}")
        parts = urlsplit(base)
        self.base_url = base.rstrip("/")
        self._origin = (parts.scheme, parts.netloc.lower())
        self._token = token or None
        self.timeout: tuple[float, float] = (timeout, timeout) if isinstance(timeout, int | float) else timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.max_pages = max_pages
        self._sleep = sleep
        # A server that trickles bytes never trips the read timeout: bound each request as a whole too.
        self.total_timeout = total_timeout if total_timeout is not None else max(MIN_TOTAL_TIMEOUT, 3 * self.timeout[1])
        self.max_response_bytes = max_response_bytes
        self.deadline = deadline
        self._own_session = session is None
        self.session = session if session is not None else requests.Session()

    def __repr__(self) -> str:
        return f"FhirClient({self.base_url!r}, token={'***' if self._token else None})"

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._own_session:
            self.session.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ interactions

    def capabilities(self) -> Resource:
        """GET [base]/metadata (the CapabilityStatement)."""
        return self._json("GET", "metadata", "CapabilityStatement")

    def read(self, resource_type: str, resource_id: str) -> Resource:
        """GET [base]/Type/id; NotFoundError when it is not there."""
        _check_type(resource_type)
        _check_id(resource_id)
        return self._json("GET", f"{resource_type}/{resource_id}", resource_type)

    def search_bundle(self, resource_type: str, params: Params | None = None) -> Resource:
        """The first searchset Bundle of GET [base]/Type?params."""
        _check_type(resource_type)
        bundle = self._json("GET", resource_type, resource_type, params=_param_list(params))
        _expect_bundle(bundle, "GET", resource_type)
        return bundle

    def search_pages(
        self, resource_type: str, params: Params | None = None, *, max_pages: int | None = None
    ) -> Iterator[Resource]:
        """Every searchset Bundle, following `next` links (same server only) up to `max_pages`."""
        limit = self.max_pages if max_pages is None else max_pages
        bundle = self.search_bundle(resource_type, params)
        pages = 1
        seen: set[str] = set()
        while True:
            yield bundle
            next_url = _link(bundle, "next")
            if not next_url:
                return
            next_url = urljoin(self.base_url + "/", next_url)
            if next_url in seen:
                raise FhirServerError(f"GET {resource_type}: the server's next link repeats a page")
            seen.add(next_url)
            self._check_same_origin(next_url, resource_type)
            if pages >= limit:
                raise FhirServerError(
                    f"GET {resource_type}: more than {limit} pages of results; narrow the search or raise max_pages"
                )
            bundle = self._json("GET", next_url, resource_type)
            _expect_bundle(bundle, "GET", resource_type)
            pages += 1

    def search(
        self, resource_type: str, params: Params | None = None, *, max_pages: int | None = None
    ) -> list[Resource]:
        """All matching resources of GET [base]/Type?params across pages (`_include`d ones left out)."""
        found: list[Resource] = []
        for bundle in self.search_pages(resource_type, params, max_pages=max_pages):
            for entry in bundle.get("entry") or []:
                if not isinstance(entry, dict):
                    continue
                resource = entry.get("resource")
                mode = element(entry, "search").get("mode", "match")
                if isinstance(resource, dict) and mode == "match":
                    found.append(resource)
        return found

    def create(self, resource: Resource, *, if_none_exist: str | None = None) -> Resource:
        """POST [base]/Type; returns the created (or, with If-None-Exist, the matching) resource."""
        resource_type = _resource_type_of(resource, "POST")
        headers = {"Prefer": "return=representation"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        response = self._request("POST", resource_type, resource_type, body=resource, headers=headers)
        return self._resource_or_location(response, "POST", resource_type)

    def update(self, resource: Resource) -> Resource:
        """PUT [base]/Type/id (the resource must carry its id); returns the stored resource."""
        resource_type = _resource_type_of(resource, "PUT")
        resource_id = resource.get("id")
        if not isinstance(resource_id, str):
            raise InputError(f"PUT {resource_type}: the resource has no id")
        _check_id(resource_id)
        response = self._request(
            "PUT",
            f"{resource_type}/{resource_id}",
            resource_type,
            body=resource,
            headers={"Prefer": "return=representation"},
        )
        return self._resource_or_location(response, "PUT", resource_type)

    def transaction(self, bundle: Resource) -> Resource:
        """POST a transaction (or batch) Bundle to [base]; returns the response Bundle."""
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") not in ("transaction", "batch"):
            raise InputError("POST Bundle: not a transaction or batch Bundle")
        response = self._request("POST", "", "Bundle", body=bundle)
        result = _decode(response, "POST", "Bundle")
        _expect_bundle(result, "POST", "Bundle")
        return result

    # ------------------------------------------------------------------ plumbing

    def _json(
        self, method: str, path: str, resource_type: str, *, params: list[tuple[str, str]] | None = None
    ) -> Resource:
        return _decode(self._request(method, path, resource_type, params=params), method, resource_type)

    def _resource_or_location(self, response: requests.Response, method: str, resource_type: str) -> Resource:
        if response.content.strip():
            return _decode(response, method, resource_type)
        location = response.headers.get("Location") or response.headers.get("Content-Location")
        if not location:
            raise FhirServerError(f"{method} {resource_type}: the server returned neither a body nor a Location")
        url = urljoin(self.base_url + "/", location)
        url = re.sub(r"/_history/[^/]+$", "", url)
        self._check_same_origin(url, resource_type)
        return self._json("GET", url, resource_type)

    def _check_same_origin(self, url: str, resource_type: str) -> None:
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc.lower()) != self._origin:
            raise FhirServerError(
                f"GET {resource_type}: the server pointed to another host ({parts.netloc}); not following it"
            )

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path}" if path else self.base_url

    def _headers(self, extra: Mapping[str, str] | None, has_body: bool) -> dict[str, str]:
        headers = {"Accept": FHIR_JSON}
        if has_body:
            headers["Content-Type"] = f"{FHIR_JSON}; charset=utf-8"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if extra:
            headers.update(extra)
        return headers

    def _request(
        self,
        method: str,
        path: str,
        resource_type: str,
        *,
        params: list[tuple[str, str]] | None = None,
        body: Resource | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        url = self._url(path)
        log_path = _log_label(path, resource_type)
        data = orjson.dumps(body) if body is not None else None
        attempts = 1 + (self.retries if method == "GET" else 0)
        deadline = time.monotonic() + self.total_timeout
        if self.deadline is not None:
            deadline = min(deadline, self.deadline)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            started = time.monotonic()
            remaining = deadline - started
            if remaining <= 0:
                raise FhirServerError(f"{method} {resource_type}: no answer within the time allowed")
            try:
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    headers=self._headers(headers, data is not None),
                    timeout=(min(self.timeout[0], remaining), min(self.timeout[1], remaining)),
                    allow_redirects=False,  # a redirect could point anywhere (SSRF); never followed
                    stream=True,  # the body is read below, within the deadline and the size cap
                )
            except requests.exceptions.ReadTimeout:
                _log(method, log_path, "timeout", started)
                raise FhirServerError(
                    f"{method} {resource_type}: no answer within {self.timeout[1]:g} s (read timeout)"
                ) from None
            except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                _log(method, log_path, "connection-error", started)
                if last:
                    timed_out = isinstance(exc, requests.exceptions.ConnectTimeout)
                    kind = "connect timeout" if timed_out else "cannot connect"
                    raise FhirServerError(
                        f"{method} {resource_type}: {kind} to {urlsplit(url).netloc}"
                        f" ({type(exc).__name__}; {attempt + 1} attempt(s))"
                    ) from None
                self._sleep(self._backoff(attempt))
                continue
            except requests.exceptions.RequestException as exc:
                _log(method, log_path, "error", started)
                raise FhirServerError(f"{method} {resource_type}: request failed ({type(exc).__name__})") from None

            if 300 <= response.status_code < 400 or (response.status_code in RETRY_STATUSES and not last):
                pass  # the body is not needed
            else:
                self._read_body(response, method, resource_type, deadline)
            _log(method, log_path, str(response.status_code), started)
            if 300 <= response.status_code < 400:
                status = response.status_code
                response.close()
                raise FhirServerError(f"{method} {resource_type}: HTTP {status} redirect not followed", status=status)
            if response.status_code < 400:
                return response
            if response.status_code in RETRY_STATUSES and not last:
                delay = self._retry_delay(response, attempt)
                response.close()
                self._sleep(delay)
                continue
            raise _error(response, method, resource_type, self._token)
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_body(self, response: requests.Response, method: str, resource_type: str, deadline: float) -> None:
        """Read the streamed body into `response` (so `.content` works), within `deadline` and the size cap."""
        limit = self.max_response_bytes
        declared = response.headers.get("Content-Length")
        if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
            response.close()
            raise FhirServerError(f"{method} {resource_type}: the answer is over the {limit} byte limit")
        raw = response.raw
        body = bytearray()
        try:
            while True:
                if time.monotonic() > deadline:
                    raise FhirServerError(
                        f"{method} {resource_type}: the answer did not arrive within the time allowed"
                    )
                chunk = raw.read1(_CHUNK, decode_content=True) if hasattr(raw, "read1") else raw.read(_CHUNK)
                if not chunk:
                    break
                body.extend(chunk)
                if len(body) > limit:
                    raise FhirServerError(f"{method} {resource_type}: the answer is over the {limit} byte limit")
        except FhirServerError:
            response.close()
            raise
        except (urllib3.exceptions.HTTPError, OSError, requests.exceptions.RequestException) as exc:
            response.close()
            raise FhirServerError(
                f"{method} {resource_type}: reading the answer failed ({type(exc).__name__})"
            ) from None
        response._content = bytes(body)
        release = getattr(raw, "release_conn", None)
        if callable(release):
            release()

    def _backoff(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.backoff * (2**attempt)))

    def _retry_delay(self, response: requests.Response, attempt: int) -> float:
        header = response.headers.get("Retry-After")
        if header:
            seconds = _parse_retry_after(header)
            if seconds is not None:
                return min(max(seconds, 0.0), self.max_retry_after)
        return self._backoff(attempt)


# ---------------------------------------------------------------------- helpers


def http_url_problem(url: object) -> str | None:
    """Why `url` is not an absolute http(s) URL this client can request (None when it is one).

    Unparsable URLs (a bracket left open, a port that is no number or out of range, an invalid host character,
    no host) are problems, never exceptions; whitespace and control characters anywhere are refused too, since
    parsers silently drop or escape them.
    """
    if not isinstance(url, str) or not url:
        return "not a URL"
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return "contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number or out of range
    except ValueError:
        return "cannot be parsed as a URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return "not an absolute http(s) URL"
    if not parts.hostname:
        return "has no host"
    try:
        requests.models.PreparedRequest().prepare_url(url, None)
    except requests.exceptions.RequestException:
        return "cannot be parsed as a URL"
    return None


def _log_label(path: str, resource_type: str) -> str:
    """What a log line names of a request: the interaction's shape (`Patient/{id}`, `Procedure`), never ids, search
    values, the host or the query string, which may be PHI."""
    if path.startswith(("http://", "https://")):
        return f"{resource_type} (link)"  # a next page or a Location: its URL may carry ids and search values
    segments = [s for s in path.split("?", 1)[0].split("/") if s]
    if not segments:
        return "[base]"
    head, rest = segments[0], segments[1:]
    shown = [s if s.startswith(("_", "$")) else "{id}" for s in rest]
    return "/".join([head if _TYPE_RE.fullmatch(head) or head == "metadata" else "{path}", *shown])


def _log(method: str, label: str, status: str, started: float) -> None:
    elapsed_ms = (time.monotonic() - started) * 1000
    level = logging.DEBUG if status.isascii() and status.isdigit() and int(status) < 400 else logging.WARNING
    logger.log(level, "%s %s %s %.0f ms", method, label, status, elapsed_ms)


def _parse_retry_after(value: str) -> float | None:
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()


def _param_list(params: Params | None) -> list[tuple[str, str]]:
    if params is None:
        return []
    if isinstance(params, Mapping):
        out: list[tuple[str, str]] = []
        for key, value in params.items():
            if isinstance(value, str | int | float):
                out.append((key, str(value)))
            else:
                out.extend((key, str(one)) for one in value)
        return out
    return [(str(key), str(value)) for key, value in params]


def _check_type(resource_type: str) -> None:
    if not _TYPE_RE.fullmatch(resource_type):
        raise InputError(f"not a FHIR resource type: {resource_type!r}")


def _check_id(resource_id: str) -> None:
    if not _ID_RE.fullmatch(resource_id) or not resource_id.strip("."):
        raise InputError(f"not a FHIR resource id: {resource_id!r}")


def _resource_type_of(resource: Resource, method: str) -> str:
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise InputError(f"{method}: the resource has no resourceType")
    _check_type(resource_type)
    return resource_type


def _link(bundle: Resource, relation: str) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == relation and isinstance(link.get("url"), str):
            return str(link["url"])
    return None


def _decode(response: requests.Response, method: str, resource_type: str) -> Resource:
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise FhirServerError(
            f"{method} {resource_type}: HTTP {response.status_code} answer is not JSON"
            f" ({response.headers.get('Content-Type', 'no content type')})",
            status=response.status_code,
        ) from None
    if not isinstance(data, dict):
        raise FhirServerError(f"{method} {resource_type}: answer is not a JSON object", status=response.status_code)
    return data


def _expect_bundle(data: Resource, method: str, resource_type: str) -> None:
    if data.get("resourceType") != "Bundle":
        raise FhirServerError(f"{method} {resource_type}: expected a Bundle, got {data.get('resourceType')!r}")


def _diagnostics(response: requests.Response) -> str:
    """The first issue's diagnostics (or details.text / code) of an OperationOutcome body, one line."""
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(data, dict) or data.get("resourceType") != "OperationOutcome":
        return ""
    for issue in data.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code")
        if isinstance(text, str) and text.strip():
            one_line = " ".join(text.split())
            if len(one_line) > _MAX_DIAGNOSTICS:
                one_line = one_line[: _MAX_DIAGNOSTICS - 1] + "…"
            return one_line
    return ""


def _error(
    response: requests.Response, method: str, resource_type: str, secret: str | None
) -> FhirServerError | NotFoundError:
    status = response.status_code
    reason = response.reason or ""
    message = f"{method} {resource_type}: HTTP {status} {reason}".rstrip()
    if status == 401:
        message += " (token missing, invalid or expired)"
    elif status == 403:
        message += " (token lacks the scope or access)"
    diagnostics = _diagnostics(response)
    if diagnostics:
        if secret:
            diagnostics = diagnostics.replace(secret, "***")
        message += f": {diagnostics}"
    response.close()
    if status == 404:
        return NotFoundError(message)
    return FhirServerError(message, status=status)
