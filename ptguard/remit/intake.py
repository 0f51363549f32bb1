"""Remittance intake: an 835 file (or a native ClaimResponse) → stored raw, FHIR ClaimResponses, the denial worklist."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ptguard.chart import payer_id_for
from ptguard.denials.deadlines import Deadline, compute_deadline
from ptguard.denials.decode import DecodedLine, Denial, Reason, decode
from ptguard.errors import ConfigError, FhirServerError, InputError, NotFoundError, PtguardError, debugging
from ptguard.fhir.client import FhirClient
from ptguard.fhir.refs import ResourceIndex, element, elements, ref_string, text
from ptguard.remit.matching import ClaimMatch, ClaimMatcher, apply_match
from ptguard.remit.model import ClaimPayment, Remittance
from ptguard.remit.to_fhir import (
    EXT_SOURCE,
    PAYER_CLAIM_CONTROL_NUMBER,
    REMIT_CLAIM_KEY,
    claim_response,
    payment_reconciliation,
)
from ptguard.remit.x12 import ReadResult, X12Error, read_835
from ptguard.store.db import session_scope
from ptguard.store.models import RemitFile, WorkItem, utcnow

log = logging.getLogger("ptguard.remit")

THERAPY_CODE = re.compile(r"^(97\d{3}|G0283)$", re.ASCII)
REMIT_FILE_SHA256 = "https://ptguard.dev/remit-file-sha256"
X12_CONTENT_TYPE = "application/edi-x12"
OPEN_STATUSES = ("open", "unmatched")
TRANSACTION_CHUNK = 100
Progress = Callable[[str], None]


# ---------------------------------------------------------------------------- results


@dataclass
class TherapyDenial:
    """One denied or reduced therapy line found in an import (for the summary; the work item holds the rest)."""

    payer: str
    payer_id: str
    claim: str
    line: int | None
    code: str
    carcs: list[str]
    category: str
    path: str
    due: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "payer": self.payer,
            "payer_id": self.payer_id,
            "claim": self.claim,
            "line": self.line,
            "code": self.code,
            "carcs": self.carcs,
            "category": self.category,
            "path": self.path,
            "due": self.due,
        }


@dataclass
class ImportResult:
    """The outcome of importing one 835 file."""

    filename: str
    sha256: str
    status: str  # imported | quarantined | already-imported | in-progress | rejected | failed
    remit_file_id: str | None = None
    message: str | None = None
    claims: int = 0
    raw_clp_count: int = 0
    rejected_claims: int = 0
    paid: int = 0
    denied: int = 0
    reversals: int = 0
    matched: int = 0
    unmatched: list[str] = field(default_factory=list)
    therapy_denials: list[TherapyDenial] = field(default_factory=list)
    work_items_created: int = 0
    work_items_existing: int = 0
    work_items_closed: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fhir: dict[str, Any] | None = None
    duplicate_claims: int = 0  # claims of a transaction repeated within the file (sent twice): counted once
    # For a `failed` file: the exit code of what failed (6 the FHIR server, 5 the database, 70 unexpected).
    failure_exit_code: int | None = None

    @property
    def readable(self) -> bool:
        """False when nothing could be read from the file (rejected or failed)."""
        return self.status not in ("rejected", "failed")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (schemas/remit-import-output.schema.json, one entry of `files`)."""
        return {
            "file": self.filename,
            "sha256": self.sha256,
            "status": self.status,
            "remit_file_id": self.remit_file_id,
            "message": self.message,
            "claims": self.claims,
            "raw_clp_count": self.raw_clp_count,
            "rejected_claims": self.rejected_claims,
            "duplicate_claims": self.duplicate_claims,
            "paid": self.paid,
            "denied": self.denied,
            "reversals": self.reversals,
            "matched": self.matched,
            "unmatched": list(self.unmatched),
            "therapy_denials": [t.to_dict() for t in self.therapy_denials],
            "work_items": {
                "created": self.work_items_created,
                "existing": self.work_items_existing,
                "closed": self.work_items_closed,
            },
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "fhir": self.fhir,
        }

    @classmethod
    def from_stored(cls, row: RemitFile, filename: str, sha: str, message: str) -> ImportResult:
        """An 'already imported' answer that repeats what the first import found."""
        summary = row.summary or {}
        result = cls(filename=filename, sha256=sha, status="already-imported", remit_file_id=row.id, message=message)
        for name in ("claims", "raw_clp_count", "paid", "denied", "reversals", "matched"):
            value = summary.get(name)
            if isinstance(value, int):
                setattr(result, name, value)
        return result


