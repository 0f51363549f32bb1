"""Turn a CDS check result into CDS Hooks 2.0 cards: one per distinct problem, critical first, no empty fields."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from ptguard.cds import CdsResult, DenialItem
from ptguard.fhir import codes
from ptguard.findings import SEVERITY_ORDER, Citation, Finding
from ptguard.rules.criteria_files import Criterion

CRITERIA_SYSTEM = "https://ptguard.dev/criteria"
OVERRIDE_SYSTEM = "https://ptguard.dev/cds/override-reason"
TOPIC_SYSTEM = "https://ptguard.dev/cds/topic"
MAX_SUMMARY = 139

OVERRIDE_REASONS: tuple[tuple[str, str], ...] = (
    ("documented-elsewhere", "Documented in a linked note not sent"),
    ("payer-contract-differs", "Payer contract differs"),
    ("will-correct", "Will correct before billing"),
    ("not-applicable", "Does not apply to this visit"),
)
DENIAL_OVERRIDE_REASONS: tuple[tuple[str, str], ...] = (
    ("already-appealed", "Appeal already filed"),
    ("billing-office", "Handled by the billing office"),
    ("not-pursuing", "Not pursuing this denial"),
)


@dataclass(frozen=True)
class CardOptions:
    """Settings that shape cards: where the SMART app launches and whether an all-clear card is sent."""

    smart_launch_url: str | None = None
    all_clear: bool = False


@dataclass
class IssuedCard:
    """A card's uuid and the criterion behind it, to be stored so feedback can be tied to the criterion."""

    uuid: str
    criterion_id: str
    payer_id: str | None


@dataclass
class CardSet:
    """The cards of one response and what to record about them."""

    cards: list[dict[str, Any]] = field(default_factory=list)
    issued: list[IssuedCard] = field(default_factory=list)


def _new_uuid() -> str:
    return str(uuid.uuid4())


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:—- ")
    return cut + "…"


def _lower_first(text: str) -> str:
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        return text[0].lower() + text[1:]
    return text


def _fix_parts(fix: str | None) -> tuple[str, str | None]:
    """The fix without its example, and the example (the engine appends `Example: “…”`)."""
    if not fix:
        return "", None
    head, sep, tail = fix.partition(" Example: ")
    example = tail.strip().strip('“”"') if sep else None
    return head.strip(), example or None


def _short_fix(fix: str) -> str:
    first = re.sub(r"\s*\([^)]*\)", "", fix).split(". ")[0].split("; ")[0].rstrip(".")
    return _lower_first(first)


def summary_for(finding: Finding, payer_name: str) -> str:
    """One precise sentence under 140 characters."""
    if finding.category != "documentation" and len(finding.message) <= MAX_SUMMARY:
        return finding.message.rstrip(".") if finding.message.endswith(".") else finding.message
    fix, _example = _fix_parts(finding.fix)
    first_word = finding.title.split(" ", 1)[0]
    head = finding.title if first_word in payer_name.split() else f"{payer_name}: {_lower_first(finding.title)}"
    if not fix:
        return _shorten(head, MAX_SUMMARY)
    if len(head) + 3 >= MAX_SUMMARY - 10:
        return _shorten(head, MAX_SUMMARY)
    return head + " — " + _shorten(_short_fix(fix), MAX_SUMMARY - len(head) - 3)


def _indicator(severity: str) -> str:
    return severity if severity in SEVERITY_ORDER else "info"


def _source(citation: Citation | None, fallback: Citation, topic: dict[str, str]) -> dict[str, Any]:
    cite = citation or fallback
    out: dict[str, Any] = {"label": cite.label(), "topic": topic}
    if cite.url:
        out["url"] = cite.url
    return out


def _override(reasons: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"system": OVERRIDE_SYSTEM, "code": code, "display": display} for code, display in reasons]


def _smart_link(options: CardOptions, label: str, app_context: dict[str, str]) -> list[dict[str, Any]]:
    if not options.smart_launch_url:
        return []
    return [
        {
            "label": label,
            "url": options.smart_launch_url,
            "type": "smart",
            "appContext": orjson.dumps(app_context).decode(),
        }
    ]


