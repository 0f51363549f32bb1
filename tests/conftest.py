"""Shared fixtures: repository paths, the public data, and a frozen clock at a non-UTC offset."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import time_machine

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fhir_fixtures"
SCHEMAS = ROOT / "schemas"
CHICAGO = timezone(timedelta(hours=-6))


@pytest.fixture(autouse=True)
def frozen_clock() -> Iterator[None]:
    """Every test runs at 2026-12-03 10:00 in a UTC-6 zone, to catch timezone slips."""
    old_tz = os.environ.get("TZ")
    os.environ["TZ"] = "America/Chicago"
    time.tzset()
    with time_machine.travel(datetime(2026, 12, 3, 10, 0, tzinfo=CHICAGO), tick=True):
        yield
    if old_tz is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old_tz
    time.tzset()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store's URL: a fresh SQLite file, then a fresh database on the real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ptguard.sqlite3'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the real PostgreSQL server (dropped afterwards)."""
    import psycopg

    from tests.shared_data import require_service

    name = f"ptguard_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        require_service("PostgreSQL at 127.0.0.1:5432", exc)
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        yield url
    finally:
        from ptguard.store.db import get_engine

        get_engine(url).dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers (a hung FHIR server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(32)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def accept() -> None:
        sock.settimeout(0.05)
        while not stop.is_set():
            try:
                conns.append(sock.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/fhir"
    time.sleep(0.5)  # let abandoned fetch threads time out before their sockets go
    stop.set()
    t.join()
    for c in conns:
        c.close()
    sock.close()
