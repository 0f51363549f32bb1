"""Map a read 835 Remittance to FHIR R4 JSON: one ClaimResponse per CLP and one PaymentReconciliation."""

from __future__ import annotations

import hashlib
from datetime import date
from decimal import Decimal
from typing import Any

from ptguard.fhir.codes import C4BB_ADJUDICATION_DISCRIMINATOR, CARC, CPT, GROUP, HCPCS, RARC
from ptguard.remit.model import Adjustment, ClaimPayment, ProcedureCode, Remittance, ServiceLine

ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
PAYMENT_TYPE = "http://terminology.hl7.org/CodeSystem/payment-type"
EX_PAYMENT_TYPE = "http://terminology.hl7.org/CodeSystem/ex-paymenttype"

CLAIM_CONTROL_NUMBER = "https://ptguard.dev/claim-control-number"
PAYER_CLAIM_CONTROL_NUMBER = "https://ptguard.dev/payer-claim-control-number"
PAYER_MEMBER_ID = "https://ptguard.dev/payer-member-id"
PAYER_ID = "https://ptguard.dev/payer-id"
EFT_TRACE_NUMBER = "https://ptguard.dev/eft-trace-number"
REMIT_CLAIM_KEY = "https://ptguard.dev/remit-claim-key"
CLAIM_STATUS_SYSTEM = "https://ptguard.dev/x12/claim-status-code"
PLB_REASON_SYSTEM = "https://ptguard.dev/x12/provider-adjustment-reason-code"
PRODUCT_QUALIFIER_SYSTEM = "https://ptguard.dev/x12/product-service-id-qualifier"

_SD = "https://ptguard.dev/fhir/StructureDefinition/"
EXT_GROUP = _SD + "adjudication-group"
EXT_REMARK = _SD + "remark-code"
EXT_PRODUCT = _SD + "product-or-service"
EXT_ORIGINAL_PRODUCT = _SD + "original-product-or-service"
EXT_MODIFIER = _SD + "modifier"
EXT_UNITS_PAID = _SD + "units-paid"
EXT_UNITS_BILLED = _SD + "units-billed"
EXT_SERVICED_DATE = _SD + "serviced-date"
EXT_LINE_CONTROL = _SD + "line-control-number"
EXT_CLAIM_STATUS = _SD + "x12-claim-status"
EXT_SOURCE = _SD + "source-remittance"

CLAIM_STATUS: dict[str, str] = {
    "1": "Processed as primary",
    "2": "Processed as secondary",
    "3": "Processed as tertiary",
    "4": "Denied",
    "19": "Processed as primary, forwarded to additional payer(s)",
    "20": "Processed as secondary, forwarded to additional payer(s)",
    "21": "Processed as tertiary, forwarded to additional payer(s)",
    "22": "Reversal of previous payment",
    "23": "Not our claim, forwarded to additional payer(s)",
    "25": "Predetermination pricing only, no payment",
}

# CARCs that deny (rather than price) a service; a CAS with one gets the C4BB category DENIAL_CATEGORY.
DENIAL_CARCS = frozenset({
    "4", "5", "6", "11", "16", "18", "26", "27", "29", "31", "39", "49", "50", "55", "56", "58", "96", "97",
    "107", "109", "119", "146", "150", "151", "167", "170", "171", "183", "185", "197", "198", "204", "226",
    "234", "236", "252", "272", "B7", "B15", "A1",
})
# CARIN BB STU 1.1 code, as the team's fixtures use it; STU 2 renamed it `rejectreason` (readers accept both).
DENIAL_CATEGORY = "denialreason"
# Remark codes that make the claim unprocessable (return as unprocessable, no appeal rights).
UNPROCESSABLE_RARCS = frozenset({"MA130"})

# Modifiers that are CPT (two digits); everything alphabetic is HCPCS Level II (GP, GO, GN, CQ, CO, KX, X{EPSU}…).
def _modifier_system(modifier: str) -> str:
    return CPT if modifier.isascii() and modifier.isdigit() else HCPCS


def _money(value: Decimal) -> dict[str, Any]:
    return {"value": float(value), "currency": "USD"}


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def _concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)]}


def _category(system: str, code: str) -> dict[str, Any]:
    return _concept(system, code)