@dataclass
class IngestResult:
    """The outcome of putting one native ClaimResponse on the worklist."""

    reference: str
    denied: bool
    work_items_created: int = 0
    work_items_existing: int = 0
    item_ids: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- helpers


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of the raw bytes (the file's identity)."""
    return hashlib.sha256(data).hexdigest()


def control_key(result: ReadResult) -> str | None:
    """The file's envelope identity, hashed: per transaction ISA06, ISA08, ISA13, GS06, ST02, TRN02 and BPR02.

    BPR02 (the payment amount) is included so that two different payments reusing control numbers (the X12 TR3
    example files all do) are not taken for one; a re-framed copy of the same file still has the same key.
    """
    if not result.remittances:
        return None
    parts = sorted(transaction_identity(r) for r in result.remittances)
    return "x12:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


def transaction_identity(rem: Remittance) -> str:
    """One ST/SE transaction's identity: ISA06, ISA08, ISA13, GS06, ST02, TRN02 and BPR02."""
    return "/".join([rem.sender_id or "", rem.receiver_id or "", rem.interchange_control_number,
                     rem.group_control_number, rem.transaction_control_number, rem.trace_number or "",
                     str(rem.payment_amount.normalize()) if rem.payment_amount is not None else ""])


def _today_default() -> date:
    return datetime.now().astimezone().date()


def deadline_for(payer_id: str, notice: date | None, path: str, *, today: date) -> Deadline | None:
    """The deadline of the recommended path: first appeal level (appeal) or the reopening window (reopen)."""
    if notice is None or path not in ("appeal", "reopen"):
        return None
    for level in (("reopening", None) if path == "reopen" else (None,)):
        try:
            return compute_deadline(payer_id, notice, today=today, level=level)
        except ConfigError:  # a bad PTGUARD_CONTRACT_DEADLINES must stop the run, never drop deadlines silently
            raise
        except NotFoundError:  # no such level in effect on that date (e.g. a 2014 notice): try the next
            continue
        except InputError:  # the notice date is out of range: no deadline can be counted from it
            return None
    return None


def _deadline(payer_id: str, notice: date | None, path: str, today: date) -> tuple[date | None, str | None]:
    """Due date and rule text for a work item."""
    if path == "resubmit":
        return None, "corrected claim: the payer's timely-filing limit applies (not an appeal deadline)"
    deadline = deadline_for(payer_id, notice, path, today=today)
    if deadline is None:
        return None, None
    return deadline.due, f"{deadline.label}: {deadline.rule} ({deadline.basis})"


def _reason_dicts(reasons: Iterable[Reason]) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for r in reasons:
        seen.setdefault((r.system, r.code, r.group), {"system": r.system, "code": r.code, "group": r.group,
                                                      "kind": r.kind, "meaning": r.meaning})
    return list(seen.values())


def _identifier(resource: Mapping[str, Any], system: str) -> str | None:
    for ident in elements(resource, "identifier"):
        if ident.get("system") == system and isinstance(ident.get("value"), str):
            return str(ident["value"])
    return None


@dataclass
class _Pending:
    """A work item about to be stored (dedupe key decides whether it is new)."""

    key: str
    row: dict[str, Any]


def _line_items(
    denial: Denial,
    resource: Mapping[str, Any],
    *,
    key_prefix: str,
    payer_id: str,
    payer_name: str | None,
    patient_ref: str | None,
    claim_ref: str | None,
    control_number: str | None,
    cr_ref: str | None,
    matched: bool,
    match: ClaimMatch | None,
    source: str,
    fhir_server: str | None,
    today: date,
) -> list[_Pending]:
    """One pending work item per denied or reduced therapy line of a decoded ClaimResponse."""
    out: list[_Pending] = []
    if not denial.denied:
        return out
    due, rule = _deadline(payer_id, denial.notice_date, denial.path, today)
    for line in denial.denied_lines:
        if not line.code or not THERAPY_CODE.match(line.code):
            continue
        out.append(_Pending(
            key=f"{key_prefix}|{line.sequence if line.sequence is not None else line.code}",
            row=_row(denial, resource, line, payer_id=payer_id, payer_name=payer_name, patient_ref=patient_ref,
                     claim_ref=claim_ref, control_number=control_number, cr_ref=cr_ref, matched=matched,
                     match=match, source=source, fhir_server=fhir_server, due=due, rule=rule),
        ))
    return out


def _row(
    denial: Denial,
    resource: Mapping[str, Any],
    line: DecodedLine,
    *,
    payer_id: str,
    payer_name: str | None,
    patient_ref: str | None,
    claim_ref: str | None,
    control_number: str | None,
    cr_ref: str | None,
    matched: bool,
    match: ClaimMatch | None,
    source: str,
    fhir_server: str | None,
    due: date | None,
    rule: str | None,
) -> dict[str, Any]:
    line_dict = line.to_dict()
    line_dict["sequence"] = line.sequence  # stored as the number (or null), as schemas/worklist-output says
    if match is not None and line.sequence is not None:
        encounters = match.encounters.get(line.sequence) or match.encounter_refs()
        line_dict["encounters"] = encounters
        line_dict["procedures"] = sorted({p for e in encounters for p in match.procedures.get(e, [])})
    amount = round(line.submitted - (line.paid or 0.0), 2) if line.submitted is not None else None
    return {
        "source": source,
        "fhir_server": fhir_server,
        "patient_ref": patient_ref,
        "patient_display": denial.patient_display,
        "claim_ref": claim_ref,
        "claim_control_number": control_number,
        "claim_response_ref": cr_ref,
        "claim_response": dict(resource),
        "payer_id": payer_id,
        "payer_name": payer_name,
        "lines": [line_dict],
        "codes": _reason_dicts([*line.reasons, *denial.claim_reasons]),
        "category": denial.category,
        "path": denial.path,
        "amount": amount,
        "notice_date": denial.notice_date,
        "due_date": due,
        "deadline_rule": rule[:300] if rule else None,
        "status": "open",
        "matched": matched,
    }


def _store_items(session: Session, pending: Sequence[_Pending], remit_file_id: str | None) -> tuple[int, int, list[str]]:
    """Insert the pending items whose dedupe key is new; returns (created, existing, ids of all)."""
    unique: dict[str, _Pending] = {}
    for p in pending:
        unique.setdefault(p.key, p)
    keys = list(unique)
    existing: dict[str, str] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        for key, item_id in session.execute(
            select(WorkItem.dedupe_key, WorkItem.id).where(WorkItem.dedupe_key.in_(chunk))
        ):
            existing[key] = item_id
    created = 0
    ids: list[str] = []
    for key, p in unique.items():
        if key in existing:
            ids.append(existing[key])
            continue
        item = WorkItem(dedupe_key=key, remit_file_id=remit_file_id, **p.row)
        session.add(item)
        session.flush()
        ids.append(item.id)
        created += 1
    return created, len(existing), ids


def _close_reversed(session: Session, reversals: Sequence[tuple[ClaimPayment, str | None]]) -> int:
    """A CLP02 22 reversal closes the open work items of the same claim (same CLP01, payer, and CLP07 if known)."""
    closed = 0
    for claim, payer_name in reversals:
        rows = session.scalars(
            select(WorkItem).where(
                WorkItem.claim_control_number == claim.patient_control_number,
                WorkItem.status.in_(OPEN_STATUSES),
            )
        ).all()
        if payer_name:
            rows = [r for r in rows if not r.payer_name or r.payer_name == payer_name]
        ccn = claim.payer_claim_control_number
        if ccn:
            same = [r for r in rows if _identifier(r.claim_response or {}, PAYER_CLAIM_CONTROL_NUMBER) == ccn]
            rows = same or rows
        for row in rows:
            row.status = "reversed"
            closed += 1
    return closed


# ---------------------------------------------------------------------------- FHIR writes


def _fhir_ref_from_answer(answer: Mapping[str, Any], rtype: str) -> tuple[str | None, bool]:
    response = answer.get("response") if isinstance(answer.get("response"), dict) else {}
    assert isinstance(response, dict)
    status = str(response.get("status") or "")
    created = status.startswith("201")
    location = str(response.get("location") or "")
    m = re.search(rf"{rtype}/([A-Za-z0-9\-.]{{1,64}})", location)
    if m:
        return f"{rtype}/{m.group(1)}", created
    resource = answer.get("resource")
    if isinstance(resource, dict) and isinstance(resource.get("id"), str):
        return f"{rtype}/{resource['id']}", created
    return None, created


class _FhirWriter:
    """Writes the raw file and the mapped resources with conditional creates (re-imports create nothing)."""

    def __init__(self, client: FhirClient) -> None:
        self.client = client
        self.stats: dict[str, Any] = {
            "server": client.base_url,
            "document_reference": None,
            "claim_responses": {"created": 0, "existing": 0},
            "payment_reconciliations": {"created": 0, "existing": 0},
        }

    def document(self, data: bytes, sha: str, filename: str) -> str:
        doc = {
            "resourceType": "DocumentReference",
            "identifier": [{"system": REMIT_FILE_SHA256, "value": sha}],
            "status": "current",
            "type": {"text": "X12 835 remittance advice (ERA)"},
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "description": f"835 remittance file {Path(filename).name}"[:200],
            "content": [{
                "attachment": {
                    "contentType": X12_CONTENT_TYPE,
                    "data": base64.b64encode(data).decode("ascii"),
                    "title": Path(filename).name[:200],
                    "size": len(data),
                    "hash": base64.b64encode(hashlib.sha1(data, usedforsecurity=False).digest()).decode("ascii"),
                }
            }],
        }
        created = self.client.create(doc, if_none_exist=f"identifier={REMIT_FILE_SHA256}|{sha}")
        ref = f"DocumentReference/{created.get('id')}"
        self.stats["document_reference"] = ref
        return ref

    def conditional(self, resources: Sequence[dict[str, Any]], counter: str) -> list[str | None]:
        """POST each resource unless one with its remit-claim-key identifier exists; returns their references."""
        refs: list[str | None] = []
        for start in range(0, len(resources), TRANSACTION_CHUNK):
            chunk = resources[start:start + TRANSACTION_CHUNK]
            entries = []
            for res in chunk:
                body = {k: v for k, v in res.items() if k != "id"}
                key = _identifier(res, REMIT_CLAIM_KEY)
                request: dict[str, Any] = {"method": "POST", "url": res["resourceType"]}
                if key:
                    request["ifNoneExist"] = f"identifier={REMIT_CLAIM_KEY}|{key}"
                entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": body, "request": request})
            answer = self.client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": entries})
            answers = [a for a in answer.get("entry") or [] if isinstance(a, dict)]
            if len(answers) != len(chunk):
                raise FhirServerError(f"the FHIR server answered {len(answers)} entries for {len(chunk)} sent")
            for res, ans in zip(chunk, answers, strict=True):
                ref, was_created = _fhir_ref_from_answer(ans, str(res["resourceType"]))
                refs.append(ref)
                self.stats[counter]["created" if was_created else "existing"] += 1
        return refs


# ---------------------------------------------------------------------------- the 835 import


def _source_extension(resource: dict[str, Any], sha: str, filename: str) -> None:
    """Without a FHIR server the raw file is referenced by its hash (the stored RemitFile)."""
    ext = resource.setdefault("extension", [])
    ext.append({"url": EXT_SOURCE, "valueReference": {
        "identifier": {"system": REMIT_FILE_SHA256, "value": sha}, "display": Path(filename).name}})


INTERNAL_ERROR = 70  # the exit code of an unexpected error (README)
LEASE_SECONDS = 900  # how long an import may hold a file before another process may take it over
IN_PROGRESS = "in-progress"


def lease_owner_id() -> str:
    """This import's lease owner: host, process and a random part (two imports in one process differ too)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _register(db_url: str, sha: str, data: bytes, filename: str, ckey: str | None,
              errors: list[str], owner: str, lease_seconds: float = LEASE_SECONDS,
              ) -> tuple[str | None, ImportResult | None]:
    """Store the raw file (or find it) and take its import lease; (row id, None) to proceed, else (None, result).

    The lease is taken with one conditional UPDATE (a row that is received or failed, or processing with an expired
    lease), so of two processes importing the same file exactly one proceeds; the other answers "in-progress".
    """
    with session_scope(db_url) as s:
        row = s.scalars(select(RemitFile).where(RemitFile.sha256 == sha)).first()
        if row is not None and row.status not in ("failed", "processing", "received"):
            return None, ImportResult.from_stored(row, filename, sha, f"already imported ({row.status}) "
                                                  f"on {row.received_at.date().isoformat()}; nothing new created")
        if ckey is not None:
            other = s.scalars(select(RemitFile).where(RemitFile.control_key == ckey)).first()
            if other is not None and (row is None or other.id != row.id):
                if other.status not in ("quarantined", "failed", "processing", "received"):
                    return None, ImportResult.from_stored(
                        other, filename, sha, "already imported: same ISA13/GS06/ST02 control numbers and TRN02 as "
                        f"{other.filename or 'an earlier file'} ({other.status}); nothing new created")
                if other.status in ("processing", "received") and _lease_active(other):
                    return None, _in_progress(filename, sha, other)
                other.control_key = None  # a corrected re-send of a quarantined file takes over its key
                other.summary = {**(other.summary or {}), "superseded": True}
                s.flush()
        if row is None:
            row = RemitFile(sha256=sha, control_key=None, filename=Path(filename).name[:300], raw=data,
                            status="received")
            s.add(row)
            try:
                s.flush()
            except IntegrityError:
                s.rollback()  # another process stored the same bytes a moment ago: it is importing them
                return None, ImportResult(filename=filename, sha256=sha, status=IN_PROGRESS,
                                          message="already being imported (a concurrent import of the same file)")
        row_id = row.id
    # A fresh transaction whose first statement is the conditional UPDATE (SQLite takes the write lock at once).
    now = utcnow()
    free = or_(
        RemitFile.status.in_(("received", "failed")),
        and_(RemitFile.status == "processing",
             or_(RemitFile.lease_expires.is_(None), RemitFile.lease_expires < now)),
    )
    try:
        with session_scope(db_url) as s:
            taken = s.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult has rowcount
                update(RemitFile).where(RemitFile.id == row_id, free).values(
                    status="processing", lease_owner=owner, lease_expires=now + timedelta(seconds=lease_seconds),
                    control_key=ckey, errors=errors,
                ).execution_options(synchronize_session=False)
            ).rowcount
            if taken == 1:
                return row_id, None
            current = s.get(RemitFile, row_id)
            if current is not None and current.status not in ("processing", "received"):
                return None, ImportResult.from_stored(current, filename, sha, f"already imported ({current.status})"
                                                      "; nothing new created")
            return None, _in_progress(filename, sha, current)
    except IntegrityError:
        return None, ImportResult(filename=filename, sha256=sha, status=IN_PROGRESS,
                                  message="already being imported (a concurrent import of the same file)")


def _lease_active(row: RemitFile) -> bool:
    return row.lease_expires is not None and row.lease_expires > utcnow()


def _in_progress(filename: str, sha: str, row: RemitFile | None) -> ImportResult:
    until = row.lease_expires.strftime("%H:%M:%SZ") if row is not None and row.lease_expires else "soon"
    return ImportResult(filename=filename, sha256=sha, status=IN_PROGRESS,
                        remit_file_id=row.id if row is not None else None,
                        message=f"already being imported by another process (its lease runs until {until}); "
                                "nothing processed twice")


def _finish(s: Session, row_id: str, owner: str, **values: Any) -> bool:
    """Write the file's outcome and drop the lease, only if this import still holds it."""
    done = s.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult has rowcount
        update(RemitFile).where(RemitFile.id == row_id, RemitFile.lease_owner == owner).values(
            lease_owner=None, lease_expires=None, **values
        ).execution_options(synchronize_session=False)
    ).rowcount
    return bool(done == 1)


