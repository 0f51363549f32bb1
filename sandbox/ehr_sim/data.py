"""What the simulator shows, read from the FHIR server: patients with their encounters, and denied claims."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ptguard.denials.decode import decode
from ptguard.errors import PtguardError
from ptguard.fhir.client import FhirClient
from ptguard.fhir.refs import ResourceIndex

log = logging.getLogger("sandbox.ehr_sim")

FIXTURE_ID = "https://ptguard.dev/fixture-id"
CPT = "http://www.ama-assn.org/go/cpt"


def fixture_id(resource: dict[str, Any]) -> str | None:
    """The fixture slug of a resource (identifier system https://ptguard.dev/fixture-id), if any."""
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") == FIXTURE_ID and ident.get("value"):
            return str(ident["value"])
    return None


def patient_name(patient: dict[str, Any]) -> str:
    """'Given Family' from the first name (or the id)."""
    for name in patient.get("name") or []:
        if isinstance(name, dict):
            if name.get("text"):
                return str(name["text"])
            parts = [*(name.get("given") or []), name.get("family") or ""]
            text = " ".join(str(p) for p in parts if p)
            if text:
                return text
    return f"Patient/{patient.get('id')}"


def _ref_id(value: Any, resource_type: str) -> str | None:
    ref = value.get("reference") if isinstance(value, dict) else None
    if isinstance(ref, str) and ref.startswith(resource_type + "/"):
        return ref.split("/", 1)[1].split("/_history", 1)[0]
    if isinstance(ref, str) and f"/{resource_type}/" in ref:  # absolute reference
        return ref.rsplit(f"/{resource_type}/", 1)[1].split("/", 1)[0]
    return None


def _codes(concept: Any) -> list[str]:
    return [str(c["code"]) for c in (concept or {}).get("coding") or [] if isinstance(c, dict) and c.get("code")]


@dataclass
class EncounterRow:
    """One encounter on the schedule."""

    id: str
    fixture_id: str | None
    start: str | None
    status: str | None
    codes: list[str] = field(default_factory=list)
    claim_id: str | None = None
    billed: list[str] = field(default_factory=list)

    @property
    def is_therapy(self) -> bool:
        """A therapy visit: a CPT 97xxx procedure or claim line."""
        return any(c.startswith("97") for c in [*self.codes, *self.billed]) or not (self.codes or self.billed)


@dataclass
class PatientRow:
    """A patient with their coverage and encounters."""

    id: str
    name: str
    birth_date: str | None
    gender: str | None
    fixture_id: str | None
    payer: str | None = None
    encounters: list[EncounterRow] = field(default_factory=list)


def _search(client: FhirClient, resource_type: str, count: int) -> list[dict[str, Any]]:
    return client.search(resource_type, {"_count": str(count)})


def schedule(client: FhirClient) -> list[PatientRow]:
    """Every patient with coverage and encounters (newest first), from five searches run in parallel."""
    kinds = {"Patient": 200, "Encounter": 500, "Procedure": 1000, "Claim": 500, "Coverage": 200}
    with ThreadPoolExecutor(max_workers=len(kinds)) as pool:
        futures = {k: pool.submit(_search, client, k, n) for k, n in kinds.items()}
        found = {k: f.result() for k, f in futures.items()}
    patients: dict[str, PatientRow] = {}
    for p in found["Patient"]:
        pid = str(p.get("id"))
        patients[pid] = PatientRow(pid, patient_name(p), p.get("birthDate"), p.get("gender"), fixture_id(p))
    for cov in found["Coverage"]:
        beneficiary = _ref_id(cov.get("beneficiary"), "Patient")
        if beneficiary is not None and beneficiary in patients and cov.get("status", "active") == "active":
            pid = beneficiary
            payors = [p.get("display") for p in cov.get("payor") or [] if isinstance(p, dict) and p.get("display")]
            patients[pid].payer = payors[0] if payors else patients[pid].payer
    by_encounter: dict[str, list[str]] = {}
    for proc in found["Procedure"]:
        eid = _ref_id(proc.get("encounter"), "Encounter")
        if eid:
            by_encounter.setdefault(eid, []).extend(_codes(proc.get("code")))
    claims: dict[str, tuple[str, list[str]]] = {}
    for claim in found["Claim"]:
        billed: list[str] = []
        encounters: set[str] = set()
        for item in claim.get("item") or []:
            if not isinstance(item, dict):
                continue
            codes = _codes(item.get("productOrService"))
            mods = [m for concept in item.get("modifier") or [] for m in _codes(concept)]
            units = (item.get("quantity") or {}).get("value")
            for code in codes:
                billed.append(code + ("-" + "-".join(mods) if mods else "") + (f" ×{units:g}" if units else ""))
            for enc in item.get("encounter") or []:
                eid = _ref_id(enc, "Encounter")
                if eid:
                    encounters.add(eid)
        for eid in encounters:
            claims[eid] = (str(claim.get("id")), billed)
    for enc in found["Encounter"]:
        subject = _ref_id(enc.get("subject"), "Patient")
        if subject is None or subject not in patients:
            continue
        pid = subject
        eid = str(enc.get("id"))
        claim_id, billed = claims.get(eid, (None, []))
        patients[pid].encounters.append(
            EncounterRow(
                eid,
                fixture_id(enc),
                (enc.get("period") or {}).get("start"),
                enc.get("status"),
                sorted(set(by_encounter.get(eid, []))),
                claim_id,
                billed,
            )
        )
    for row in patients.values():
        row.encounters.sort(key=lambda e: e.start or "", reverse=True)
    return sorted(patients.values(), key=lambda p: (p.name.split()[-1] if p.name else "", p.name))


@dataclass
class DeniedClaim:
    """One denied claim for the billing worklist."""

    patient_id: str | None
    patient_name: str | None
    claim_id: str | None
    claim_response_id: str | None
    payer: str | None
    notice_date: str | None
    carcs: list[str]
    rarcs: list[str]
    reasons: list[str]
    amount: float | None
    category: str | None
    path: str | None
    why: str | None
    source: str  # "fhir" | "worklist" | "fhir+worklist"
    fixture_id: str | None = None
    due_date: str | None = None
    days_left: int | None = None
    lines: list[str] = field(default_factory=list)


def _denials_from_fhir(client: FhirClient, names: dict[str, str]) -> list[DeniedClaim]:
    responses = _search(client, "ClaimResponse", 500)
    claims = {str(c.get("id")): c for c in _search(client, "Claim", 500)}
    out: list[DeniedClaim] = []
    for cr in responses:
        claim_id = _ref_id(cr.get("request"), "Claim")
        bundle_entries = [cr] + ([claims[claim_id]] if claim_id in claims else [])
        try:
            denial = decode(cr, index=ResourceIndex(bundle_entries))
        except (PtguardError, ValueError, KeyError, TypeError) as exc:
            log.warning("ClaimResponse could not be decoded (%s)", type(exc).__name__)
            continue
        if not denial.denied:
            continue
        pid = _ref_id(cr.get("patient"), "Patient")
        reasons = []
        for r in [*denial.claim_reasons, *(r for ln in denial.denied_lines for r in ln.reasons)]:
            label = f"{r.kind} {(r.group + '-') if r.group and r.kind == 'CARC' else ''}{r.code}"
            text = f"{label}: {r.meaning}" if r.meaning else label
            if text not in reasons:
                reasons.append(text)
        out.append(
            DeniedClaim(
                patient_id=pid,
                patient_name=names.get(pid or "") or denial.patient_display,
                claim_id=claim_id,
                claim_response_id=str(cr.get("id")),
                payer=denial.payer_display,
                notice_date=denial.notice_date.isoformat() if denial.notice_date else None,
                carcs=denial.codes("CARC"),
                rarcs=denial.codes("RARC"),
                reasons=reasons,
                amount=denial.amount_at_stake,
                category=denial.category_label,
                path=denial.path,
                why=denial.why,
                source="fhir",
                fixture_id=fixture_id(cr),
                lines=[
                    f"{ln.code or '?'}{'-' + '-'.join(ln.modifiers) if ln.modifiers else ''} {ln.status}"
                    for ln in denial.denied_lines
                ],
            )
        )
    return out


def _denials_from_store(database_url: str, today: date) -> list[DeniedClaim]:
    from ptguard.remit.worklist import list_work_items

    out: list[DeniedClaim] = []
    for item in list_work_items(database_url, status="open", today=today):
        patient = item.get("patient") or {}
        claim = item.get("claim") or {}
        out.append(
            DeniedClaim(
                patient_id=_ref_id({"reference": patient.get("reference")}, "Patient"),
                patient_name=patient.get("display"),
                claim_id=_ref_id({"reference": claim.get("reference")}, "Claim"),
                claim_response_id=_ref_id({"reference": item.get("claim_response")}, "ClaimResponse"),
                payer=(item.get("payer") or {}).get("name"),
                notice_date=item.get("notice_date"),
                carcs=list(item.get("carcs") or []),
                rarcs=list(item.get("rarcs") or []),
                reasons=[
                    *(f"CARC {c}" for c in item.get("carcs") or []),
                    *(f"RARC {c}" for c in item.get("rarcs") or []),
                ],
                amount=item.get("amount"),
                category=item.get("category"),
                path=item.get("path"),
                why=None,
                source="worklist",
                due_date=item.get("due_date"),
                days_left=item.get("days_left"),
            )
        )
    return out


def denied_claims(
    client: FhirClient, *, database_url: str | None = None, today: date | None = None
) -> tuple[list[DeniedClaim], list[str]]:
    """Denied claims from the FHIR server's ClaimResponses plus the stored worklist (merged); and notes."""
    notes: list[str] = []
    names: dict[str, str] = {}
    try:
        names = {str(p.get("id")): patient_name(p) for p in _search(client, "Patient", 200)}
    except PtguardError as exc:
        notes.append(f"patients unavailable: {exc.one_line()}")
    rows: list[DeniedClaim] = []
    try:
        rows = _denials_from_fhir(client, names)
    except PtguardError as exc:
        notes.append(f"ClaimResponses unavailable: {exc.one_line()}")
    if database_url:
        try:
            stored = _denials_from_store(database_url, today or date.today())
        except Exception as exc:  # the stored worklist is optional here; say so and go on
            notes.append(f"stored worklist unavailable ({type(exc).__name__})")
            stored = []
        by_response = {r.claim_response_id: r for r in rows if r.claim_response_id}
        for item in stored:
            twin = by_response.get(item.claim_response_id) if item.claim_response_id else None
            if twin is not None:
                twin.source = "fhir+worklist"
                twin.due_date, twin.days_left = item.due_date, item.days_left
                continue
            if item.patient_id and not item.patient_name:
                item.patient_name = names.get(item.patient_id)
            rows.append(item)
    rows.sort(key=lambda r: (r.days_left if r.days_left is not None else 10_000, r.notice_date or "", r.claim_id or ""))
    return rows, notes