def procedure_coding(proc: ProcedureCode) -> dict[str, Any]:
    """SVC01/SVC06 composite → Coding: HC/HP 5-digit numeric → CPT, alpha-leading → HCPCS, else qualifier system."""
    code = proc.code
    if proc.qualifier in ("HC", "HP"):
        if len(code) == 5 and code[:4].isdigit():
            return _coding(CPT, code)
        if code[:1].isalpha():
            return _coding(HCPCS, code)
        return _coding(CPT, code)
    return _coding(f"{PRODUCT_QUALIFIER_SYSTEM}/{proc.qualifier}", code)


def _procedure_concept(proc: ProcedureCode) -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": [procedure_coding(proc)]}
    concept["text"] = " ".join([proc.code, *proc.modifiers])
    return concept


def _adjudication_category(adj: Adjustment) -> dict[str, Any]:
    if adj.group != "PR" and adj.reason in DENIAL_CARCS:
        return _category(C4BB_ADJUDICATION_DISCRIMINATOR, DENIAL_CATEGORY)
    if adj.group == "PR" and adj.reason == "1":
        return _category(ADJUDICATION, "deductible")
    if adj.group == "PR" and adj.reason == "3":
        return _category(ADJUDICATION, "copay")
    return _category(C4BB_ADJUDICATION_DISCRIMINATOR, "adjustmentreason")


def cas_adjudication(adj: Adjustment) -> dict[str, Any]:
    """One CAS triplet → adjudication: category, CARC reason, group extension, amount, quantity as value."""
    out: dict[str, Any] = {
        "extension": [{"url": EXT_GROUP, "valueCodeableConcept": _concept(GROUP, adj.group)}],
        "category": _adjudication_category(adj),
        "reason": _concept(CARC, adj.reason),
        "amount": _money(adj.amount),
    }
    if adj.quantity is not None:
        out["value"] = float(adj.quantity)
    return out


def _remark_ext(code: str) -> dict[str, Any]:
    return {"url": EXT_REMARK, "valueCodeableConcept": _concept(RARC, code)}


class _Notes:
    """processNote entries, numbered in order, one per (remark code, where)."""

    def __init__(self) -> None:
        self.notes: list[dict[str, Any]] = []

    def add(self, code: str, where: str) -> int:
        number = len(self.notes) + 1
        self.notes.append({"number": number, "type": "display", "text": f"RARC {code} ({where})"})
        return number


def _item(seq: int, line: ServiceLine, notes: _Notes) -> dict[str, Any]:
    ext: list[dict[str, Any]] = [{"url": EXT_PRODUCT, "valueCodeableConcept": _procedure_concept(line.procedure)}]
    for m in line.procedure.modifiers:
        ext.append({"url": EXT_MODIFIER, "valueCodeableConcept": _concept(_modifier_system(m), m)})
    if line.original_procedure is not None:
        ext.append({"url": EXT_ORIGINAL_PRODUCT,
                    "valueCodeableConcept": _procedure_concept(line.original_procedure)})
    if line.units is not None:
        ext.append({"url": EXT_UNITS_PAID, "valueQuantity": {"value": float(line.units)}})
    if line.original_units is not None:
        ext.append({"url": EXT_UNITS_BILLED, "valueQuantity": {"value": float(line.original_units)}})
    served = line.service_date or line.service_period_start
    if served is not None:
        ext.append({"url": EXT_SERVICED_DATE, "valueDate": served.isoformat()})
    if line.line_control_number:
        ext.append({"url": EXT_LINE_CONTROL, "valueString": line.line_control_number})
    note_numbers: list[int] = []
    for code in line.remark_codes:
        ext.append(_remark_ext(code))
        note_numbers.append(notes.add(code, f"LQ*HE on line {seq}, {line.procedure.code}"))
    adjudication: list[dict[str, Any]] = [
        {"category": _category(ADJUDICATION, "submitted"), "amount": _money(line.charge)},
        {"category": _category(ADJUDICATION, "benefit"), "amount": _money(line.paid)},
    ]
    if line.allowed_amount is not None:
        adjudication.append({"category": _category(ADJUDICATION, "eligible"), "amount": _money(line.allowed_amount)})
    if line.units is not None:
        adjudication.append({"category": _category(C4BB_ADJUDICATION_DISCRIMINATOR, "allowedunits"),
                             "value": float(line.units)})
    adjudication.extend(cas_adjudication(a) for a in line.adjustments)
    item: dict[str, Any] = {"extension": ext, "itemSequence": seq}
    if note_numbers:
        item["noteNumber"] = note_numbers
    item["adjudication"] = adjudication
    return item