def _detail(finding: Finding, criterion: Criterion | None, payer_name: str, policy: Citation) -> str:
    fix, example = _fix_parts(finding.fix)
    cite = finding.citation or policy
    lines = [f"**What is missing:** {finding.message}"]
    why = criterion.checks if criterion else finding.title
    lines.append(f"**Why it matters:** {payer_name} expects this ({cite.label()}): {why}")
    quotes = [e for e in finding.evidence if e.text][:3]
    if quotes:
        lines.append(
            "**From the chart:**\n"
            + "\n".join(f"- {e.reference}: “{e.text}”" if e.is_quote else f"- {e.reference}: {e.text}" for e in quotes)
        )
    if fix:
        lines.append(f"**Fix:** {fix}")
    if example:
        lines.append(f"**Compliant example:** “{example}”")
    return "\n\n".join(lines)


# ---------------------------------------------------------------------------------------------- suggestions


def _modifier_coding(item: dict[str, Any], modifier: str) -> dict[str, str]:
    systems = [c.get("system") for c in codes.codings(item.get("modifier") or []) if c.get("system")]
    system = systems[0] if systems else (codes.CPT if modifier.isdigit() else codes.HCPCS)
    return {"system": str(system), "code": modifier}


def _items(claim: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in claim.get("item") or [] if isinstance(i, dict)]


def _item_code(item: dict[str, Any]) -> str | None:
    return codes.procedure_code(item.get("productOrService"))


