"""Decode a ClaimResponse / ExplanationOfBenefit into denied lines, reason codes, a category and a path."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

import orjson

from ptguard.errors import MALFORMED_DATA, InputError, debugging
from ptguard.fhir import codes
from ptguard.fhir.dates import parse_date
from ptguard.fhir.load import Resource, json_kind
from ptguard.fhir.refs import ResourceIndex, element, ref_string
from ptguard.findings import Finding, data_quality
from ptguard.rules.tables import table

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
EXT = "https://ptguard.dev/fhir/StructureDefinition/"
ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"
REVIEW_ACTION_SUFFIX = "extension-reviewAction"
X12_306 = "https://codesystem.x12.org/005010/306"
Path_ = Literal["appeal", "reopen", "resubmit", "none"]
# In order of preference when the totals carry several (paid to the patient only when nothing else says).
_PAID_CATEGORIES = ("benefit", "paidtoprovider", "payment", "paid", "paidtopatient")
_SUBMITTED_CATEGORIES = frozenset({"submitted"})
# The denial category (carc.yaml `categories`) of a claim the payer denied whose lines could not be read.
LINES_UNREADABLE = "lines-unreadable"
# The category of an adjudication ptguard could not read at all (see `decode_or_note`).
UNREADABLE = "unreadable"
_DENIAL_CATEGORIES = frozenset({"denialreason", "rejectreason", "adjustmentreason", "noncovered"})
_REVIEW_ACTIONS = {
    "A1": "certified",
    "A2": "partially certified",
    "A3": "not certified",
    "A4": "pended",
    "A6": "modified",
}


@dataclass(frozen=True)
class Reason:
    """One adjustment reason: CARC/RARC (or other) code, group code, amount and quantity."""

    system: str
    code: str
    group: str | None = None
    amount: float | None = None
    quantity: float | None = None
    meaning: str | None = None

    @property
    def kind(self) -> str:
        if self.system == codes.CARC:
            return "CARC"
        if self.system == codes.RARC:
            return "RARC"
        return "other"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"system": self.system, "code": self.code, "group": self.group}
        if self.amount is not None:
            out["amount"] = self.amount
        if self.quantity is not None:
            out["quantity"] = self.quantity
        if self.meaning:
            out["meaning"] = self.meaning
        return out


@dataclass
class DecodedLine:
    """One adjudicated line: what was billed, what was paid, and why not."""

    sequence: int | None
    code: str | None
    modifiers: tuple[str, ...]
    submitted: float | None
    paid: float | None
    status: Literal["denied", "reduced", "paid", "pended", "unknown"]
    reasons: list[Reason] = field(default_factory=list)
    review_action: str | None = None
    claim_item_reference: str | None = None
    units: float | None = None
    # How the file wrote a sequence that is not a whole number (shown instead of it), e.g. "abc".
    sequence_text: str | None = None

    @property
    def sequence_label(self) -> int | str:
        """The sequence to show: the number, else the value as written, else "?" (never None)."""
        if self.sequence is not None:
            return self.sequence
        return self.sequence_text or "?"

    def to_dict(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence_label,
            "code": self.code,
            "modifiers": list(self.modifiers),
            "status": self.status,
            "submitted": self.submitted,
            "paid": self.paid,
            "units": self.units,
            "reasons": [r.to_dict() for r in self.reasons],
            "review_action": self.review_action,
        }


@dataclass
class Denial:
    """A decoded adjudication: denied or not, which lines, the category and the recommended path."""

    reference: str
    resource_type: str
    patient_reference: str | None
    patient_display: str | None
    claim_reference: str | None
    payer_display: str | None
    notice_date: date | None
    outcome: str | None
    disposition: str | None
    lines: list[DecodedLine]
    claim_reasons: list[Reason]
    denied: bool
    category: str
    category_label: str
    path: Path_
    why: str
    # Parts of the adjudication that could not be read (items, adjudications, sequences), as findings.
    data_quality: list[Finding] = field(default_factory=list)
    # True when the payer's own signals say denied but no denied line could be read.
    lines_unreadable: bool = False

    @property
    def denied_lines(self) -> list[DecodedLine]:
        return [ln for ln in self.lines if ln.status in {"denied", "reduced"}]

    @property
    def amount_at_stake(self) -> float:
        total = 0.0
        for ln in self.denied_lines:
            if ln.submitted is not None:
                total += ln.submitted - (ln.paid or 0.0)
        return round(total, 2)

    def codes(self, kind: str | None = None) -> list[str]:
        seen: dict[str, None] = {}
        for r in [*self.claim_reasons, *(r for ln in self.lines for r in ln.reasons)]:
            if kind is None or r.kind == kind:
                seen.setdefault(r.code, None)
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        lines = self.denied_lines or self.lines
        return {
            "resource": self.reference,
            "denied": self.denied,
            "patient": self.patient_reference,
            "claim": self.claim_reference,
            "payer": self.payer_display,
            "notice_date": self.notice_date.isoformat() if self.notice_date else None,
            "outcome": self.outcome,
            "lines": [ln.to_dict() for ln in lines],
            "claim_reasons": [r.to_dict() for r in self.claim_reasons],
            "amount_at_stake": self.amount_at_stake,
            "category": self.category,
            "category_label": self.category_label,
            "path": self.path,
            "why": self.why,
            "lines_unreadable": self.lines_unreadable,
            "data_quality": [f.to_dict() for f in self.data_quality],
        }


# ----------------------------------------------------------------------------- code tables


def carc_table() -> dict[str, Any]:
    data: dict[str, Any] = table("carc", DATA_DIR)
    return data


def rarc_table() -> dict[str, Any]:
    data: dict[str, Any] = table("rarc", DATA_DIR)
    return data


def meaning(reason_system: str, code: str) -> str | None:
    """Plain-words meaning of a CARC, RARC or group code, when ptguard knows it."""
    if reason_system == codes.CARC:
        entry = carc_table()["codes"].get(code)
    elif reason_system == codes.RARC:
        entry = rarc_table()["codes"].get(code)
    elif reason_system == codes.GROUP:
        return str(table("group-codes", DATA_DIR)["codes"].get(code, "")) or None
    else:
        return None
    return str(entry["meaning"]) if entry else None


# ----------------------------------------------------------------------------- reading adjudications


def _str(value: Any) -> str | None:
    """A JSON string, else None (a number, list or object where a string belongs is read as absent)."""
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    """A JSON number (not true/false), else None."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The JSON objects of a list element, silently skipping anything else (for elements that only add detail)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _coding_codes(concept: Any) -> list[str]:
    """The string codes of a concept's codings."""
    return [c["code"] for c in codes.codings(concept) if isinstance(c.get("code"), str)]


