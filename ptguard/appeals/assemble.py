"""Assemble an appeal letter from the chart: arguments chosen by the denial, every factual sentence sourced."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound

from ptguard.appeals.exhibits import build_exhibits
from ptguard.appeals.facts import (
    FACT_MARK,
    GAP_MARK,
    SEP,
    Fact,
    Gap,
    MeasureTrend,
    VisitFacts,
    fact,
    long_date,
    measure_trends,
    money,
    visit_facts,
)
from ptguard.appeals.gather import AppealSource
from ptguard.appeals.model import AppealLetter, Paragraph, Sentence
from ptguard.denials.deadlines import (
    Deadline,
    canonical_level,
    compute_deadline,
    is_later_level,
    payer_type,
    previous_level,
)
from ptguard.errors import InputError
from ptguard.fhir.refs import ref_string
from ptguard.remit.to_fhir import PAYER_CLAIM_CONTROL_NUMBER

TEMPLATES = Path(__file__).resolve().parent / "templates"
LEVEL_WORDS = {
    "redetermination": "request for redetermination",
    "reconsideration": "request for reconsideration",
    "reopening": "request to reopen the claim",
    "internal-appeal": "first-level appeal",
    "external-review": "request for external review",
    "plan-reconsideration": "request for reconsideration by the plan",
    "plan-appeal": "plan appeal",
}


def _finalize(value: Any) -> Any:
    if isinstance(value, Fact | Gap):
        return value.marked()
    return "" if value is None else value


def _join(items: list[Fact], sep: str = ", ", last: str = " and ") -> Fact:
    items = [i for i in items if i]
    if not items:
        return Fact("", ())
    words = [i.value for i in items]
    text = words[0] if len(words) == 1 else sep.join(words[:-1]) + last + words[-1]
    return Fact(text, tuple(dict.fromkeys(r for i in items for r in i.refs)))


@cache
def environment() -> Environment:
    """The Jinja2 environment of the letter templates (plain text out; HTML escaping happens at render)."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=False,  # noqa: S701 - plain-text output, escaped when it is put into HTML
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=StrictUndefined,
        finalize=_finalize,
        keep_trailing_newline=True,
    )
    env.filters["join_facts"] = _join
    env.filters["cite"] = lambda text, *refs: fact(text, *refs)
    env.globals["gap"] = Gap
    return env


@dataclass
class PatientFacts:
    """Who the appeal is for."""

    name: Fact | Gap
    member_id: Fact | Gap
    birth_date: Fact | Gap


def _patient(src: AppealSource) -> PatientFacts:
    index = src.builder.index
    v = src.visits[0]
    patient = index.resolve(v.patient_reference)
    name: Fact | Gap = fact(v.patient_name, v.patient_reference) if v.patient_name else Gap("patient name")
    member: Fact | Gap = Gap("member ID")
    cov = index.resolve(v.coverage_reference) if v.coverage_reference else None
    if cov and isinstance(cov.get("subscriberId"), str):
        member = fact(cov["subscriberId"], v.coverage_reference)
    elif cov:
        for ident in cov.get("identifier") or []:
            if isinstance(ident, dict) and "member" in str(ident.get("system", "")) and ident.get("value"):
                member = fact(ident["value"], v.coverage_reference)
    dob: Fact | Gap = Gap("date of birth")
    if patient and isinstance(patient.get("birthDate"), str):
        dob = fact(patient["birthDate"], v.patient_reference)
    return PatientFacts(name, member, dob)


def _provider(src: AppealSource) -> Fact | Gap:
    claim = src.claim or {}
    prov = claim.get("provider")
    org = src.builder.index.resolve(prov, claim) if prov else None
    claim_ref = src.denial.claim_reference
    if org and isinstance(org.get("name"), str):
        return fact(org["name"], src.builder.index.label(org))
    if isinstance(prov, dict) and prov.get("display"):
        return fact(prov["display"], claim_ref)
    return Gap("the practice's name")