def _add_modifiers(result: CdsResult, adds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`update` actions adding modifiers to Claim items; one action per Claim."""
    changed: dict[str, dict[str, Any]] = {}
    described: dict[str, list[str]] = {}
    billed = result.evaluation.visit.billed if result.evaluation else []
    for add in adds:
        code, modifier = str(add.get("code") or ""), str(add.get("modifier") or "")
        if not code or not modifier:
            continue
        lines = [b for b in billed if b.reference == add.get("line")] if add.get("line") else []
        lines = lines or [b for b in billed if b.code == code]
        for line in lines:
            original = result.claims.get(line.claim_reference)
            if original is None:
                continue
            claim = changed.setdefault(line.claim_reference, orjson.loads(orjson.dumps(original)))
            for item in _items(claim):
                if item.get("sequence") == line.sequence and _item_code(item) == line.code:
                    have = {c.get("code") for c in codes.codings(item.get("modifier") or [])}
                    if modifier not in have:
                        item.setdefault("modifier", []).append({"coding": [_modifier_coding(item, modifier)]})
                        described.setdefault(line.claim_reference, []).append(
                            f"add {modifier} to {code} (item {line.sequence})"
                        )
    return [
        {
            "type": "update",
            "description": f"{ref}: " + "; ".join(described[ref]),
            "resource": claim,
        }
        for ref, claim in changed.items()
        if described.get(ref)
    ]


def _set_units(result: CdsResult, finding: Finding) -> list[dict[str, Any]]:
    supported = finding.data.get("supported") or {}
    billed_by_code = finding.data.get("billed") or {}
    billed = result.evaluation.visit.billed if result.evaluation else []
    changed: dict[str, dict[str, Any]] = {}
    described: dict[str, list[str]] = {}
    for code, units in supported.items():
        if billed_by_code.get(code, 0) <= units:
            continue
        lines = [b for b in billed if b.code == code]
        if len(lines) != 1:
            continue  # several lines of one code: which to reduce is the biller's call
        line = lines[0]
        original = result.claims.get(line.claim_reference)
        if original is None:
            continue
        claim = changed.setdefault(line.claim_reference, orjson.loads(orjson.dumps(original)))
        for item in _items(claim):
            if item.get("sequence") == line.sequence and _item_code(item) == code:
                qty: dict[str, Any] = item["quantity"] if isinstance(item.get("quantity"), dict) else {}
                item["quantity"] = {**qty, "value": units}
                described.setdefault(line.claim_reference, []).append(
                    f"set {code} (item {line.sequence}) to {units} unit{'s' if units != 1 else ''}"
                )
    return [
        {"type": "update", "description": f"{ref}: " + "; ".join(described[ref]), "resource": claim}
        for ref, claim in changed.items()
        if described.get(ref)
    ]


def suggestions_for(result: CdsResult, finding: Finding) -> list[dict[str, Any]]:
    """Mechanical fixes as `update` actions on the Claim that carries the code."""
    actions: list[dict[str, Any]] = []
    label = ""
    if finding.id.startswith("units.") and finding.status == "missing":
        actions = _set_units(result, finding)
        label = "Bill the units the minutes support"
    elif isinstance(finding.data.get("add"), list):
        adds = [a for a in finding.data["add"] if isinstance(a, dict)]
        actions = _add_modifiers(result, adds)
        mods = sorted({str(a.get("modifier")) for a in adds if a.get("modifier")})
        label = f"Add {'/'.join(mods)} to the claim line"
    elif finding.id.startswith("ncci.pair") and finding.data.get("pairs") and "need 59" in finding.message:
        adds = [{"code": str(pair[1]), "modifier": "59"} for pair in finding.data["pairs"] if len(pair) == 2]
        actions = _add_modifiers(result, adds)
        label = "Add 59 to the column-2 code (only if the blocks were truly separate)"
    if not actions:
        return []
    return [
        {
            "label": label,
            "uuid": _new_uuid(),
            "isRecommended": not finding.id.startswith("ncci."),
            "actions": actions,
        }
    ]


# ---------------------------------------------------------------------------------------------- cards


def signing_cards(result: CdsResult, options: CardOptions) -> CardSet:
    """Cards of a signing check."""
    out = CardSet()
    ev = result.evaluation
    if ev is not None:
        payer_name = ev.payer.name
        criteria = {c.id: c for c in ev.payer.criteria}
        seen: set[str] = set()
        problems = sorted(result.problems, key=lambda f: SEVERITY_ORDER[f.severity])
        for finding in problems:
            if finding.id in seen:
                continue
            seen.add(finding.id)
            topic = {"system": CRITERIA_SYSTEM, "code": finding.id, "display": finding.title}
            card: dict[str, Any] = {
                "uuid": _new_uuid(),
                "summary": summary_for(finding, payer_name),
                "detail": _detail(finding, criteria.get(finding.id), payer_name, ev.payer.policy),
                "indicator": _indicator(finding.severity),
                "source": _source(finding.citation, ev.payer.policy, topic),
            }
            suggestions = suggestions_for(result, finding)
            if suggestions:
                card["suggestions"] = suggestions
                card["selectionBehavior"] = "at-most-one"
            card["overrideReasons"] = _override(OVERRIDE_REASONS)
            links = _smart_link(
                options,
                "Open the documentation check",
                {"view": "check", "encounter": result.encounter_reference or ""},
            )
            if links:
                card["links"] = links
            out.cards.append(card)
            out.issued.append(IssuedCard(card["uuid"], finding.id, ev.payer.payer))
        if not ev.visit.checked:
            _unchecked_card(result, out)
        elif not out.cards and options.all_clear and not billing_blockers(result):
            card = {
                "uuid": _new_uuid(),
                "summary": f"{payer_name}: 97530 documentation and billing meet every checked criterion",
                "indicator": "info",
                "source": _source(
                    None, ev.payer.policy, {"system": CRITERIA_SYSTEM, "code": "all-clear", "display": "All clear"}
                ),
            }
            out.cards.append(card)
            out.issued.append(IssuedCard(card["uuid"], "all-clear", ev.payer.payer))
    _billing_blocker_cards(result, out)
    _incomplete_card(result, out)
    return out


# Data-quality findings that leave a billed line's units unchecked, and the reason the card gives (no chart data).
BILLING_BLOCKERS: dict[str, str] = {
    "data-quality.bad-units": "the claim line's quantity is not a usable number of units",
    "data-quality.bad-claim-items": "the claim's lines (Claim.item) could not be read",
    "data-quality.implausible-minutes": "the recorded treatment minutes are not plausible",
    "data-quality.no-minutes": "no treatment minutes are recorded for this timed code",
}
_CODE_PREFIX = re.compile(r"^([A-Z0-9]{5})\b")
BILLED_CODE = "97530"


def billing_blockers(result: CdsResult) -> list[tuple[str, str, Finding]]:
    """(code, reason, finding) per distinct data problem that stops a billing check of a billed line."""
    ev = result.evaluation
    if ev is None:
        return []
    billed = {line.code for line in ev.visit.billed}
    out: list[tuple[str, str, Finding]] = []
    seen: set[tuple[str, str]] = set()
    for finding in [*ev.findings, *result.chart_notes]:
        reason = BILLING_BLOCKERS.get(finding.id)
        if reason is None:
            continue
        match = _CODE_PREFIX.match(finding.message)
        code = match.group(1) if match else BILLED_CODE
        if finding.id in ("data-quality.implausible-minutes", "data-quality.no-minutes") and code not in billed:
            continue  # minutes of a code that is not billed stop no billing check
        if (code, finding.id) in seen:
            continue
        seen.add((code, finding.id))
        out.append((code, reason, finding))
    return out


def _billing_blocker_cards(result: CdsResult, out: CardSet) -> None:
    ev = result.evaluation
    for code, reason, finding in billing_blockers(result):
        card: dict[str, Any] = {
            "uuid": _new_uuid(),
            "summary": _shorten(f"{code}: billed units could not be checked — {reason}", MAX_SUMMARY),
            "detail": (
                f"ptguard could not check the billed units of {code} against the treatment minutes because "
                f"{reason}. Correct the {'claim line' if 'claim' in reason else 'documented minutes'} "
                "and re-check before billing."
            ),
            "indicator": "warning",
            "source": {
                "label": "ptguard data quality",
                "topic": {"system": TOPIC_SYSTEM, "code": finding.id, "display": "Billed units not checked"},
            },
            "overrideReasons": _override(OVERRIDE_REASONS),
        }
        out.cards.append(card)
        out.issued.append(IssuedCard(card["uuid"], finding.id, ev.payer.payer if ev is not None else None))


def _unchecked_card(result: CdsResult, out: CardSet) -> None:
    """The encounter's data could not be read at all: say that nothing was checked (never an all-clear, never silence)."""
    ev = result.evaluation
    assert ev is not None
    card: dict[str, Any] = {
        "uuid": _new_uuid(),
        "summary": "97530 check not run: this encounter's data could not be read; re-check before billing",
        "detail": (
            "ptguard could not read this encounter's chart data (an element has a type or shape FHIR does not "
            "allow), so none of its documentation or billing criteria were checked. Ask your EHR administrator to "
            "look at the ptguard log, then re-check before billing."
        ),
        "indicator": "warning",
        "source": {
            "label": "ptguard data quality",
            "topic": {"system": TOPIC_SYSTEM, "code": "data-quality.malformed-data", "display": "Not checked"},
        },
    }
    out.cards.append(card)
    out.issued.append(IssuedCard(card["uuid"], "data-quality.malformed-data", ev.payer.payer))


def _incomplete_card(result: CdsResult, out: CardSet) -> None:
    if result.complete:
        return
    if result.evaluation is None and not result.notes:
        return
    messages = [n.message for n in result.notes][:8]
    # True for every way data goes missing (no answer in time, an error page, bad JSON, an unusable prefetch value);
    # which one it was is in the log, not on the card (ptguard is no port scanner for the caller).
    detail = "Some of the chart could not be read, so the cards above cover only what was available:\n\n"
    detail += "\n".join(f"- {m}" for m in messages) or "- the FHIR server gave no usable answer"
    if result.withheld:
        detail += "\n\n**Not checked** (their data did not arrive): " + ", ".join(sorted(set(result.withheld)))
    card: dict[str, Any] = {
        "uuid": _new_uuid(),
        "summary": "Check incomplete: part of the chart could not be read; re-check before billing",
        "detail": detail,
        "indicator": "info",
        "source": {
            "label": "ptguard data quality",
            "topic": {"system": TOPIC_SYSTEM, "code": "data-quality", "display": "Incomplete data"},
        },
    }
    out.cards.append(card)
    out.issued.append(IssuedCard(card["uuid"], "data-quality.incomplete", None))


def _denial_summary(item: DenialItem) -> str:
    what = ", ".join(item.codes) or "Therapy claim"
    when = f" (service {item.service_date.isoformat()})" if item.service_date else ""
    head = f"{what} denied by {item.payer_name}{when}"
    if item.due is not None:
        verb = {"resubmit": "corrected claim", "reopen": "reopening"}.get(item.path, "appeal")
        left = f"{item.days_left} days left" if item.days_left is not None and item.days_left >= 0 else "overdue"
        head += f": {verb} due {item.due.isoformat()} ({left})"
    elif item.deadline_problem:
        head += ": deadline not counted (setting error)"
    return _shorten(head, MAX_SUMMARY)


def _denial_detail(item: DenialItem) -> str:
    lines = [f"**Denial:** {item.category}" + (f" — codes {', '.join(item.reason_codes)}" if item.reason_codes else "")]
    if item.why:
        lines.append(f"**What it means:** {item.why}")
    if item.amount:
        lines.append(f"**At stake:** ${item.amount:,.2f}")
    if item.due is not None:
        rule = f" ({item.deadline_rule})" if item.deadline_rule else ""
        label = item.deadline_label or "Deadline"
        lines.append(f"**{label}:** due {item.due.isoformat()}{rule}")
    elif item.deadline_problem:
        lines.append(f"**Deadline:** {item.deadline_problem}")
    refs = [r for r in (item.claim_response, item.claim) if r]
    if refs:
        lines.append("**Records:** " + ", ".join(refs))
    return "\n\n".join(lines)


def denial_cards(result: CdsResult, options: CardOptions) -> CardSet:
    """One card per open denied therapy claim, soonest deadline first."""
    out = CardSet()
    for item in result.denials:
        urgent = item.days_left is not None and item.days_left <= 14
        app_context = (
            {"view": "appeal", "claimResponse": item.claim_response}
            if item.claim_response
            else {"view": "appeal", "workItem": item.work_item or ""}
        )
        card: dict[str, Any] = {
            "uuid": _new_uuid(),
            "summary": _denial_summary(item),
            "detail": _denial_detail(item),
            "indicator": "critical" if urgent else "warning",
            "source": {
                "label": f"{item.payer_name} remittance" if item.source == "fhir" else "ptguard denial worklist",
                "topic": {"system": TOPIC_SYSTEM, "code": "denial", "display": "Open therapy denial"},
            },
            "overrideReasons": _override(DENIAL_OVERRIDE_REASONS),
        }
        links = _smart_link(options, "Open the appeal", app_context)
        if links:
            card["links"] = links
        out.cards.append(card)
        out.issued.append(IssuedCard(card["uuid"], f"denial.{item.path}", item.payer_id))
    _incomplete_card(result, out)
    return out


def cards_for(result: CdsResult, options: CardOptions) -> CardSet:
    """The cards of a result, by service kind."""
    if result.service.kind == "denials":
        return denial_cards(result, options)
    return signing_cards(result, options)


def prune_empty(value: Any) -> Any:
    """Drop None, empty strings, lists and objects (CDS Hooks: never send them for absent optional fields)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(v, dict | list):
                v = prune_empty(v)
            if v is not None and v != "" and v != [] and v != {}:
                out[k] = v
        return out
    if isinstance(value, list):
        return [
            prune_empty(v) if isinstance(v, dict | list) else v
            for v in value
            if v is not None and v != "" and v != [] and v != {}
        ]
    return value
