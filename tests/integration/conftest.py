"""Fixtures for integration tests: the sandbox FHIR server, started once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from sandbox.fhir_server import FhirServerProcess

if TYPE_CHECKING:
    from sandbox.smart_auth import SmartAuthServer


@pytest.fixture(scope="session")
def fhir_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServerProcess]:
    """The running sandbox FHIR server process (in-memory data shared by the whole session)."""
    log = tmp_path_factory.mktemp("fhir-server") / "fhir-server.log"
    server = FhirServerProcess(log_path=log)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fhir_server(fhir_server_process: FhirServerProcess) -> str:
    """The base URL of the session's sandbox FHIR server, e.g. http://127.0.0.1:PORT/fhir/R4."""
    assert fhir_server_process.base_url is not None
    return fhir_server_process.base_url


# ------------------------------------------------------------------ SMART authorization server (sandbox)


@pytest.fixture(scope="session")
def smart_auth_server(fhir_server: str) -> Iterator[SmartAuthServer]:
    """The sandbox SMART authorization server + FHIR proxy in front of the session's FHIR server."""
    from sandbox.smart_auth import SmartAuthServer

    server = SmartAuthServer(fhir_url=fhir_server)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smart_auth(smart_auth_server: SmartAuthServer) -> Iterator[SmartAuthServer]:
    """The session's SMART authorization server with every real-world switch off before and after the test."""
    smart_auth_server.reset_switches()
    try:
        yield smart_auth_server
    finally:
        smart_auth_server.reset_switches()