def _claim_number(src: AppealSource) -> Fact | Gap:
    """The claim number a payer knows, never a server's own id.

    In order: the payer's claim control number on the ClaimResponse (CLP07), the claim number it answers
    (request.identifier, CLP01), the Claim's own identifiers (the sandbox's fixture-id last), and only then the id
    of the Claim reference (meaningful when the chart came from files whose ids are the claim numbers).
    """
    cr = src.claim_response
    request = cr.get("request")
    asked = request.get("identifier") if isinstance(request, dict) else None
    candidates = [
        *(i for i in _identifiers(cr) if i.get("system") == PAYER_CLAIM_CONTROL_NUMBER),
        *([asked] if isinstance(asked, dict) else []),
        *sorted(_identifiers(src.claim or {}), key=lambda i: "fixture-id" in str(i.get("system", ""))),
    ]
    for ident in candidates:
        if isinstance(ident.get("value"), str) and ident["value"]:
            return fact(ident["value"], src.denial.reference)
    if src.denial.claim_reference:
        return fact(src.denial.claim_reference.split("/")[-1], src.denial.claim_reference)
    return Gap("the payer's claim number")


def _identifiers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    found = resource.get("identifier")
    return [i for i in found if isinstance(i, dict)] if isinstance(found, list) else []


def _deadline(
    src: AppealSource,
    today: date,
    level: str | None,
    contract: dict[str, dict[str, int]] | None,
    decision_date: date | None = None,
) -> Deadline | None:
    d = src.denial
    if d.notice_date is None or d.path in ("none", "resubmit"):
        return None
    if d.path == "reopen" and payer_type(src.payer_id) == "medicare" and level is None:
        level = "reopening"
    ptype = payer_type(src.payer_id)
    if decision_date is not None and decision_date > today:
        raise InputError(f"the decision date {decision_date.isoformat()} is in the future (today is {today.isoformat()})")
    if decision_date is not None and decision_date < d.notice_date:
        raise InputError(
            f"the decision date {decision_date.isoformat()} is before the denial notice ({d.notice_date.isoformat()})"
        )
    if decision_date is not None and not (level and is_later_level(ptype, level, d.notice_date)):
        raise InputError(
            "a decision date is for a later appeal level, which runs from the decision before it; "
            f"the {canonical_level(level) if level else 'first level'} runs from the denial notice"
        )
    start = decision_date or d.notice_date
    return compute_deadline(src.payer_id, start, today=today, level=level, contract=contract)