def _amount(adj: dict[str, Any]) -> float | None:
    amount = adj.get("amount")
    if isinstance(amount, dict) and (value := _number(amount.get("value"))) is not None:
        return value
    return _number(adj.get("value"))


def _group_of(adj: dict[str, Any], problems: list[str] | None = None, where: str = "adjudication") -> str | None:
    notes = problems if problems is not None else []
    for ext in _objects(adj.get("extension"), f"{where}.extension", notes):
        if str(ext.get("url", "")).endswith(("adjudication-group", "adjustment-group")):
            value = ext.get("valueCodeableConcept") or ext.get("valueCoding")
            code = codes.code_in(value, (codes.GROUP,))
            if code:
                return code
            for found in _coding_codes(value):
                return found
    return codes.code_in(adj.get("reason"), (codes.GROUP,))


def _category_codes(adj: dict[str, Any]) -> set[str]:
    return {code.lower() for code in _coding_codes(adj.get("category"))}


def _reasons_from_adjudication(
    adj: dict[str, Any], problems: list[str] | None = None, where: str = "adjudication"
) -> list[Reason]:
    out: list[Reason] = []
    group = _group_of(adj, problems, where)
    quantity = _number(element(adj, "quantity").get("value"))
    for c in codes.codings(adj.get("reason")):
        system = codes.normalise_system(_str(c.get("system"))) or ""
        code = c.get("code")
        if not isinstance(code, str) or system == codes.GROUP:
            continue
        out.append(
            Reason(
                system,
                code.strip(),
                group,
                _amount(adj),
                quantity,
                meaning(system, code.strip()) or _str(c.get("display")),
            )
        )
    return out


