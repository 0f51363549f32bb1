"""SQLAlchemy 2 models. Times are stored timezone-aware (UTC); PHI stays out of audit details."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class AwareDateTime(TypeDecorator[datetime]):
    """DateTime that always comes back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to an aware column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base of every ptguard table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class AppealCase(Base):
    """One appeal (or reopening / corrected claim) for one ClaimResponse: draft → sent → decided."""

    __tablename__ = "appeal_case"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    fhir_server: Mapped[str | None] = mapped_column(String(500))
    patient_ref: Mapped[str | None] = mapped_column(String(200))
    claim_ref: Mapped[str | None] = mapped_column(String(200))
    claim_response_ref: Mapped[str] = mapped_column(String(200), index=True)
    payer_id: Mapped[str | None] = mapped_column(String(50))
    category: Mapped[str | None] = mapped_column(String(50))
    path: Mapped[str | None] = mapped_column(String(20))
    level: Mapped[str | None] = mapped_column(String(40))
    due_date: Mapped[date | None] = mapped_column(Date)
    deadline_rule: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), default="draft")
    letter: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    exhibits: Mapped[list[Any]] = mapped_column(JSON, default=list)
    decision: Mapped[str | None] = mapped_column(String(40))
    document_ref: Mapped[str | None] = mapped_column(String(200))
    task_ref: Mapped[str | None] = mapped_column(String(200))
    # Set while a request writes the case back to the chart (migration 0006); stale after cases.WRITEBACK_HOLD.
    writeback_claimed_at: Mapped[datetime | None] = mapped_column(AwareDateTime())
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow, onupdate=utcnow)
    audit: Mapped[list[AuditEvent]] = relationship(back_populates="case", order_by="AuditEvent.id")


CASE_STATUSES = ("draft", "sent", "decided")


class AuditEvent(Base):
    """Append-only trail: who did what, when. Rows are never updated or deleted."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str | None] = mapped_column(ForeignKey("appeal_case.id"), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(60))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    case: Mapped[AppealCase | None] = relationship(back_populates="audit")


def _refuse_change(mapper: Mapper[Any], connection: Any, target: AuditEvent) -> None:
    raise PermissionError("the audit trail is append-only")


event.listen(AuditEvent, "before_update", _refuse_change)
event.listen(AuditEvent, "before_delete", _refuse_change)


class CardIssued(Base):
    """A CDS card ptguard returned, so feedback on its uuid can be tied to the criterion behind it."""

    __tablename__ = "cds_card"

    uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    service_id: Mapped[str] = mapped_column(String(100))
    criterion_id: Mapped[str | None] = mapped_column(String(100), index=True)
    payer_id: Mapped[str | None] = mapped_column(String(50))
    hook_instance: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)


class CdsFeedback(Base):
    """One feedback item from an EHR; the same item arriving twice is stored once."""

    __tablename__ = "cds_feedback"
    __table_args__ = (UniqueConstraint("service_id", "card_uuid", "outcome", "outcome_timestamp", name="uq_feedback"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(String(100))
    card_uuid: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(20))
    outcome_timestamp: Mapped[str] = mapped_column(String(40))
    accepted_suggestions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    override_code: Mapped[str | None] = mapped_column(String(100))
    override_display: Mapped[str | None] = mapped_column(String(300))
    user_comment: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)


class RemitFile(Base):
    """A received X12 835 file, kept raw; idempotent on its content hash and on its control numbers."""

    __tablename__ = "remit_file"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    control_key: Mapped[str | None] = mapped_column(String(300), unique=True)
    filename: Mapped[str | None] = mapped_column(String(300))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(20), default="received")
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    errors: Mapped[list[Any]] = mapped_column(JSON, default=list)
    received_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    # The import lease: which process is importing the file (status "processing") and until when it may.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires: Mapped[datetime | None] = mapped_column(AwareDateTime())


class WorkItem(Base):
    """A denied or reduced therapy claim waiting for the biller: the denial worklist."""

    __tablename__ = "work_item"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    dedupe_key: Mapped[str] = mapped_column(String(300), unique=True)
    source: Mapped[str] = mapped_column(String(20))
    remit_file_id: Mapped[str | None] = mapped_column(ForeignKey("remit_file.id"))
    fhir_server: Mapped[str | None] = mapped_column(String(500))
    patient_ref: Mapped[str | None] = mapped_column(String(200), index=True)
    patient_display: Mapped[str | None] = mapped_column(String(200))
    claim_ref: Mapped[str | None] = mapped_column(String(200))
    claim_control_number: Mapped[str | None] = mapped_column(String(100))
    claim_response_ref: Mapped[str | None] = mapped_column(String(200))
    claim_response: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    payer_id: Mapped[str | None] = mapped_column(String(50))
    payer_name: Mapped[str | None] = mapped_column(String(200))
    lines: Mapped[list[Any]] = mapped_column(JSON, default=list)
    codes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    category: Mapped[str | None] = mapped_column(String(50))
    path: Mapped[str | None] = mapped_column(String(20))
    amount: Mapped[float | None] = mapped_column()
    notice_date: Mapped[date | None] = mapped_column(Date)
    due_date: Mapped[date | None] = mapped_column(Date, index=True)
    deadline_rule: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), default="open")
    matched: Mapped[bool] = mapped_column(default=False)
    case_id: Mapped[str | None] = mapped_column(ForeignKey("appeal_case.id"))
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)


class OAuthState(Base):
    """SMART launch state kept server-side, keyed by `state` (survives cookie loss inside an EHR iframe)."""

    __tablename__ = "oauth_state"

    state: Mapped[str] = mapped_column(String(128), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(AwareDateTime())


REMIT_JOB_IN_FLIGHT = "status IN ('queued', 'running')"


class RemitJob(Base):
    """A background remittance job (POST /remit/835, /remit/notify): its status seen by every worker process."""

    __tablename__ = "remit_job"
    # At most one queued-or-running job per dedupe hash, even when two processes insert at the same moment.
    __table_args__ = (
        Index("uq_remit_job_in_flight", "dedupe_sha256", unique=True, sqlite_where=text(REMIT_JOB_IN_FLIGHT),
              postgresql_where=text(REMIT_JOB_IN_FLIGHT)),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="queued")  # queued | running | done | error
    dedupe_sha256: Mapped[str | None] = mapped_column(String(64))  # hex SHA-256 of the dedupe key
    # The lease: the queue (host:pid:random) that runs the job, renewed while it is queued or running.
    owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires: Mapped[datetime | None] = mapped_column(AwareDateTime())
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(AwareDateTime())
