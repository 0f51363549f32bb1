"""Write the appeal back to the chart: a DocumentReference holding the PDF and a Task with the due date."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ptguard.appeals.model import AppealLetter
from ptguard.appeals.scopes import Scopes
from ptguard.errors import FhirServerError
from ptguard.fhir.client import FhirClient

PTGUARD_CASE = "https://ptguard.dev/appeal-case"


@dataclass
class WritebackResult:
    """What was created on the server, and why anything was not."""

    document_reference: str | None = None
    task: str | None = None
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"document_reference": self.document_reference, "task": self.task, "skipped": self.skipped}


def document_reference(letter: AppealLetter, pdf: bytes, *, case_id: str | None = None) -> dict[str, Any]:
    """A DocumentReference with the packet as a base64 PDF, linked to the patient and the ClaimResponse."""
    doc: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "docStatus": "final",
        "type": {"text": "Payer appeal packet (letter and exhibits)"},
        "category": [{"text": "Billing correspondence"}],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "description": letter.subject,
        "content": [
            {
                "attachment": {
                    "contentType": "application/pdf",
                    "data": base64.b64encode(pdf).decode(),
                    "title": "appeal-packet.pdf",
                    "size": len(pdf),
                }
            }
        ],
        "context": {"related": [{"reference": letter.claim_response}]},
    }
    if letter.patient:
        doc["subject"] = {"reference": letter.patient}
    if case_id:
        doc["identifier"] = [{"system": PTGUARD_CASE, "value": case_id}]
    return doc


def task(letter: AppealLetter, *, document_ref: str | None, case_id: str | None = None) -> dict[str, Any]:
    """The appeal as a work item: focus = the ClaimResponse, due date in restriction.period.end."""
    resource: dict[str, Any] = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": {"text": "Submit payer appeal"},
        "description": letter.subject,
        "focus": {"reference": letter.claim_response},
        "authoredOn": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if letter.patient:
        resource["for"] = {"reference": letter.patient}
    if letter.deadline:
        resource["restriction"] = {"period": {"end": letter.deadline["due"]}}
        resource["note"] = [{"text": f"Due {letter.deadline['due']} under {letter.deadline['rule']}."}]
    if document_ref:
        resource["input"] = [{"type": {"text": "Appeal packet"}, "valueReference": {"reference": document_ref}}]
    if case_id:
        resource["identifier"] = [{"system": PTGUARD_CASE, "value": case_id}]
    return resource


def _created_ref(created: dict[str, Any], resource_type: str) -> str:
    rid = created.get("id")
    if not isinstance(rid, str) or not rid:
        raise FhirServerError(f"POST {resource_type}: the server's answer names no id")
    return f"{resource_type}/{rid}"


def writeback(
    client: FhirClient,
    letter: AppealLetter,
    pdf: bytes,
    *,
    scopes: Scopes | None,
    case_id: str | None = None,
    existing_document: str | None = None,
    existing_task: str | None = None,
) -> WritebackResult:
    """Create what the granted scopes allow (None = no SMART scopes to check, e.g. the CLI); say why not otherwise.

    Idempotent per case: what an earlier write-back created (`existing_document`, `existing_task`) is kept, not made
    again, and each create carries If-None-Exist on the case identifier, so a repeated or timed-out POST that the
    server did carry out returns the resource already made instead of a second copy.
    """
    result = WritebackResult(document_reference=existing_document, task=existing_task)
    only_once = f"identifier={PTGUARD_CASE}|{case_id}" if case_id else None
    if existing_document:
        pass
    elif scopes is not None and not scopes.can_create("DocumentReference"):
        result.skipped.append(
            "The PDF was not saved to the chart: the granted scopes do not include creating DocumentReference "
            "(patient/DocumentReference.c or user/DocumentReference.c). Download it instead, or relaunch with that scope."
        )
    else:
        try:
            created = client.create(document_reference(letter, pdf, case_id=case_id), if_none_exist=only_once)
            result.document_reference = _created_ref(created, "DocumentReference")
        except FhirServerError as exc:
            result.skipped.append(
                f"The FHIR server refused the DocumentReference ({exc.status or 'error'}): {exc.one_line()}"
            )
    if existing_task:
        pass
    elif scopes is not None and not scopes.can_create("Task"):
        result.skipped.append(
            "No Task was created: the granted scopes do not include creating Task (patient/Task.c or user/Task.c); "
            "the case and its due date are kept in ptguard's worklist."
        )
    else:
        try:
            created = client.create(
                task(letter, document_ref=result.document_reference, case_id=case_id), if_none_exist=only_once
            )
            result.task = _created_ref(created, "Task")
        except FhirServerError as exc:
            result.skipped.append(f"The FHIR server refused the Task ({exc.status or 'error'}): {exc.one_line()}")
    return result