def import_835(
    data: bytes,
    *,
    filename: str,
    db_url: str,
    fhir: FhirClient | None = None,
    today: date | None = None,
    progress: Progress | None = None,
    index: ResourceIndex | None = None,
    claim_id_systems: Sequence[str] = (),
    payer_map: Path | None = None,
    lease_seconds: float = LEASE_SECONDS,
) -> ImportResult:
    """Import one 835: store it, map it, match claims, write to FHIR, decode, and fill the denial worklist.

    Idempotent on the file's SHA-256 and on its control numbers (ISA/GS/ST + TRN02); per claim, FHIR writes are
    conditional on the remit-claim-key identifier and work items unique on their dedupe key.

    Never raises for one bad file: an unexpected error is a `failed` result (the file's record, when there is one,
    is marked failed and its lease released, so a re-import retries it), and a batch goes on with the next file.
    """
    name = Path(filename).name
    try:
        return _import_835(data, filename=name, db_url=db_url, fhir=fhir, today=today, progress=progress,
                           index=index, claim_id_systems=claim_id_systems, payer_map=payer_map,
                           lease_seconds=lease_seconds)
    except Exception as exc:  # e.g. the database unreachable before the file was registered
        message, code = _failure(exc, f"835 import of {name} (before it was registered)")
        return ImportResult(filename=name, sha256=sha256_hex(data), status="failed", message=message,
                            errors=[message], failure_exit_code=code)