def _context(src: AppealSource, today: date, deadline: Deadline | None, labels: dict[str, str]) -> dict[str, Any]:
    d = src.denial
    denied_codes = {ln.code for ln in d.denied_lines if ln.code}
    visits: list[VisitFacts] = [visit_facts(ev, denied_codes) for ev in src.evaluations]
    v0 = src.visits[0]
    trends: list[MeasureTrend] = measure_trends(v0.measures)
    reasons = []
    for r in [*d.claim_reasons, *(r for ln in d.denied_lines for r in ln.reasons)]:
        text = (
            f"{r.kind} {r.code}" + (f" (group {r.group})" if r.group else "") + (f": {r.meaning}" if r.meaning else "")
        )
        if text not in reasons:
            reasons.append(text)
    lines = [
        fact(
            f"{ln.code or f'line {ln.sequence_label} (its service code is not on the claim)'}"
            + (f" × {ln.units:g} unit(s)" if ln.units is not None else "")
            + (f", billed {money(ln.submitted)}" if ln.submitted is not None else ""),
            d.reference,
        )
        for ln in d.denied_lines
    ]
    policy = src.payer.policy
    policy_fact = fact(
        f"{policy.source} ({policy.number})" if policy.number else policy.source, f"policy:{src.payer_id}"
    )
    plan = None
    for p in v0.plans:
        text = f"the plan of care for {long_date(p.start)} to {long_date(p.end)}"
        if p.certified:
            text += f", certified on {long_date(p.certified)}"
        if p.planned_codes:
            text += f", which lists {', '.join(p.planned_codes)}"
        plan = fact(text, p.reference)
    referral = None
    for ref in v0.referrals:
        referral = fact(
            f"a referral from {ref.requester or 'the referring clinician'} dated {long_date(ref.authored)}",
            ref.reference,
        )
    dl: dict[str, Any] | None = None
    if deadline is not None:
        dl = {
            "due": fact(long_date(deadline.due), "rule:deadlines", d.reference),
            "rule": fact(deadline.rule, "rule:deadlines"),
            "label": deadline.label,
            "words": LEVEL_WORDS.get(deadline.level, deadline.label.lower()),
            "days_left": deadline.days_left,
            "basis": fact(deadline.basis, "rule:deadlines", d.reference),
        }
    clinicians = [vf.clinician for vf in visits if vf.clinician]
    return {
        "today": long_date(today),
        "payer": {
            "id": src.payer_id,
            "name": fact(d.payer_display or v0.payer_name or src.payer.name, d.reference),
            "policy": policy_fact,
            "policy_url": policy.url,
        },
        "denial": {
            "reference": d.reference,
            "notice_date": fact(long_date(d.notice_date), d.reference)
            if d.notice_date
            else Gap("date of the payer's notice"),
            "codes": fact("; ".join(reasons), d.reference) if reasons else Gap("the payer's reason codes"),
            "lines": _join(lines),
            "line_count": len(lines),
            "amount": fact(money(d.amount_at_stake), d.reference),
            "claim_number": _claim_number(src),
            "category": d.category,
            "category_label": d.category_label,
            "path": d.path,
            "codes_list": d.codes(),
        },
        "patient": _patient(src),
        "provider": _provider(src),
        "clinician": clinicians[0] if clinicians else Gap("treating therapist's name"),
        "visits": visits,
        "trends": trends,
        "measure_facts": [t.as_fact() for t in trends],
        "changed_measures": [t.as_fact() for t in trends if t.changed],
        "goals": [
            fact(f"{g.text}" + (f" (target {long_date(g.due)})" if g.due else ""), g.reference) for g in v0.goals
        ],
        "plan": plan,
        "referral": referral,
        "deadline": dl,
        "exhibit": labels,
        "diagnoses": fact(", ".join(v0.diagnoses), *(b.claim_reference for b in v0.billed[:1]))
        if v0.diagnoses
        else None,
        "problems": sorted({p for vf in visits for p in vf.problems}),
        "payer_type": payer_type(src.payer_id),
    }


def _parse(rendered: str) -> list[Paragraph]:
    paragraphs: list[Paragraph] = []
    current: Paragraph | None = None
    for raw in rendered.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("##"):
            heading = line.lstrip("#").strip() or None
            current = Paragraph(f"p{len(paragraphs) + 1}", heading)
            paragraphs.append(current)
            continue
        if current is None:
            current = Paragraph("p1", None)
            paragraphs.append(current)
        refs: list[str] = []
        for m in FACT_MARK.finditer(line):
            refs.extend(r for r in m.group(1).split(SEP) if r)
        gaps = [m.group(1) for m in GAP_MARK.finditer(line)]
        text = FACT_MARK.sub(lambda m: m.group(2), line)
        text = GAP_MARK.sub(lambda m: f"[GAP: {m.group(1)}]", text)
        text = " ".join(text.split())
        sources = list(dict.fromkeys(refs))
        chart = [s for s in sources if not s.startswith(("policy:", "rule:"))]
        kind = "fact" if chart else "gap" if gaps else "citation" if sources else "argument"
        current.sentences.append(
            Sentence(f"{current.id}.s{len(current.sentences) + 1}", text, sources, gaps, kind=kind)  # type: ignore[arg-type]
        )
    return [p for p in paragraphs if p.sentences]


def template_names(category: str, path: str, payer_id: str) -> list[str]:
    """Templates tried for the argument section, most specific first."""
    if path == "resubmit":
        return ["category/resubmit.j2"]
    return [f"payer/{payer_id}/{category}.j2", f"category/{category}.j2", "category/other.j2"]