def outcome(claim: ClaimPayment) -> str:
    """ClaimResponse.outcome: error (unprocessable / not our claim), partial (some lines denied), else complete."""
    if claim.status == "23" or UNPROCESSABLE_RARCS.intersection(claim.remark_codes):
        return "error"
    if claim.status == "4":
        return "complete"
    if any(line.paid == 0 and line.charge != 0 for line in claim.service_lines) or any(
        a.group != "PR" and a.reason in DENIAL_CARCS for line in claim.service_lines for a in line.adjustments
    ):
        return "partial"
    return "complete"


def claim_type(claim: ClaimPayment) -> str:
    """institutional for Medicare Part A (CLP06 MA), an inpatient MIA or revenue-code (NU) lines; else professional."""
    if claim.filing_indicator == "MA" or claim.mia_remark_codes or any(
        line.procedure.qualifier == "NU" for line in claim.service_lines
    ):
        return "institutional"
    return "professional"


def claim_key(rem: Remittance, index: int, claim: ClaimPayment) -> str:
    """A stable key for one CLP of one transaction (sender, ISA13, GS06, ST02, TRN02, CLP position, CLP01)."""
    parts = [rem.sender_id or "", rem.interchange_control_number, rem.group_control_number,
             rem.transaction_control_number, rem.trace_number or "", str(index), claim.patient_control_number]
    return "|".join(parts)


def resource_id(key: str) -> str:
    """A FHIR id derived from a key (64 characters at most, [A-Za-z0-9-])."""
    return "remit-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _patient(claim: ClaimPayment) -> dict[str, Any]:
    name = " ".join(p for p in (claim.patient_first_name, claim.patient_middle_name, claim.patient_last_name) if p)
    ref: dict[str, Any] = {"display": name or "patient not named in the 835"}
    member = claim.patient_member_id or claim.subscriber_member_id
    if member:
        ref["identifier"] = {"system": PAYER_MEMBER_ID, "value": member}
    return ref


def _insurer(rem: Remittance) -> dict[str, Any]:
    ref: dict[str, Any] = {"display": rem.payer.name or "payer not named in the 835"}
    if rem.payer.identifier:
        ref["identifier"] = {"system": PAYER_ID, "value": rem.payer.identifier}
    return ref


def _created(rem: Remittance) -> str:
    when: date | None = rem.production_date or rem.payment_date or rem.interchange_date
    return (when or date(1970, 1, 1)).isoformat()


def claim_response(rem: Remittance, index: int, claim: ClaimPayment, *,
                   raw_reference: str | None = None) -> dict[str, Any]:
    """One CLP loop → a FHIR R4 ClaimResponse dict."""
    key = claim_key(rem, index, claim)
    notes = _Notes()
    status_text = CLAIM_STATUS.get(claim.status, f"Claim status {claim.status}")
    ext: list[dict[str, Any]] = [
        {"url": EXT_CLAIM_STATUS, "valueCoding": _coding(CLAIM_STATUS_SYSTEM, claim.status, status_text)}
    ]
    if raw_reference:
        ext.append({"url": EXT_SOURCE, "valueReference": {"reference": raw_reference}})
    for code in claim.moa_remark_codes:
        ext.append(_remark_ext(code))
        notes.add(code, "MOA, claim level")
    for code in claim.mia_remark_codes:
        ext.append(_remark_ext(code))
        notes.add(code, "MIA, claim level")
    # The key's hash, not the key: token values with `|` or `,` cannot be searched (conditional create) reliably.
    identifiers = [{"system": REMIT_CLAIM_KEY, "value": resource_id(key)}]
    if claim.payer_claim_control_number:
        identifiers.insert(0, {"system": PAYER_CLAIM_CONTROL_NUMBER, "value": claim.payer_claim_control_number})
    res: dict[str, Any] = {
        "resourceType": "ClaimResponse",
        "id": resource_id(key),
        "extension": ext,
        "identifier": identifiers,
        "status": "active",
        "type": _concept(CLAIM_TYPE, claim_type(claim)),
        "use": "claim",
        "patient": _patient(claim),
        "created": _created(rem),
        "insurer": _insurer(rem),
        "request": {"identifier": {"system": CLAIM_CONTROL_NUMBER, "value": claim.patient_control_number}},
        "outcome": outcome(claim),
        "disposition": status_text,
    }
    items = [_item(n, line, notes) for n, line in enumerate(claim.service_lines, start=1)]
    if items:
        res["item"] = items
    if claim.adjustments:
        res["adjudication"] = [cas_adjudication(a) for a in claim.adjustments]
    total = [
        {"category": _category(ADJUDICATION, "submitted"), "amount": _money(claim.charge)},
        {"category": _category(ADJUDICATION, "benefit"), "amount": _money(claim.paid)},
    ]
    res["total"] = total
    if rem.payment_amount is not None:
        payment: dict[str, Any] = {
            "type": _concept(EX_PAYMENT_TYPE, "complete"),
            "amount": _money(claim.paid),
        }
        if rem.payment_date:
            payment["date"] = rem.payment_date.isoformat()
        if rem.trace_number:
            payment["identifier"] = {"system": EFT_TRACE_NUMBER, "value": rem.trace_number}
        res["payment"] = payment
    if notes.notes:
        res["processNote"] = notes.notes
    return res


