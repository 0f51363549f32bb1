"""The store on SQLite and on the real PostgreSQL server: migrations, aware times, append-only audit."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ptguard.store.db import session_scope
from ptguard.store.models import AppealCase, AuditEvent, CdsFeedback


def test_case_round_trip_with_aware_times(db_url: str) -> None:
    with session_scope(db_url) as s:
        case = AppealCase(claim_response_ref="ClaimResponse/cr-1", payer_id="aetna", due_date=date(2027, 5, 19))
        s.add(case)
        s.flush()
        s.add(AuditEvent(case_id=case.id, actor="Practitioner/biller", action="created", detail={"path": "appeal"}))
        case_id = case.id
    with session_scope(db_url) as s:
        case = s.get(AppealCase, case_id)
        assert case is not None and case.status == "draft" and case.due_date == date(2027, 5, 19)
        assert case.created_at.tzinfo is not None
        assert [a.action for a in case.audit] == ["created"]


def test_audit_is_append_only(db_url: str) -> None:
    with session_scope(db_url) as s:
        s.add(AuditEvent(actor="x", action="viewed"))
    with pytest.raises(PermissionError), session_scope(db_url) as s:
        event = s.scalars(select(AuditEvent)).one()
        event.action = "edited"
    with pytest.raises(PermissionError), session_scope(db_url) as s:
        s.delete(s.scalars(select(AuditEvent)).one())
    with session_scope(db_url) as s:
        assert s.scalars(select(AuditEvent.action)).all() == ["viewed"]


def test_feedback_is_unique(db_url: str) -> None:
    item = {"service_id": "s", "card_uuid": "c", "outcome": "accepted", "outcome_timestamp": "2026-11-02T10:00:00Z"}
    with session_scope(db_url) as s:
        s.add(CdsFeedback(**item))
    with pytest.raises(IntegrityError), session_scope(db_url) as s:
        s.add(CdsFeedback(**item))


def test_naive_datetime_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'n.sqlite3'}"
    with pytest.raises(Exception, match="naive"), session_scope(url) as s:
        s.add(AuditEvent(actor="x", action="y", at=datetime(2026, 1, 1)))
    with session_scope(url) as s:
        s.add(AuditEvent(actor="x", action="y", at=datetime(2026, 1, 1, tzinfo=UTC)))
