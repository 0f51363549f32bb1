"""FhirClient limits: redirects are never followed; slow or huge answers are cut off by a deadline and a size cap."""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Iterator

import pytest
import responses

from ptguard.errors import FhirServerError
from ptguard.fhir.client import FhirClient
from ptguard.fhir.fetch import encounter_queries, fetch

BASE = "https://fhir.example.test/R4"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@responses.activate
def test_redirects_are_not_followed(status: int) -> None:
    responses.get(f"{BASE}/Patient/p1", status=status, headers={"Location": "http://169.254.169.254/latest"})
    responses.get("http://169.254.169.254/latest", json={"resourceType": "Patient", "id": "p1"})
    with FhirClient(BASE, retries=0) as client, pytest.raises(FhirServerError, match="redirect not followed"):
        client.read("Patient", "p1")
    assert [c.request.url for c in responses.calls] == [f"{BASE}/Patient/p1"]


# ---------------------------------------------------------------------------------------------- slow and huge servers


class _Handler(socketserver.BaseRequestHandler):
    """Answers every request with headers at once, then a body as the server's `mode` says."""

    server: _Server

    def handle(self) -> None:
        sock = self.request
        sock.settimeout(5)
        try:
            sock.recv(65536)
            mode = self.server.mode
            if mode == "trickle":  # one byte of a chunked body every 100 ms, for up to a minute
                sock.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                for _ in range(600):
                    if self.server.stopping.is_set():
                        return
                    sock.sendall(b"1\r\n \r\n")
                    time.sleep(0.1)
            elif mode == "declared-huge":
                sock.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: 999999999\r\n\r\n{"
                )
            elif mode == "huge":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nConnection: close\r\n\r\n")
                for _ in range(64):
                    sock.sendall(b" " * 65536)
        except OSError:
            return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    mode = "trickle"

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stopping = threading.Event()


@pytest.fixture
def slow_server() -> Iterator[_Server]:
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def _base(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/fhir"


def test_trickling_server_is_cut_off_by_the_total_deadline(slow_server: _Server) -> None:
    started = time.monotonic()
    client = FhirClient(_base(slow_server), timeout=5.0, retries=0, total_timeout=0.8)
    with client, pytest.raises(FhirServerError, match="time allowed"):
        client.read("Patient", "p1")
    assert time.monotonic() - started < 2.0


def test_fetch_returns_within_budget_and_leaves_no_fetch_threads(slow_server: _Server) -> None:
    started = time.monotonic()
    with FhirClient(_base(slow_server), timeout=(2.0, 2.0), retries=0) as client:
        result = fetch(client, encounter_queries("p1", "e1"), budget_seconds=0.5, workers=8)
    assert time.monotonic() - started < 1.5
    assert not result.complete
    waited = time.monotonic()
    while any(t.name.startswith("ptguard-fetch") for t in threading.enumerate()) and time.monotonic() - waited < 3:
        time.sleep(0.05)
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("ptguard-fetch")]
    assert not leftover, f"fetch threads still reading {time.monotonic() - waited:.1f} s after the call: {leftover}"
    assert time.monotonic() - waited < 1.0


@pytest.mark.parametrize("mode", ["declared-huge", "huge"])
def test_answers_over_the_size_cap_are_refused(slow_server: _Server, mode: str) -> None:
    slow_server.mode = mode
    client = FhirClient(_base(slow_server), retries=0, max_response_bytes=1024 * 1024)
    with client, pytest.raises(FhirServerError, match="byte limit"):
        client.read("Patient", "p1")


def test_every_request_is_bounded_as_a_whole_by_default() -> None:
    # A trickling server never trips the read timeout; the total deadline is what stops it.
    assert FhirClient("http://127.0.0.1:9/fhir").total_timeout == 30.0
    assert FhirClient("http://127.0.0.1:9/fhir", timeout=20).total_timeout == 60.0
    assert FhirClient("http://127.0.0.1:9/fhir", total_timeout=2.5).total_timeout == 2.5