def payment_reconciliation(rem: Remittance, claim_ids: list[str], *,
                           raw_reference: str | None = None) -> dict[str, Any]:
    """BPR/TRN/PLB of one transaction → a FHIR R4 PaymentReconciliation dict (claims and PLBs as detail)."""
    key = "|".join([rem.sender_id or "", rem.interchange_control_number, rem.group_control_number,
                    rem.transaction_control_number, rem.trace_number or "", "payment"])
    amount = rem.payment_amount if rem.payment_amount is not None else Decimal(0)
    if rem.credit_debit == "D":
        amount = -amount
    details: list[dict[str, Any]] = []
    for claim, cid in zip(rem.claims, claim_ids, strict=True):
        details.append({
            "identifier": {"system": CLAIM_CONTROL_NUMBER, "value": claim.patient_control_number},
            "type": _concept(PAYMENT_TYPE, "payment"),
            "request": {"identifier": {"system": CLAIM_CONTROL_NUMBER, "value": claim.patient_control_number}},
            "response": {"reference": f"ClaimResponse/{cid}"},
            "amount": _money(claim.paid),
        })
    for plb in rem.provider_adjustments:
        detail: dict[str, Any] = {
            "type": {"coding": [_coding(PAYMENT_TYPE, "adjustment"), _coding(PLB_REASON_SYSTEM, plb.reason)]},
            # PLB amounts reduce the payment when positive; a detail amount is what it adds to the payment.
            "amount": _money(-plb.amount),
        }
        if plb.reference:
            detail["identifier"] = {"system": PLB_REASON_SYSTEM + "/" + plb.reason, "value": plb.reference}
        if plb.fiscal_period_end:
            detail["date"] = plb.fiscal_period_end.isoformat()
        details.append(detail)
    res: dict[str, Any] = {
        "resourceType": "PaymentReconciliation",
        "id": resource_id(key),
    }
    if raw_reference:
        res["extension"] = [{"url": EXT_SOURCE, "valueReference": {"reference": raw_reference}}]
    res["identifier"] = [{"system": REMIT_CLAIM_KEY, "value": resource_id(key)}]
    if rem.trace_number:
        res["identifier"].append({"system": EFT_TRACE_NUMBER, "value": rem.trace_number})
    res.update({
        "status": "active",
        "created": _created(rem),
        "paymentIssuer": _insurer(rem),
        "outcome": "complete",
        "disposition": f"835 payment {rem.payment_method or ''} {rem.trace_number or ''}".strip(),
        "paymentDate": (rem.payment_date or rem.production_date or rem.interchange_date or date(1970, 1, 1))
        .isoformat(),
        "paymentAmount": _money(amount),
    })
    if rem.trace_number:
        res["paymentIdentifier"] = {"system": EFT_TRACE_NUMBER, "value": rem.trace_number}
    if details:
        res["detail"] = details
    return res


def remittance_to_fhir(rem: Remittance, *, raw_reference: str | None) -> list[dict[str, Any]]:
    """A Remittance → its ClaimResponses (file order) followed by one PaymentReconciliation."""
    responses = [claim_response(rem, n, c, raw_reference=raw_reference) for n, c in enumerate(rem.claims, start=1)]
    ids = [str(r["id"]) for r in responses]
    return [*responses, payment_reconciliation(rem, ids, raw_reference=raw_reference)]