def _remarks(
    holder: dict[str, Any], notes: dict[int, str], problems: list[str] | None = None, where: str = "extension"
) -> list[Reason]:
    out: list[Reason] = []
    for ext in _objects(holder.get("extension"), where, problems if problems is not None else []):
        if str(ext.get("url", "")).endswith("remark-code"):
            for c in codes.codings(ext.get("valueCodeableConcept") or ext.get("valueCoding")):
                code = c.get("code")
                if isinstance(code, str):
                    out.append(
                        Reason(codes.RARC, code, None, None, None, meaning(codes.RARC, code) or _str(c.get("display")))
                    )
    return out


def _review_action(item: dict[str, Any]) -> str | None:
    """Da Vinci PAS: the X12 306 review action code in an adjudication (or item) extension."""
    holders = [item, *_dicts(item.get("adjudication"))]
    for holder in holders:
        for ext in _dicts(holder.get("extension")):
            if not str(ext.get("url", "")).endswith(REVIEW_ACTION_SUFFIX):
                continue
            subs = ext.get("extension") if isinstance(ext.get("extension"), list) and ext["extension"] else [ext]
            for sub in _dicts(subs):
                for code in _coding_codes(sub.get("valueCodeableConcept") or sub.get("valueCoding")):
                    if code in _REVIEW_ACTIONS:
                        return code
    return None


def _sequence(item: dict[str, Any]) -> tuple[int | None, str | None]:
    """The item's sequence (itemSequence, else sequence) and, when it is not a whole number, its raw text."""
    for key in ("itemSequence", "sequence"):
        value = item.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value, None
    for key in ("itemSequence", "sequence"):
        value = item.get(key)
        if value is not None and not isinstance(value, list):
            text = value if isinstance(value, str) else repr(value)
            return None, text.strip()[:40] or "?"
    return None, None


def _line(
    item: dict[str, Any],
    claim_items: dict[int, dict[str, Any]],
    notes: dict[int, str],
    problems: list[str] | None = None,
    where: str = "item",
) -> DecodedLine:
    problems = problems if problems is not None else []
    seq, seq_text = _sequence(item)
    if seq_text is not None:
        problems.append(f"{where}.itemSequence {seq_text!r} is not a whole number; the line is shown as {seq_text!r}")
    claim_item = claim_items.get(seq) if seq is not None else None
    code = codes.procedure_code(item.get("productOrService"))
    modifiers: list[str] = _coding_codes(item.get("modifier"))
    units = None
    for ext in _objects(item.get("extension"), f"{where}.extension", problems):
        url = str(ext.get("url", ""))
        if url == EXT + "product-or-service" and not code:
            code = codes.procedure_code(ext.get("valueCodeableConcept") or ext.get("valueCoding"))
        elif url == EXT + "modifier":
            modifiers.extend(_coding_codes(ext.get("valueCodeableConcept") or ext.get("valueCoding")))
        elif url == EXT + "units-billed" and (value := _number(ext.get("valueDecimal"))) is not None:
            units = value
    if claim_item is not None:
        code = code or codes.procedure_code(claim_item.get("productOrService"))
        if not modifiers:
            modifiers = _coding_codes(claim_item.get("modifier"))
        if units is None:
            units = _number(element(claim_item, "quantity").get("value"))
    if units is None:
        units = _number(element(item, "quantity").get("value"))
    submitted = paid = None
    reasons: list[Reason] = []
    for n, adj in enumerate(_objects(item.get("adjudication"), f"{where}.adjudication", problems)):
        cats = _category_codes(adj)
        if cats & _SUBMITTED_CATEGORIES and submitted is None:
            submitted = _amount(adj)
        elif cats.intersection(_PAID_CATEGORIES) and paid is None:
            paid = _amount(adj)
        reasons.extend(_reasons_from_adjudication(adj, problems, f"{where}.adjudication[{n}]"))
    if submitted is None and claim_item is not None:
        submitted = _number(element(claim_item, "net").get("value"))
    reasons.extend(_remarks(item, notes))
    action = _review_action(item)
    status = _line_status(submitted, paid, reasons, action)
    return DecodedLine(
        seq, code, tuple(m.strip() for m in modifiers if m.strip()), submitted, paid, status, reasons, action, None, units, seq_text
    )


def _objects(value: Any, where: str, problems: list[str]) -> list[dict[str, Any]]:
    """The JSON objects of a FHIR list element; a non-list or a non-object entry is noted in `problems`."""
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f"{where} is {_kind(value)}, not a list; none of it could be read")
        return []
    out = []
    for i, entry in enumerate(value):
        if isinstance(entry, dict):
            out.append(entry)
        else:
            problems.append(f"{where}[{i}] is {_kind(entry)}, not an object; skipped")
    return out