def _import_835(
    data: bytes,
    *,
    filename: str,
    db_url: str,
    fhir: FhirClient | None,
    today: date | None,
    progress: Progress | None,
    index: ResourceIndex | None,
    claim_id_systems: Sequence[str],
    payer_map: Path | None,
    lease_seconds: float,
) -> ImportResult:
    today = today or _today_default()
    sha = sha256_hex(data)
    name = filename
    say = progress or (lambda _msg: None)
    # 1. the same bytes again: nothing to do
    with session_scope(db_url) as s:
        seen = s.scalars(select(RemitFile).where(RemitFile.sha256 == sha)).first()
        if seen is not None and seen.status == "rejected":
            message = str((seen.errors or ["rejected"])[0])
            return ImportResult(filename=name, sha256=sha, status="rejected", remit_file_id=seen.id,
                                message=message, errors=[message])
        if seen is not None and seen.status not in ("failed", "processing", "received"):
            already = ImportResult.from_stored(seen, name, sha, f"already imported ({seen.status}) on "
                                               f"{seen.received_at.date().isoformat()}; nothing new created")
            say(f"{name}: {already.message}")
            return already
    # 2. read
    try:
        read = read_835(data, name)
    except X12Error as exc:
        return _rejected(db_url, data, sha, name, exc.one_line())
    ckey = control_key(read)
    errors = [e.one_line() for e in read.errors]
    quarantined = not read.ok
    # 3. register (idempotency on the control numbers)
    owner = lease_owner_id()
    row_id, known = _register(db_url, sha, data, name, ckey, errors, owner, lease_seconds)
    if known is not None:
        say(f"{name}: {known.message}")
        return known
    assert row_id is not None
    result = ImportResult(filename=name, sha256=sha, status="quarantined" if quarantined else "imported",
                          remit_file_id=row_id, claims=read.claim_count, raw_clp_count=read.raw_clp_count,
                          rejected_claims=read.rejected_claims, errors=errors, warnings=list(read.warnings))
    try:
        pending, reversals = _process(read, data, sha, name, result, fhir=fhir, index=index, today=today,
                                      systems=claim_id_systems, payer_map=payer_map, say=say)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: free the file for the next run at once, then stop
        _release_interrupted(db_url, row_id, owner, errors)
        raise
    except Exception as exc:  # any failure marks the file failed and frees it for a retry
        return _failed(db_url, row_id, owner, result, errors, exc)
    # 4. store the worklist and the outcome in one transaction
    try:
        with session_scope(db_url) as s:
            # The lease is checked (and the outcome written) first: an import that lost its lease stores nothing.
            if not _finish(s, row_id, owner, status=result.status, errors=errors):
                s.rollback()
                log.warning("835 import lost its lease to another process; nothing stored")
                return ImportResult(filename=name, sha256=sha, status=IN_PROGRESS, remit_file_id=row_id,
                                    message="another process took over this import (the lease ran out); "
                                    "nothing stored")
            # Reversals close items stored before this file; then this file's own items are added.
            result.work_items_closed = _close_reversed(s, reversals)
            s.flush()
            created, existing, _ids = _store_items(s, pending, row_id)
            result.work_items_created, result.work_items_existing = created, existing
            stored = s.get(RemitFile, row_id)
            if stored is not None:
                stored.summary = {k: v for k, v in result.to_dict().items() if k not in ("errors", "warnings")}
    except KeyboardInterrupt:  # the transaction rolled back: nothing stored
        _release_interrupted(db_url, row_id, owner, errors)
        raise
    except Exception as exc:  # the transaction rolled back: nothing stored, the file is retryable
        result.work_items_created = result.work_items_existing = result.work_items_closed = 0
        return _failed(db_url, row_id, owner, result, errors, exc)
    if quarantined and not result.message:
        result.message = f"quarantined: {errors[0]}" if errors else "quarantined"
    say(f"{name}: {result.status}, {result.claims} claim(s), {len(result.therapy_denials)} therapy denial line(s), "
        f"{result.work_items_created} new work item(s)")
    return result


