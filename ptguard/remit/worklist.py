"""The denial worklist: stored work items as plain dicts, sorted by days left (overdue first), and status changes."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import defer

from ptguard.errors import InputError, NotFoundError
from ptguard.store.db import session_scope
from ptguard.store.models import WorkItem

STATUSES = ("open", "unmatched", "in-progress", "appealed", "resolved", "reversed", "dismissed")


def _carc_labels(codes: list[Any]) -> list[str]:
    out: list[str] = []
    for c in codes or []:
        if isinstance(c, dict) and c.get("kind") == "CARC":
            label = f"{c['group']}-{c['code']}" if c.get("group") else str(c.get("code"))
            if label not in out:
                out.append(label)
    return out


def item_dict(item: WorkItem, *, today: date) -> dict[str, Any]:
    """One work item in the shape of schemas/worklist-output.schema.json (an entry of `items`)."""
    days_left = (item.due_date - today).days if item.due_date else None
    remarks = [str(c.get("code")) for c in item.codes or [] if isinstance(c, dict) and c.get("kind") == "RARC"]
    return {
        "id": item.id,
        "status": item.status,
        "source": item.source,
        "matched": item.matched,
        "patient": {"reference": item.patient_ref, "display": item.patient_display},
        "claim": {"reference": item.claim_ref, "control_number": item.claim_control_number},
        "claim_response": item.claim_response_ref,
        "fhir_server": item.fhir_server,
        "payer": {"id": item.payer_id, "name": item.payer_name},
        "lines": list(item.lines or []),
        "carcs": _carc_labels(item.codes),
        "rarcs": list(dict.fromkeys(remarks)),
        "codes": list(item.codes or []),
        "category": item.category,
        "path": item.path,
        "amount": item.amount,
        "notice_date": item.notice_date.isoformat() if item.notice_date else None,
        "due_date": item.due_date.isoformat() if item.due_date else None,
        "days_left": days_left,
        "overdue": days_left is not None and days_left < 0,
        "deadline_rule": item.deadline_rule,
        "case_id": item.case_id,
        "created_at": item.created_at.isoformat(),
    }


def _sort_key(entry: dict[str, Any]) -> tuple[int, int, str, str]:
    days = entry["days_left"]
    return (0 if days is not None else 1, days if days is not None else 0, entry["created_at"], entry["id"])


def list_work_items(
    db_url: str, *, status: str | None = None, today: date, exclude: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Work items (all, or of one status, less those of the `exclude` statuses), sorted by days left: overdue first,
    items without a due date last. The stored ClaimResponse JSON is not read (get_work_item has it)."""
    if status is not None and status not in STATUSES:
        raise InputError(f"unknown work item status {status!r} (one of: {', '.join(STATUSES)})")
    with session_scope(db_url) as s:
        query = select(WorkItem).options(defer(WorkItem.claim_response))
        if status is not None:
            query = query.where(WorkItem.status == status)
        if exclude:
            query = query.where(WorkItem.status.not_in(exclude))
        entries = [item_dict(item, today=today) for item in s.scalars(query)]
    return sorted(entries, key=_sort_key)


def get_work_item(db_url: str, item_id: str, *, today: date) -> dict[str, Any]:
    """One work item with the stored ClaimResponse; NotFoundError when there is none with that id."""
    with session_scope(db_url) as s:
        item = s.get(WorkItem, item_id)
        if item is None:
            raise NotFoundError(f"no work item {item_id!r}")
        entry = item_dict(item, today=today)
        entry["claim_response_resource"] = item.claim_response
    return entry


def set_status(db_url: str, item_id: str, status: str, *, case_id: str | None = None) -> None:
    """Move a work item to another status (and optionally tie it to its appeal case)."""
    if status not in STATUSES:
        raise InputError(f"unknown work item status {status!r} (one of: {', '.join(STATUSES)})")
    with session_scope(db_url) as s:
        item = s.get(WorkItem, item_id)
        if item is None:
            raise NotFoundError(f"no work item {item_id!r}")
        item.status = status
        if case_id is not None:
            item.case_id = case_id