def _kind(value: Any) -> str:
    """The JSON kind of a misshapen element, with the start of its text: `a string "x"`, `null`."""
    if value is None:
        return json_kind(value)
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return f"{json_kind(value)} {text[:30]}"


_DENIAL_WORDS = re.compile(
    r"\b(den(?:y|ied|ial)|reject(?:ed|ion)?|not (?:covered|payable|medically necessary)|non-?covered)\b", re.I
)


def _denial_signal(resource: Resource, outcome: str | None, claim_reasons: list[Reason]) -> str | None:
    """What, besides the lines, says the payer denied or cut the claim (outcome, disposition, totals, reasons)."""
    if outcome in {"error", "partial"}:
        return f"the outcome {outcome!r}"
    disposition = resource.get("disposition")
    if isinstance(disposition, str) and _DENIAL_WORDS.search(disposition):
        short = disposition if len(disposition) <= 90 else disposition[:90].rsplit(" ", 1)[0] + " …"
        return f'the disposition "{short}"'
    totals: dict[str, float] = {}
    total = resource.get("total")
    for t in total if isinstance(total, list) else []:
        if isinstance(t, dict) and (amount := _amount(t)) is not None:
            for cat in _category_codes(t):
                totals.setdefault(cat, amount)
    submitted = totals.get("submitted")
    paid = next((totals[c] for c in _PAID_CATEGORIES if c in totals), None)
    if submitted is not None and paid is not None and submitted > 0 and paid < submitted:
        return f"the totals ({paid:g} paid of {submitted:g} submitted)"
    carcs = [r for r in claim_reasons if r.kind == "CARC" and r.group != "PR"]
    if carcs:
        return f"the claim-level reason CARC {carcs[0].code}"
    return None


def _line_status(submitted: float | None, paid: float | None, reasons: list[Reason], action: str | None) -> Any:
    if action == "A3":
        return "denied"
    if action == "A2":
        return "reduced"
    if action == "A4":
        return "pended"
    provider_reasons = [r for r in reasons if r.kind == "CARC" and r.group != "PR" and _carc_path(r.code) != "none"]
    if paid is not None and submitted is not None:
        if paid <= 0 < submitted:
            return "denied"
        if paid < submitted and provider_reasons:
            return "reduced"
        return "paid"
    if provider_reasons:
        return "denied"
    if action == "A1":
        return "paid"
    return "unknown"


def _carc_path(code: str) -> str:
    entry = carc_table()["codes"].get(code)
    return str(entry.get("path", "appeal")) if entry else "appeal"


# ----------------------------------------------------------------------------- category and path


def _category_and_path(
    denial_reasons: list[Reason], outcome: str | None, payer_hint: str | None, review_actions: set[str]
) -> tuple[str, Path_, str]:
    carc = carc_table()
    rarc = rarc_table()
    order = [c["id"] for c in carc["categories"]]
    rarcs = [r for r in denial_reasons if r.kind == "RARC"]
    carcs = [r for r in denial_reasons if r.kind == "CARC"]
    unprocessable = [r for r in rarcs if rarc["codes"].get(r.code, {}).get("path") == "resubmit"]
    if unprocessable:
        code = unprocessable[0].code
        return (
            "unprocessable",
            "resubmit",
            (
                f"RARC {code}: {rarc['codes'][code]['meaning']}. An unprocessable claim has no appeal rights; "
                "fix what the remark codes point to and send a new claim."
            ),
        )
    if outcome == "error" and not carcs:
        return (
            "missing-information",
            "resubmit",
            "The payer returned the claim with errors instead of a decision; correct and resubmit it.",
        )
    found: list[tuple[int, str, Reason]] = []
    for r in carcs:
        entry = carc["codes"].get(r.code)
        cat = entry["category"] if entry else "other"
        if r.group == "PR" and cat == "patient-responsibility":
            continue
        found.append((order.index(cat) if cat in order else len(order), cat, r))
    for r in rarcs:
        entry = rarc["codes"].get(r.code)
        if entry and entry.get("category") in order:
            found.append((order.index(entry["category"]) + 0.5, entry["category"], r))  # type: ignore[arg-type]
    if not found and review_actions & {"A3", "A2"}:
        what = "not certified" if "A3" in review_actions else "partially certified"
        return "authorization", "appeal", (
            f"The prior-authorization review came back {what} (X12 306 review action); "
            "the decision is read from the adjudication even though the outcome says complete."
        )
    if not found:
        return (
            "other",
            "appeal",
            "The payer gave no reason code ptguard knows; read the remittance and the payer's letter.",
        )
    found.sort(key=lambda t: t[0])
    _, cat, reason = found[0]
    entry = carc["codes"].get(reason.code) if reason.kind == "CARC" else None
    path: Path_ = entry.get("path", "appeal") if entry else "appeal"
    label = f"{reason.kind} {reason.code}"
    what = reason.meaning or "no description on file"
    if cat == "patient-responsibility" or path == "none":
        return cat, "none", f"{label}: {what}. This is not a denial to contest."
    if path == "resubmit":
        if payer_hint == "medicare" and cat in {"modifier", "missing-information", "diagnosis"}:
            return (
                cat,
                "reopen",
                (
                    f"{label}: {what}. On a Medicare claim a clerical error is corrected through a reopening "
                    "(within one year, 42 CFR 405.980), not an appeal."
                ),
            )
        return cat, "resubmit", f"{label}: {what}. A billing error is fixed with a corrected claim, not an appeal."
    return (
        cat,
        "appeal",
        f"{label}: {what}. This is a coverage decision that an appeal can contest with the chart's evidence.",
    )