def _failed(db_url: str, row_id: str, owner: str, result: ImportResult, errors: list[str],
            exc: BaseException) -> ImportResult:
    """Mark the file failed and release its lease (a re-import retries it at once); the result says why."""
    message, result.failure_exit_code = _failure(exc, f"835 import of {result.filename}", retryable=True)
    result.status = "failed"
    result.message = message
    result.therapy_denials = []
    try:
        with session_scope(db_url) as s:
            _finish(s, row_id, owner, status="failed", errors=[*errors, message])
    except Exception as second:  # the database itself failed; the lease runs out on its own
        log.error("could not mark the 835 import of %s failed (%s)", result.filename, type(second).__name__,
                  exc_info=second if debugging() else None)
        result.message = f"{message}; the import record could not be updated (its lease expires by itself)"
    return result


def _release_interrupted(db_url: str, row_id: str, owner: str, errors: list[str]) -> None:
    """An import stopped by Ctrl-C/SIGTERM: mark it failed (retryable) so the next run need not wait for the lease."""
    try:
        with session_scope(db_url) as s:
            _finish(s, row_id, owner, status="failed", errors=[*errors, "interrupted before it finished; nothing stored"])
    except Exception as exc:  # the lease then runs out on its own
        log.error("could not release the interrupted 835 import (%s)", type(exc).__name__)


