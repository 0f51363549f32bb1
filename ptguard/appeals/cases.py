"""Appeal cases in the store: draft → sent → decided, letter edits kept, every change in the append-only audit trail."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from ptguard.appeals.model import AppealLetter, edit_sentence
from ptguard.errors import InputError, NotFoundError
from ptguard.store.db import session_scope
from ptguard.store.models import AppealCase, AuditEvent

WRITEBACK_HOLD = 180.0  # seconds after which an unfinished write-back's claim is stale (its worker died)
MAX_SENTENCE_CHARS = 5000  # one edited sentence; a megabyte of words would take the PDF renderer minutes
TRANSITIONS = {"draft": {"sent"}, "sent": {"decided"}, "decided": set[str]()}
DECISIONS = ("overturned", "partially-overturned", "upheld")


@dataclass
class CaseView:
    """A detached copy of a case and its audit trail, safe to use after the session closes."""

    id: str
    status: str
    claim_response_ref: str
    payer_id: str | None
    category: str | None
    path: str | None
    level: str | None
    due_date: date | None
    deadline_rule: str | None
    decision: str | None
    document_ref: str | None
    task_ref: str | None
    letter: AppealLetter
    audit: list[dict[str, Any]]


@dataclass(frozen=True)
class CaseScope:
    """Which cases a caller may see: those of one FHIR server (EHR tenant), optionally of one patient only."""

    fhir_server: str
    patient: str | None = None

    def allows(self, fhir_server: str | None, patient_ref: str | None) -> bool:
        if not fhir_server or _base(fhir_server) != _base(self.fhir_server):
            return False
        return self.patient is None or _ref_id(patient_ref) == _ref_id(self.patient)


def _base(url: str) -> str:
    return url.strip().rstrip("/")


def _ref_id(ref: str | None) -> str:
    """`Patient/1`, `https://x/fhir/Patient/1` and `1` all name patient 1."""
    return (ref or "").rstrip("/").split("/")[-1]


def _visible(case: AppealCase, scope: CaseScope | None) -> bool:
    return scope is None or scope.allows(case.fhir_server, case.patient_ref)


def _view(case: AppealCase) -> CaseView:
    return CaseView(
        id=case.id,
        status=case.status,
        claim_response_ref=case.claim_response_ref,
        payer_id=case.payer_id,
        category=case.category,
        path=case.path,
        level=case.level,
        due_date=case.due_date,
        deadline_rule=case.deadline_rule,
        decision=case.decision,
        document_ref=case.document_ref,
        task_ref=case.task_ref,
        letter=AppealLetter.from_dict(case.letter),
        audit=[
            {"at": a.at.isoformat(timespec="seconds"), "actor": a.actor, "action": a.action, "detail": a.detail}
            for a in case.audit
        ],
    )


def audit(session: Session, case_id: str | None, actor: str, action: str, detail: dict[str, Any] | None = None) -> None:
    """Append one audit row (detail holds ids and counts only, never chart text)."""
    session.add(AuditEvent(case_id=case_id, actor=actor, action=action, detail=detail or {}))


def create_case(db_url: str, letter: AppealLetter, *, actor: str, fhir_server: str | None = None) -> str:
    """Store a new draft case for the letter; returns its id."""
    with session_scope(db_url) as s:
        due = date.fromisoformat(letter.deadline["due"]) if letter.deadline else None
        case = AppealCase(
            fhir_server=fhir_server,
            patient_ref=letter.patient,
            claim_ref=letter.claim,
            claim_response_ref=letter.claim_response,
            payer_id=letter.payer_id,
            category=letter.category,
            path=letter.path,
            level=letter.level,
            due_date=due,
            deadline_rule=letter.deadline["rule"] if letter.deadline else None,
            status="draft",
            letter=letter.to_dict(),
            exhibits=[e.to_dict(with_content=False) for e in letter.exhibits],
        )
        s.add(case)
        s.flush()
        audit(
            s,
            case.id,
            actor,
            "case.created",
            {
                "sentences": len(letter.sentences()),
                "gaps": len(letter.gaps),
                "exhibits": len(letter.exhibits),
                "template": letter.template,
            },
        )
        return case.id


def get_case(db_url: str, case_id: str, *, scope: CaseScope | None = None) -> CaseView:
    """One case; NotFoundError when there is none with that id or it lies outside `scope` (another EHR/patient)."""
    with session_scope(db_url) as s:
        case = s.get(AppealCase, case_id[:64])
        if case is None or not _visible(case, scope):
            raise NotFoundError(f"no appeal case {case_id!r}")
        return _view(case)


def cases_for(db_url: str, claim_response_ref: str, *, scope: CaseScope | None = None) -> list[CaseView]:
    """The cases of one ClaimResponse (within `scope`: the same reference on another EHR is another claim)."""
    with session_scope(db_url) as s:
        rows = s.scalars(
            select(AppealCase)
            .where(AppealCase.claim_response_ref == claim_response_ref)
            .order_by(AppealCase.created_at)
        ).all()
        return [_view(c) for c in rows if _visible(c, scope)]


def list_cases(db_url: str, *, scope: CaseScope | None = None) -> list[dict[str, Any]]:
    """Every case within `scope`, soonest due first, as plain rows for a list."""
    with session_scope(db_url) as s:
        query = select(AppealCase).order_by(AppealCase.due_date)
        if scope is not None:
            query = query.where(AppealCase.fhir_server.is_not(None))
        return [
            {
                "id": c.id,
                "status": c.status,
                "claim_response": c.claim_response_ref,
                "due": c.due_date,
                "payer": c.payer_id,
                "category": c.category,
            }
            for c in s.scalars(query).all()
            if _visible(c, scope)
        ]


def save_edits(db_url: str, case_id: str, edits: dict[str, tuple[str, bool]], *, actor: str) -> CaseView:
    """Apply sentence edits {sentence id: (new text, keep sources)} to a draft; records which sentences changed."""
    with session_scope(db_url) as s:
        case = s.get(AppealCase, case_id)
        if case is None:
            raise NotFoundError(f"no appeal case {case_id!r}")
        if case.status != "draft":
            raise InputError(f"the case is {case.status}; only a draft letter can be edited")
        letter = AppealLetter.from_dict(case.letter)
        for sid, (text, _keep) in edits.items():
            if len(" ".join(text.split())) > MAX_SENTENCE_CHARS:
                raise InputError(
                    f"sentence {sid} is longer than {MAX_SENTENCE_CHARS:,} characters; split or shorten it"
                )
        changed: list[str] = []
        dropped: list[str] = []
        for sid, (text, keep) in edits.items():
            sentence = letter.sentence(sid)
            if sentence is None:
                raise InputError(f"the letter has no sentence {sid!r}")
            before = (sentence.text, list(sentence.sources))
            edit_sentence(letter, sid, text, keep_sources=keep)
            if (sentence.text, sentence.sources) != before:
                changed.append(sid)
                if before[1] and not sentence.sources:
                    dropped.append(sid)
        if changed:
            case.letter = letter.to_dict()
            audit(s, case.id, actor, "letter.edited", {"sentences": changed, "sources_dropped": dropped})
        return _view(case)


def set_status(db_url: str, case_id: str, status: str, *, actor: str, decision: str | None = None) -> CaseView:
    """Move a case forward (draft → sent → decided); a decided case names its decision."""
    with session_scope(db_url) as s:
        case = s.get(AppealCase, case_id)
        if case is None:
            raise NotFoundError(f"no appeal case {case_id!r}")
        if status not in TRANSITIONS.get(case.status, set()):
            raise InputError(f"a {case.status} case cannot become {status}")
        if status == "decided" and decision not in DECISIONS:
            raise InputError(f"a decision is one of {', '.join(DECISIONS)}")
        old = case.status
        case.status = status
        if decision:
            case.decision = decision
        audit(s, case.id, actor, "case.status", {"from": old, "to": status, "decision": decision})
        return _view(case)


@dataclass(frozen=True)
class WritebackClaim:
    """The outcome of claiming a case's write-back: `claimed` (go on, creating only what is missing), `busy`
    (another request is writing this case back now) or `done` (the DocumentReference and Task are already made)."""

    state: str
    document_ref: str | None
    task_ref: str | None
    token: datetime | None = None  # with `claimed`: the claim's time, which only its holder may clear


def begin_writeback(db_url: str, case_id: str, *, now: float | None = None) -> WritebackClaim:
    """Claim the case's write-back, atomically: of two submits at once (a double click, two workers) only one gets
    `claimed`, the other `busy`. The claim (`writeback_claimed_at`) is ended by record_writeback or end_writeback,
    and stale after WRITEBACK_HOLD seconds (`now`: epoch seconds, for tests)."""
    at = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    with session_scope(db_url) as s:
        case = s.get(AppealCase, case_id)
        if case is None:
            raise NotFoundError(f"no appeal case {case_id!r}")
        doc, task = case.document_ref, case.task_ref
        if doc and task:
            return WritebackClaim("done", doc, task)
        result = s.execute(
            update(AppealCase)
            .where(
                AppealCase.id == case_id,
                or_(
                    AppealCase.writeback_claimed_at.is_(None),
                    AppealCase.writeback_claimed_at < at - timedelta(seconds=WRITEBACK_HOLD),
                ),
            )
            .values(writeback_claimed_at=at)
            .execution_options(synchronize_session=False)
        )
        claimed = getattr(result, "rowcount", 0) == 1
        return WritebackClaim("claimed", doc, task, at) if claimed else WritebackClaim("busy", doc, task)


def _release(s: Session, case_id: str, token: datetime | None) -> None:
    """Clear the write-back claim, if it is still the one taken at `token` (a request that ran past WRITEBACK_HOLD
    must not clear the claim of the one that took over); any claim when no token is given."""
    query = update(AppealCase).where(AppealCase.id == case_id)
    if token is not None:
        query = query.where(AppealCase.writeback_claimed_at == token)
    s.execute(query.values(writeback_claimed_at=None).execution_options(synchronize_session=False))


def end_writeback(db_url: str, case_id: str, token: datetime | None = None) -> None:
    """Drop an unfinished write-back's claim (the request failed before anything was recorded)."""
    with session_scope(db_url) as s:
        _release(s, case_id, token)