def decode(resource: Resource, *, index: ResourceIndex | None = None, payer_hint: str | None = None) -> Denial:
    """Decode a ClaimResponse or ExplanationOfBenefit; `index` lets the Claim fill in codes by item sequence."""
    rtype = resource.get("resourceType")
    if rtype not in {"ClaimResponse", "ExplanationOfBenefit"}:
        raise InputError(f"expected a ClaimResponse or ExplanationOfBenefit, got {rtype or 'no resourceType'}")
    ref = index.label(resource) if index else f"{rtype}/{resource.get('id', '?')}"
    claim_ref = ref_string(resource.get("request") if rtype == "ClaimResponse" else resource.get("claim"))
    claim = index.resolve(claim_ref, resource) if index and claim_ref else None
    problems: list[str] = []
    claim_items = {
        i["sequence"]: i
        for i in _objects(claim.get("item") if claim else None,
                          f"{index.label(claim) if index and claim else 'Claim'}.item", problems)
        if isinstance(i.get("sequence"), int) and not isinstance(i.get("sequence"), bool)
    }
    notes = {
        n["number"]: _str(n.get("text")) or ""
        for n in _dicts(resource.get("processNote"))
        if isinstance(n.get("number"), int)
    }
    items = _objects(resource.get("item"), f"{rtype}.item", problems)
    lines = [_line(it, claim_items, notes, problems, f"{rtype}.item[{n}]") for n, it in enumerate(items)]
    added = _objects(resource.get("addItem"), f"{rtype}.addItem", problems)
    lines += [_line(it, {}, notes, problems, f"{rtype}.addItem[{n}]") for n, it in enumerate(added)]
    claim_reasons: list[Reason] = []
    for n, adj in enumerate(_objects(resource.get("adjudication"), f"{rtype}.adjudication", problems)):
        claim_reasons.extend(_reasons_from_adjudication(adj, problems, f"{rtype}.adjudication[{n}]"))
    claim_reasons.extend(_remarks(resource, notes, problems, f"{rtype}.extension"))
    for err in _objects(resource.get("error"), f"{rtype}.error", problems):
        for c in codes.codings(err.get("code")):
            if isinstance(c.get("code"), str):
                claim_reasons.append(
                    Reason(
                        codes.normalise_system(_str(c.get("system"))) or "",
                        c["code"],
                        None,
                        None,
                        None,
                        _str(c.get("display")),
                    )
                )
    outcome = resource.get("outcome") if isinstance(resource.get("outcome"), str) else None
    denial_reasons = [
        *claim_reasons,
        *(r for ln in lines if ln.status in {"denied", "reduced", "unknown"} for r in ln.reasons),
    ]
    denied_lines = [ln for ln in lines if ln.status in {"denied", "reduced"}]
    actions = {ln.review_action for ln in lines if ln.review_action}
    category, path, why = _category_and_path(denial_reasons, outcome, payer_hint, actions)
    denied = bool(denied_lines) or outcome == "error" or category == "unprocessable"
    lines_unreadable = False
    unreadable = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    labels = {c["id"]: c["label"] for c in carc_table()["categories"]}
    if not denied_lines and problems and (signal := _denial_signal(resource, outcome, claim_reasons)):
        # The payer says denied, but which lines and why cannot be read: never "nothing to appeal".
        denied, lines_unreadable = True, True
        if not claim_reasons:
            category, path = LINES_UNREADABLE, "appeal"
        why = (
            f"{signal[0].upper()}{signal[1:]} says the claim was denied or cut, but its lines could not be read "
            f"({unreadable}): ptguard cannot tell which services were denied or why. Read the payer's remittance "
            "or letter (or ask for a corrected ClaimResponse) before deciding; the appeal clock may be running."
        )
    elif not denied:
        path, why = "none", "No line was denied or reduced: nothing to appeal."
        category = "none"
        if problems:
            why = (
                f"No readable line was denied or reduced, but part of the adjudication could not be read "
                f"({unreadable}): check the payer's remittance before concluding there is nothing to appeal."
            )
    patient = resource.get("patient")
    return Denial(
        reference=ref,
        resource_type=str(rtype),
        patient_reference=index.label(p) if index and (p := index.resolve(patient, resource)) else ref_string(patient),
        patient_display=_str(element(resource, "patient").get("display")),
        claim_reference=index.label(claim) if index and claim is not None else claim_ref,
        payer_display=_str(element(resource, "insurer").get("display")),
        notice_date=parse_date(resource.get("created")) or parse_date(element(resource, "payment").get("date")),
        outcome=outcome,
        disposition=resource.get("disposition") if isinstance(resource.get("disposition"), str) else None,
        lines=lines,
        claim_reasons=claim_reasons,
        denied=denied,
        category=category,
        category_label=labels.get(category, "No denial" if category == "none" else category),
        path=path,
        why=why,
        data_quality=[
            data_quality("unreadable-adjudication", msg, ref, severity="warning")
            for msg in problems
        ],
        lines_unreadable=lines_unreadable,
    )