def _failure(exc: BaseException, what: str, *, retryable: bool = False) -> tuple[str, int]:
    """A failed import's one-line message and exit code; the log gets the exception's type only.

    Never its text (nor, unless PTGUARD_DEBUG is set, its traceback): a database error carries the statement's
    parameters, patient names among them. The message keeps the first line of an unexpected error's text.
    """
    if isinstance(exc, PtguardError):
        log.warning("%s failed: %s", what, type(exc).__name__, exc_info=exc if debugging() else None)
        return exc.one_line(), exc.exit_code
    log.error("%s failed unexpectedly: %s", what, type(exc).__name__, exc_info=exc if debugging() else None)
    first = (str(exc).splitlines() or [""])[0][:200]
    message = f"unexpected error ({type(exc).__name__}{': ' + first if first else ''}); nothing stored"
    return (f"{message}, the file can be imported again" if retryable else message), INTERNAL_ERROR


IN_PROGRESS_EXIT = 75  # EX_TEMPFAIL: another process is importing a file right now


def import_exit_code(results: list[ImportResult]) -> int:
    """0 ran (quarantined files included), 6 a file failed on the FHIR server, else the first failure's code
    (5 database, 74 unreadable file, 70 unexpected), 75 a file another process is importing, 2 when nothing at
    all could be read (README's table)."""
    failed = [r for r in results if r.status == "failed"]
    if failed:
        codes = [r.failure_exit_code or INTERNAL_ERROR for r in failed]
        return 6 if 6 in codes else codes[0]
    if any(r.status == IN_PROGRESS for r in results):
        return IN_PROGRESS_EXIT  # another process holds a file: nothing was done with it, try again later
    return 0 if any(r.readable for r in results) else 2


def _rejected(db_url: str, data: bytes, sha: str, name: str, message: str) -> ImportResult:
    with session_scope(db_url) as s:
        row = s.scalars(select(RemitFile).where(RemitFile.sha256 == sha)).first()
        if row is None:
            row = RemitFile(sha256=sha, control_key=None, filename=name[:300], raw=data, status="rejected",
                            errors=[message], summary={"claims": 0})
            s.add(row)
            s.flush()
        else:
            row.status = "rejected"
            row.errors = [message]
        row_id = row.id
    return ImportResult(filename=name, sha256=sha, status="rejected", remit_file_id=row_id, message=message,
                        errors=[message])


