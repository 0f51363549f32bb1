"""A failed 835 import logs the exception's type only: a database error's parameters (patient names) stay out."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from remit_util import FIXTURES
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ptguard.remit import intake
from ptguard.remit.intake import import_835
from ptguard.store.db import session_scope
from ptguard.store.models import RemitFile, WorkItem

TODAY = date(2026, 12, 3)
PATIENT = "WHITFIELD"  # NM1*QC of aetna-01.835
MARKER = "ZZPATIENT-QUILLFEATHER"  # a name nowhere else in the file or the code


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("PTGUARD_DEBUG", raising=False)
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'logs.sqlite3'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def _data() -> bytes:
    data = (FIXTURES / "aetna-01.835").read_bytes()
    assert PATIENT.encode() in data
    return data


def _store_then_collide(monkeypatch: pytest.MonkeyPatch, raised: list[BaseException]) -> None:
    """Store the file's items, then insert a row that violates work_item's unique dedupe key (a real IntegrityError)."""
    real = intake._store_items

    def store(session: Session, pending: Any, remit_file_id: str | None) -> Any:
        out = real(session, pending, remit_file_id)
        first = session.scalars(select(WorkItem)).first()
        assert first is not None
        session.add(WorkItem(dedupe_key=first.dedupe_key, source="835", patient_display=f"{MARKER}, {PATIENT}"))
        try:
            session.flush()
        except IntegrityError as exc:
            raised.append(exc)
            raise
        return out

    monkeypatch.setattr(intake, "_store_items", store)


def test_a_failing_store_logs_no_patient_name(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    raised: list[BaseException] = []
    _store_then_collide(monkeypatch, raised)
    with caplog.at_level(logging.DEBUG):
        result = import_835(_data(), filename="a.835", db_url=db_url, today=TODAY)
    assert result.status == "failed" and result.failure_exit_code == 70
    assert result.message and "IntegrityError" in result.message
    # The precondition: the database error does carry the patient's name among its parameters.
    assert len(raised) == 1 and MARKER in str(raised[0]) and PATIENT in str(raised[0])
    assert "IntegrityError" in caplog.text  # the failure is logged, by its type
    assert all(r.exc_info is None for r in caplog.records)  # no traceback without PTGUARD_DEBUG
    assert MARKER not in caplog.text and PATIENT not in caplog.text, caplog.text
    assert MARKER not in result.message and PATIENT not in result.message
    with session_scope(db_url) as s:
        row = s.scalars(select(RemitFile)).one()
        assert row.status == "failed" and row.lease_owner is None
        assert not any(MARKER in str(e) for e in row.errors)


def test_a_failure_before_the_file_is_registered_logs_no_patient_name(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    error = IntegrityError("INSERT INTO remit_file (filename) VALUES (?)", (f"{MARKER}.835",), Exception("boom"))
    assert MARKER in str(error)

    def register(*_args: Any, **_kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(intake, "_register", register)
    with caplog.at_level(logging.DEBUG):
        result = import_835(_data(), filename="b.835", db_url=db_url, today=TODAY)
    assert result.status == "failed" and result.failure_exit_code == 70
    assert "IntegrityError" in caplog.text and "before it was registered" in caplog.text
    assert MARKER not in caplog.text, caplog.text
    assert all(r.exc_info is None for r in caplog.records)


def test_with_ptguard_debug_the_traceback_is_logged(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PTGUARD_DEBUG", "1")
    _store_then_collide(monkeypatch, [])
    with caplog.at_level(logging.DEBUG):
        result = import_835(_data(), filename="c.835", db_url=db_url, today=TODAY)
    assert result.status == "failed"
    failed = [r for r in caplog.records if r.exc_info is not None]
    assert len(failed) == 1 and failed[0].exc_info is not None and failed[0].exc_info[0] is IntegrityError