def assemble(
    src: AppealSource,
    *,
    today: date | None = None,
    level: str | None = None,
    contract: dict[str, dict[str, int]] | None = None,
    decision_date: date | None = None,
) -> AppealLetter:
    """The letter for one denial: sentences with their sources, gaps, exhibits, deadline and notes for the biller.

    A later level (reconsideration, external review, …) runs from the decision of the level before it: give that
    decision's date as `decision_date`; without it the deadline is counted from the denial notice and a note says so.
    """
    started = time.perf_counter()
    today = today or datetime.now().astimezone().date()
    d = src.denial
    if not d.denied:
        raise InputError(f"{d.reference} denies nothing: there is nothing to appeal ({d.why})")
    if d.lines_unreadable:
        raise InputError(f"{d.reference}: no appeal letter for lines that could not be read. {d.why}")
    deadline = _deadline(src, today, level, contract, decision_date)
    exhibits, labels, exhibit_gaps = build_exhibits(src)
    ctx = _context(src, today, deadline, labels)
    env = environment()
    section = None
    for name in template_names(d.category, d.path, src.payer_id):
        try:
            section = env.get_template(name)
            break
        except TemplateNotFound:
            continue
    assert section is not None
    ctx["section_template"] = section.name
    ctx["exhibits"] = [fact(f"Exhibit {e.label}: {e.title}", *e.sources) for e in exhibits]
    ctx["exhibit_gaps"] = exhibit_gaps
    rendered = env.get_template("letter.j2").render(**ctx)
    paragraphs = _parse(rendered)
    notes = _notes(src, deadline, decision_date)
    subject_lines = [ln.code for ln in d.denied_lines if ln.code]
    number = _claim_number(src)
    letter = AppealLetter(
        claim_response=d.reference,
        claim=d.claim_reference,
        claim_number=number.value if isinstance(number, Fact) else None,
        patient=src.visits[0].patient_reference,
        payer_id=src.payer_id,
        payer_name=d.payer_display or src.visits[0].payer_name or src.payer.name,
        category=d.category,
        path=d.path,
        level=deadline.level if deadline else None,
        subject=f"{(LEVEL_WORDS.get(deadline.level, deadline.label) if deadline else 'Corrected claim').capitalize()}: "
        f"{', '.join(subject_lines) or 'denied lines'} ({d.category_label})",
        paragraphs=paragraphs,
        exhibits=exhibits,
        deadline=deadline.to_dict() if deadline else None,
        notes=notes,
        template=str(section.name),
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    letter.assembly_ms = (time.perf_counter() - started) * 1000
    return letter


def _notes(src: AppealSource, deadline: Deadline | None, decision_date: date | None = None) -> list[str]:
    """Advice for the biller that does not belong in the letter."""
    d = src.denial
    notes = [d.why]
    problems = {f.id: f for ev in src.evaluations for f in ev.problems}
    for ln in d.denied_lines:
        if not ln.code:
            notes.append(
                f"Denied line {ln.sequence_label} matches no item of the Claim, so the letter cannot say which service "
                "it was: check the remittance against the claim before sending."
            )
    if "ncci.pair-modifier" in problems:
        notes.append(
            "The claim carried no 59/X modifier on the code pair: a corrected claim with the modifier may be "
            "faster than an appeal when the payer allows it."
        )
    if "units.billed-vs-supported" in problems:
        notes.append("The billed units exceed what the recorded minutes support: correct the claim rather than appeal.")
    weak = [f for f in problems.values() if f.severity == "critical" and f.id.startswith(("note.", "episode.", "poc."))]
    if weak:
        notes.append(
            f"{len(weak)} critical documentation gap(s) in the chart ({', '.join(sorted(f.id for f in weak))}): "
            "the letter shows them as gaps; an appeal without that documentation is unlikely to succeed."
        )
    if deadline is not None:
        when = "overdue" if deadline.overdue else f"{deadline.days_left} day(s) left"
        notes.append(f"Due {deadline.due.isoformat()} ({when}); rule: {deadline.rule}; {deadline.basis}.")
        if decision_date is None and d.notice_date and is_later_level(deadline.payer_type, deadline.level, d.notice_date):
            before = previous_level(deadline.payer_type, deadline.level, d.notice_date) or "previous level"
            notes.append(
                f"The {deadline.level} runs from the {before} decision, not from the denial notice: this due date "
                "is counted from the notice; give the decision's date to count it right."
            )
    return notes


def claim_response_patient(resource: dict[str, Any]) -> str | None:
    """The patient reference a ClaimResponse names (for a launch without `patient`)."""
    return ref_string(resource.get("patient"))