def _process(
    read: ReadResult,
    data: bytes,
    sha: str,
    name: str,
    result: ImportResult,
    *,
    fhir: FhirClient | None,
    index: ResourceIndex | None,
    today: date,
    systems: Sequence[str],
    payer_map: Path | None,
    say: Progress,
) -> tuple[list[_Pending], list[tuple[ClaimPayment, str | None]]]:
    matcher = ClaimMatcher(fhir=fhir, index=index, systems=systems) if (fhir or index) else None
    writer = _FhirWriter(fhir) if fhir is not None else None
    raw_ref = writer.document(data, sha, name) if writer is not None else None
    pending: list[_Pending] = []
    known: set[str] = set()  # the keys in `pending`, kept alongside it
    reversals: list[tuple[ClaimPayment, str | None]] = []
    total = read.claim_count
    done = 0
    seen_transactions: set[str] = set()
    for rem in read.remittances:
        ident = transaction_identity(rem)
        if ident in seen_transactions:
            # The same interchange/transaction twice in one file (a clearinghouse re-append): read once.
            result.duplicate_claims += len(rem.claims)
            result.claims -= len(rem.claims)
            result.warnings.append(
                f"segment {rem.segment_number} ST: duplicate of an earlier transaction in this file (ISA13 "
                f"{rem.interchange_control_number}, ST02 {rem.transaction_control_number}, TRN02 "
                f"{rem.trace_number or '-'}); its {len(rem.claims)} claim(s) are not counted or stored again")
            continue
        seen_transactions.add(ident)
        payer_name = rem.payer.name
        payer_id = payer_id_for(None, payer_name or "", payer_map=payer_map)
        responses: list[dict[str, Any]] = []
        matches: list[ClaimMatch | None] = []
        for n, claim in enumerate(rem.claims, start=1):
            cr = claim_response(rem, n, claim, raw_reference=raw_ref)
            if raw_ref is None:
                _source_extension(cr, sha, name)
            match = matcher.match(claim.patient_control_number) if matcher is not None else None
            if match is not None:
                if match.matched:
                    apply_match(cr, match)
                    result.matched += 1
                else:
                    result.unmatched.append(claim.patient_control_number)
            responses.append(cr)
            matches.append(match)
            done += 1
            if done % 500 == 0:
                say(f"{name}: mapped {done}/{total} claims")
        refs: list[str | None] = [None] * len(responses)
        if writer is not None:
            refs = writer.conditional(responses, "claim_responses")
            ids = [r.split("/", 1)[1] if r else str(cr["id"]) for r, cr in zip(refs, responses, strict=True)]
            pr = payment_reconciliation(rem, ids, raw_reference=raw_ref)
            writer.conditional([pr], "payment_reconciliations")
        for claim, cr, match, ref in zip(rem.claims, responses, matches, refs, strict=True):
            _collect(claim, cr, match, ref, rem, result, pending, known, reversals, payer_id=payer_id,
                     payer_name=payer_name, fhir_server=fhir.base_url if fhir else None, today=today)
    if writer is not None:
        result.fhir = writer.stats
    return pending, reversals


def _collect(
    claim: ClaimPayment,
    cr: dict[str, Any],
    match: ClaimMatch | None,
    ref: str | None,
    rem: Remittance,
    result: ImportResult,
    pending: list[_Pending],
    known: set[str],
    reversals: list[tuple[ClaimPayment, str | None]],
    *,
    payer_id: str,
    payer_name: str | None,
    fhir_server: str | None,
    today: date,
) -> None:
    if claim.paid > Decimal(0):
        result.paid += 1
    ccn = claim.payer_claim_control_number or "-"
    key_prefix = f"835|{ccn}|{claim.patient_control_number}"
    if claim.status == "22":
        result.reversals += 1
        reversals.append((claim, payer_name))
        return
    denial = decode(cr, payer_hint=payer_id)
    if denial.denied:
        result.denied += 1
    matched = match is not None and match.matched
    items = _line_items(
        denial, cr, key_prefix=key_prefix, payer_id=payer_id, payer_name=payer_name,
        patient_ref=match.patient_ref if match and match.matched else None,
        claim_ref=match.claim_ref if match and match.matched else None,
        control_number=claim.patient_control_number, cr_ref=ref, matched=matched, match=match,
        source="835", fhir_server=fhir_server, today=today,
    )
    for item in items:
        if item.key in known:  # listed by an earlier claim of this file
            result.warnings.append(f"claim {claim.patient_control_number}: line {item.key.rsplit('|', 1)[-1]} was "
                                   "already listed from an earlier claim of this file; duplicate, counted once")
            continue
        line = item.row["lines"][0]
        due = item.row["due_date"]
        result.therapy_denials.append(TherapyDenial(
            payer=payer_name or "unknown payer", payer_id=payer_id, claim=claim.patient_control_number,
            line=line.get("sequence"), code=str(line.get("code")),
            carcs=[f"{c['group']}-{c['code']}" if c.get("group") else str(c["code"])
                   for c in item.row["codes"] if c.get("kind") == "CARC"],
            category=denial.category, path=denial.path, due=due.isoformat() if due else None,
        ))
    pending.extend(items)
    known.update(item.key for item in items)
    if match is not None and not match.matched and not items:
        # Listed, never dropped: a claim ptguard could not tie to a chart waits on the worklist as `unmatched`.
        known.add(f"{key_prefix}|unmatched")
        pending.append(_Pending(key=f"{key_prefix}|unmatched", row={
            "source": "835", "fhir_server": fhir_server, "patient_ref": None,
            "patient_display": denial.patient_display, "claim_ref": None,
            "claim_control_number": claim.patient_control_number, "claim_response_ref": ref,
            "claim_response": cr, "payer_id": payer_id, "payer_name": payer_name,
            "lines": [{**ln.to_dict(), "sequence": ln.sequence} for ln in denial.lines],
            "codes": _reason_dicts(denial.claim_reasons), "category": "unmatched", "path": "none",
            "amount": None, "notice_date": denial.notice_date, "due_date": None,
            "deadline_rule": None, "status": "unmatched", "matched": False,
        }))


