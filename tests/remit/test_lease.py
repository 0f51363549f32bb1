"""Cross-process 835 imports: a lease on the RemitFile row lets exactly one import process a file."""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from remit_util import FIXTURES
from sqlalchemy import func, select

from ptguard.fhir.load import load_many
from ptguard.fhir.refs import ResourceIndex
from ptguard.remit import intake
from ptguard.remit.intake import _register, control_key, import_835, sha256_hex
from ptguard.remit.x12 import read_835
from ptguard.store.db import session_scope
from ptguard.store.models import RemitFile, WorkItem

TODAY = date(2026, 12, 3)
ROOT = Path(__file__).resolve().parents[2]
FILE = "aetna-01.835"


@pytest.fixture(scope="module")
def chart() -> ResourceIndex:
    return ResourceIndex.from_load(load_many(sorted((ROOT / "fhir_fixtures").glob("*.json"))))


def _counts(db_url: str) -> tuple[int, int]:
    with session_scope(db_url) as s:
        files = s.scalar(select(func.count()).select_from(RemitFile)) or 0
        items = s.scalar(select(func.count()).select_from(WorkItem)) or 0
    return files, items


def _data() -> bytes:
    return (FIXTURES / FILE).read_bytes()


def test_second_import_while_the_first_holds_the_lease_processes_nothing(
    db_url: str, chart: ResourceIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _data()
    entered, release = threading.Event(), threading.Event()
    real = intake._process
    calls: list[str] = []

    def slow_process(*args: Any, **kwargs: Any) -> Any:
        calls.append(threading.current_thread().name)
        entered.set()
        assert release.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(intake, "_process", slow_process)
    results: dict[str, Any] = {}

    def first() -> None:
        results["first"] = import_835(data, filename=FILE, db_url=db_url, index=chart, today=TODAY)

    worker = threading.Thread(target=first, name="first-import")
    worker.start()
    try:
        assert entered.wait(20)
        second = import_835(data, filename=FILE, db_url=db_url, index=chart, today=TODAY)
    finally:
        release.set()
        worker.join(30)
    assert second.status == "in-progress", second
    assert second.message and "already being imported" in second.message
    assert results["first"].status == "imported"
    assert calls == ["first-import"], "the file was processed twice"
    assert _counts(db_url) == (1, 1)
    third = import_835(data, filename=FILE, db_url=db_url, index=chart, today=TODAY)
    assert third.status == "already-imported"
    with session_scope(db_url) as s:
        row = s.scalars(select(RemitFile)).one()
        assert row.status == "imported" and row.lease_owner is None and row.lease_expires is None


def _crashed_import(db_url: str, lease_seconds: float) -> None:
    """What a process that died mid-import leaves behind: a processing row with its lease."""
    data = _data()
    read = read_835(data, FILE)
    row_id, known = _register(
        db_url, sha256_hex(data), data, FILE, control_key(read), [], "dead-host:1:x", lease_seconds
    )
    assert row_id is not None and known is None


def test_an_expired_lease_is_taken_over(db_url: str, chart: ResourceIndex) -> None:
    _crashed_import(db_url, lease_seconds=-1)
    result = import_835(_data(), filename=FILE, db_url=db_url, index=chart, today=TODAY)
    assert result.status == "imported"
    assert _counts(db_url) == (1, 1)


def test_a_live_lease_of_another_process_is_respected(db_url: str, chart: ResourceIndex) -> None:
    _crashed_import(db_url, lease_seconds=600)
    result = import_835(_data(), filename=FILE, db_url=db_url, index=chart, today=TODAY)
    assert result.status == "in-progress"
    assert _counts(db_url) == (1, 0)


def test_parallel_imports_of_one_file(db_url: str, chart: ResourceIndex) -> None:
    data = _data()
    barrier = threading.Barrier(4)
    statuses: list[str] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait(10)
        result = import_835(data, filename=FILE, db_url=db_url, index=chart, today=TODAY)
        with lock:
            statuses.append(result.status)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses.count("imported") == 1, statuses
    assert set(statuses) <= {"imported", "in-progress", "already-imported"}, statuses
    assert _counts(db_url) == (1, 1)