def decode_or_note(
    resource: Resource, *, index: ResourceIndex | None = None, payer_hint: str | None = None
) -> Denial:
    """`decode`, but an adjudication whose data trips the reader is an undecided Denial with a data-quality note.

    The others of a batch go on. The log gets the exception's type only (the data is PHI); PTGUARD_DEBUG re-raises.
    """
    try:
        return decode(resource, index=index, payer_hint=payer_hint)
    except MALFORMED_DATA as exc:
        if debugging():
            raise
        log.warning("could not decode a %s (%s)", _str(resource.get("resourceType")) or "resource", type(exc).__name__)
        return unreadable_denial(resource, exc, index=index)


def unreadable_denial(resource: Resource, exc: BaseException, *, index: ResourceIndex | None = None) -> Denial:
    """The Denial of an adjudication that could not be read at all: neither denied nor cleared, and saying so."""
    rtype = _str(resource.get("resourceType")) or "ClaimResponse"
    rid = _str(resource.get("id"))
    ref = (index.label(resource) if index else None) or (f"{rtype}/{rid}" if rid else rtype)
    message = (
        f"{ref} could not be read: an element has the wrong JSON type or shape ({type(exc).__name__}); "
        "ptguard cannot tell whether or why it was denied"
    )
    return Denial(
        reference=ref,
        resource_type=rtype,
        patient_reference=ref_string(resource.get("patient")),
        patient_display=None,
        claim_reference=ref_string(resource.get("request") if rtype == "ClaimResponse" else resource.get("claim")),
        payer_display=_str(element(resource, "insurer").get("display")),
        notice_date=parse_date(resource.get("created")),
        outcome=_str(resource.get("outcome")),
        disposition=_str(resource.get("disposition")),
        lines=[],
        claim_reasons=[],
        denied=False,
        category=UNREADABLE,
        category_label="Could not be read",
        path="none",
        why=(
            f"{message}. Read the payer's remittance or letter (or ask for a corrected {rtype}) before concluding "
            "there is nothing to appeal; the appeal clock may be running."
        ),
        data_quality=[data_quality("unreadable-resource", message, ref, severity="warning")],
    )