# ---------------------------------------------------------------------------- native ClaimResponses


def _business_id(resource: Mapping[str, Any] | None) -> str | None:
    """The first identifier system|value of a resource: the same on every server that holds a copy of it."""
    idents = (resource or {}).get("identifier")
    for ident in idents if isinstance(idents, list) else []:
        if isinstance(ident, dict) and isinstance(ident.get("value"), str) and ident["value"]:
            return f"{ident.get('system') or ''}|{ident['value']}"
    return None


def native_key_prefix(
    resource: dict[str, Any],
    index: ResourceIndex | None,
    *,
    ccn: str | None,
    cr_ref: str | None,
    claim_ref: str | None,
    control_number: str | None,
) -> str:
    """The work-item key of a native ClaimResponse's lines, so that a denial is listed once however it arrives.

    A ClaimResponse ptguard made from an 835 (it carries the remit-claim-key identifier) gets the 835 import's own key
    (`835|CLP07|CLP01`); any other is keyed by business identifiers (its own, and its Claim's), not by server ids,
    so the same denial read from a file and from a FHIR server is one item.
    """
    if _identifier(resource, REMIT_CLAIM_KEY) and control_number:
        return f"835|{ccn or '-'}|{control_number}"
    claim = index.resolve(resource.get("request"), resource) if index is not None else None
    own = ccn or _business_id(resource) or cr_ref or "-"
    return f"fhir|{own}|{_business_id(claim) or control_number or claim_ref or '-'}"


def ingest_claim_response(
    resource: dict[str, Any],
    *,
    db_url: str,
    today: date | None = None,
    index: ResourceIndex | None = None,
    fhir_server: str | None = None,
    payer_id: str | None = None,
    payer_map: Path | None = None,
) -> IngestResult:
    """Put a native FHIR ClaimResponse (or EOB) on the worklist: one work item per denied or reduced therapy line."""
    today = today or _today_default()
    insurer = resource.get("insurer")
    org = index.resolve(insurer, resource) if index is not None and insurer else None
    display = text(element(resource, "insurer").get("display")) or text((org or {}).get("name"))
    payer = payer_id or payer_id_for(org, display or "", payer_map=payer_map)
    denial = decode(resource, index=index, payer_hint=payer)
    cr_ref = (index.label(resource) if index is not None else None) or (
        f"{resource.get('resourceType')}/{resource['id']}" if isinstance(resource.get("id"), str) else None)
    claim_ref = denial.claim_reference if denial.claim_reference and "/" in denial.claim_reference else None
    ccn = _identifier(resource, PAYER_CLAIM_CONTROL_NUMBER)
    control_number = text(element(element(resource, "request"), "identifier").get("value"))
    key_prefix = native_key_prefix(resource, index, ccn=ccn, cr_ref=cr_ref, claim_ref=claim_ref,
                                   control_number=control_number)
    patient_ref = denial.patient_reference or ref_string(resource.get("patient"))
    items = _line_items(
        denial, resource, key_prefix=key_prefix, payer_id=payer, payer_name=display,
        patient_ref=patient_ref, claim_ref=claim_ref, control_number=control_number, cr_ref=cr_ref,
        matched=claim_ref is not None, match=None, source="fhir", fhir_server=fhir_server, today=today,
    )
    result = IngestResult(reference=cr_ref or denial.reference, denied=denial.denied)
    if items:
        with session_scope(db_url) as s:
            result.work_items_created, result.work_items_existing, result.item_ids = _store_items(s, items, None)
    return result
