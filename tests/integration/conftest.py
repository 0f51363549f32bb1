"""Fixtures for integration tests: the sandbox FHIR server, started once per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.fhir_server import FhirServerProcess


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