def record_writeback(
    db_url: str,
    case_id: str,
    *,
    actor: str,
    document_ref: str | None,
    task_ref: str | None,
    skipped: int,
    token: datetime | None = None,
) -> None:
    """Store what a write-back made, end its claim (`token`, from begin_writeback) and audit it."""
    with session_scope(db_url) as s:
        case = s.get(AppealCase, case_id)
        if case is None:
            raise NotFoundError(f"no appeal case {case_id!r}")
        case.document_ref = document_ref or case.document_ref
        case.task_ref = task_ref or case.task_ref
        s.flush()
        _release(s, case_id, token)
        audit(s, case.id, actor, "writeback", {"document": document_ref, "task": task_ref, "skipped": skipped})


def record_event(
    db_url: str, case_id: str | None, *, actor: str, action: str, detail: dict[str, Any] | None = None
) -> None:
    with session_scope(db_url) as s:
        audit(s, case_id, actor, action, detail)


def count_same_denials(db_url: str, *, payer_id: str, category: str, exclude: str | None = None) -> int:
    """How many other claims of this payer were denied in the same category (cases and worklist items)."""
    from ptguard.store.models import WorkItem

    with session_scope(db_url) as s:
        q1 = select(AppealCase.claim_response_ref).where(
            AppealCase.payer_id == payer_id, AppealCase.category == category
        )
        q2 = select(WorkItem.claim_response_ref).where(WorkItem.payer_id == payer_id, WorkItem.category == category)
        refs = {r for r in s.scalars(q1).all() if r} | {r for r in s.scalars(q2).all() if r}
        refs.discard(exclude or "")
        return len(refs)


def case_count(db_url: str) -> int:
    with session_scope(db_url) as s:
        return int(s.scalar(select(func.count()).select_from(AppealCase)) or 0)
