"""Evaluate a TherapyVisit against its payer's criteria: one Finding per applicable criterion."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from ptguard.chart import TherapyVisit
from ptguard.errors import MALFORMED_DATA, debugging
from ptguard.findings import (
    NOTE_PRESENT,
    SEARCHED,
    Citation,
    Evidence,
    Finding,
    Severity,
    Status,
    data_quality,
    sort_findings,
)
from ptguard.rules import narrative
from ptguard.rules.criteria_files import DEFAULT_CRITERIA_DIR, Criterion, PayerCriteria, known_payer, load_payer
from ptguard.rules.tables import effective_row, effective_rows, table
from ptguard.rules.units import Method, UnitResult, UnitRule, compute_units

log = logging.getLogger(__name__)

TARGET_CODE = "97530"
_WORD = re.compile(r"[a-z]{4,}")
_STOP = frozenset(
    {"with", "from", "that", "this", "will", "able", "patient", "goal", "goals", "weeks", "independently"}
)


@dataclass
class Context:
    """What every check may read: the visit, its sentences, units, and the payer."""

    visit: TherapyVisit
    payer: PayerCriteria
    notes: narrative.NoteIndex
    timed_codes: set[str]
    unit_rule: UnitRule
    supported: UnitResult
    day: date

    @property
    def sentences(self) -> list[narrative.Sentence]:
        return self.notes.sentences

    @property
    def has_target(self) -> bool:
        return TARGET_CODE in self.visit.codes


@dataclass
class Evaluation:
    """The result for one visit: payer, units and findings (problems first)."""

    visit: TherapyVisit
    payer: PayerCriteria
    units: UnitResult
    billed_units: dict[str, float]
    timed_minutes: dict[str, int]
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.is_problem]

    def to_dict(self) -> dict[str, Any]:
        v = self.visit
        return {
            "encounter": v.encounter_reference,
            "patient": v.patient_reference,
            "date": v.visit_date.isoformat() if v.visit_date else None,
            "payer": {"id": self.payer.payer, "name": self.payer.name, "organization": v.payer_name or None},
            "units": {
                "method": self.units.method,
                "timed_minutes": self.units.total_minutes,
                "minutes_by_code": dict(self.timed_minutes),
                "supported_total": self.units.total_units,
                "supported": dict(self.units.units),
                "billed": {k: _num(n) for k, n in self.billed_units.items()},
            },
            "findings": [f.to_dict() for f in self.findings],
            "checked": v.checked,
        }


def _num(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


Check = Callable[[Context, Criterion], Finding | None]


def _finding(
    crit: Criterion,
    status: Status,
    message: str,
    evidence: list[Evidence] | tuple[Evidence, ...] = (),
    *,
    severity: Severity | None = None,
    data: dict[str, Any] | None = None,
    citation: Citation | None = None,
) -> Finding:
    sev: Severity = crit.severity if status != "met" else "info"
    if severity in ("info", "warning", "critical") and status != "met":
        sev = severity
    fix = crit.fix if status != "met" else None
    if fix and crit.example and status != "met":
        fix = f"{fix} Example: “{crit.example}”"
    return Finding(
        id=crit.id,
        title=crit.title if status != "met" else crit.checks,
        status=status,
        severity=sev,
        message=message,
        evidence=tuple(evidence),
        citation=citation or crit.citation,
        fix=fix,
        category=crit.params.get("category", _CATEGORY.get(crit.check, "billing")),
        data=data or {},
    )


_CATEGORY = {
    "narrative": "documentation",
    "goals-on-record": "documentation",
    "clinician-qualification": "documentation",
}


# ------------------------------------------------------------------ documentation checks


def check_narrative(ctx: Context, crit: Criterion) -> Finding | None:
    if not ctx.has_target:
        return None
    element = str(crit.params.get("element", ""))
    if crit.params.get("when") == "other-timed-codes":
        others = sorted((ctx.visit.codes & ctx.timed_codes) - {TARGET_CODE})
        if not others:
            return None
    if not ctx.sentences:
        return None  # one note-present finding says so instead of one per element
    found = ctx.notes.find(element)
    if found:
        evidence = [Evidence(s.reference, narrative.quote(s.text)) for s in found[:2]]
        if element == "functional-goal":
            evidence.extend(_matching_goals(ctx, found[0].text))
        return _finding(crit, "met", f"Found: “{narrative.quote(found[0].text)}”", evidence)
    pattern = narrative.patterns()[element]
    refs = sorted({s.reference for s in ctx.sentences})
    searched = [Evidence(r, SEARCHED) for r in refs]
    if element == "dynamic-functional":
        exercise = narrative.exercise_sentences(ctx.sentences)
        if exercise:
            quoted = narrative.quote(exercise[0].text)
            return _finding(
                crit,
                "missing",
                f"The note reads like therapeutic exercise (97110), not a functional activity: “{quoted}”",
                [Evidence(s.reference, narrative.quote(s.text)) for s in exercise[:2]],
            )
    return _finding(crit, "missing", f"{crit.title}: not found in the note. Looked for {pattern.looked_for}.", searched)


def check_note_present(ctx: Context, crit: Criterion) -> Finding | None:
    if not ctx.has_target:
        return None
    if ctx.sentences:
        refs = sorted({s.reference for s in ctx.sentences})
        return _finding(crit, "met", f"Note text found in {', '.join(refs)}.", [Evidence(r, NOTE_PRESENT) for r in refs])
    return _finding(
        crit, "missing", "No note text is linked to this visit, so none of the documentation elements can be shown.", ()
    )


def _matching_goals(ctx: Context, sentence: str) -> list[Evidence]:
    words = set(_WORD.findall(sentence.lower())) - _STOP
    out = []
    for goal in ctx.visit.goals:
        shared = words & (set(_WORD.findall(goal.text.lower())) - _STOP)
        if len(shared) >= 2:
            out.append(Evidence(goal.reference, goal.text))
    return out[:1]


def check_goals_on_record(ctx: Context, crit: Criterion) -> Finding | None:
    goals = [g for g in ctx.visit.goals if g.status not in {"cancelled", "entered-in-error", "rejected"}]
    if not goals:
        return _finding(crit, "missing", "No functional goals are on record for this patient.", ())
    undated = [g for g in goals if g.due is None]
    evidence = [Evidence(g.reference, g.text) for g in goals[:3]]
    if undated:
        return _finding(
            crit,
            "at-risk",
            f"{len(undated)} of {len(goals)} goal(s) have no target date.",
            evidence,
            severity="warning",
        )
    return _finding(crit, "met", f"{len(goals)} measurable goal(s) with target dates on record.", evidence)


def check_clinician(ctx: Context, crit: Criterion) -> Finding | None:
    procs = [p for p in ctx.visit.procedures if p.code == TARGET_CODE] or ctx.visit.procedures
    performers = [c for p in procs for c in p.performers]
    if not performers:
        return _finding(
            crit, "at-risk", "No performing clinician is recorded on the procedures.", (), severity="warning"
        )
    unknown = [c for c in performers if c.role == "unknown"]
    if unknown:
        names = ", ".join(c.reference for c in unknown)
        return _finding(
            crit,
            "missing",
            f"No therapist or assistant qualification is on record for {names}.",
            [Evidence(c.reference, c.name or c.reference) for c in unknown],
        )
    evidence = [Evidence(c.reference, f"{c.name}: {', '.join(c.qualifications[:2])}".strip(": ")) for c in performers]
    return _finding(crit, "met", "Performing clinician's qualification is on record.", evidence[:3])


# ------------------------------------------------------------------ units and frequency


def check_units(ctx: Context, crit: Criterion) -> Finding | None:
    v = ctx.visit
    minutes = v.minutes_by_code()
    billed = {c: n for c, n in v.billed_units_by_code().items() if c in ctx.timed_codes}
    timed_codes = sorted((set(minutes) | set(billed)) & ctx.timed_codes)
    if not timed_codes:
        return None
    sup = ctx.supported
    data = {"method": sup.method, "timed_minutes": sup.total_minutes, "supported": sup.units, "billed": billed}
    if not billed:
        return _finding(
            crit,
            "met",
            f"{sup.total_minutes} timed minutes support {sup.total_units} unit(s); no claim lines to compare.",
            (),
            data=data,
        )
    over, under, unknown = [], [], []
    for code in timed_codes:
        b = billed.get(code, 0.0)
        if code not in minutes:
            unknown.append(code)
            continue
        s = sup.units.get(code, 0)
        line = _units_line(code, minutes[code], s, b, sup)
        if b > s:
            over.append((code, line))
        elif b < s:
            under.append((code, line))
    evidence = [
        Evidence(p.reference, f"{p.code}: {p.minutes} min ({p.minutes_source})")
        for p in v.procedures
        if p.minutes is not None
    ]
    evidence += [
        Evidence(b.reference, f"{b.code}: {_num(b.units or 0)} unit(s) billed")
        for b in v.billed
        if b.code in ctx.timed_codes
    ]
    if over:
        return _finding(crit, "missing", "; ".join(line for _, line in over), evidence, data=data)
    if unknown:
        return _finding(
            crit,
            "at-risk",
            f"No minutes are recorded for {', '.join(unknown)}; units cannot be checked.",
            evidence,
            severity="warning",
            data=data,
        )
    if under:
        return _finding(
            crit,
            "at-risk",
            "; ".join(line for _, line in under) + " (fewer units billed than supported)",
            evidence,
            severity="info",
            data=data,
        )
    return _finding(
        crit,
        "met",
        f"{sup.total_minutes} timed minutes support the {_num(sum(billed.values()))} unit(s) billed ({sup.method} method).",
        evidence,
        data=data,
    )


def _units_line(code: str, minutes: int, supported: int, billed: float, sup: UnitResult) -> str:
    b = _num(billed)
    if sup.method == "cms" and len(sup.units) > 1:
        return (
            f"{code}: {minutes} of {sup.total_minutes} total timed minutes; the day supports {sup.total_units} "
            f"unit(s), {supported} for {code}, {b} billed"
        )
    return f"{code}: {minutes} timed minutes support {supported} unit{'s' if supported != 1 else ''}, {b} billed"


def check_units_per_session(ctx: Context, crit: Criterion) -> Finding | None:
    if not ctx.has_target:
        return None
    limit = crit.params.get("max_units")
    if not isinstance(limit, int):
        return None
    billed = ctx.visit.billed_units_by_code().get(TARGET_CODE)
    units = billed if billed is not None else ctx.supported.units.get(TARGET_CODE)
    if units is None or units <= limit:
        return _finding(
            crit,
            "met",
            f"{_num(units or 0)} unit(s) of {TARGET_CODE}, within this payer's expected maximum of {limit} per session.",
            (),
        )
    justification = ctx.notes.find("skilled-need")
    evidence = [Evidence(s.reference, narrative.quote(s.text)) for s in justification[:1]]
    msg = f"{_num(units)} units of {TARGET_CODE} exceed the {limit} per session this payer expects"
    msg += (
        "; the note gives a reason the reviewer can weigh."
        if evidence
        else "; the note gives no reason for the extra time."
    )
    return _finding(crit, "at-risk", msg, evidence)


def check_episode_limits(ctx: Context, crit: Criterion) -> Finding | None:
    v = ctx.visit
    if v.visit_date is None or v.episode_start is None:
        return None
    problems = []
    max_visits = crit.params.get("max_visits")
    if isinstance(max_visits, int) and v.treatment_day and v.treatment_day > max_visits:
        problems.append(f"visit {v.treatment_day} of an episode this payer expects to take about {max_visits} visits")
    max_days = crit.params.get("max_episode_days")
    span = (v.visit_date - v.episode_start).days
    if isinstance(max_days, int) and span > max_days:
        problems.append(f"day {span} of an episode expected to last {max_days} days")
    evidence = [
        Evidence(v.encounter_reference, f"treatment day {v.treatment_day}, episode began {v.episode_start.isoformat()}")
    ]
    if problems:
        return _finding(crit, "at-risk", "This is " + " and ".join(problems) + ".", evidence)
    return _finding(crit, "met", f"Treatment day {v.treatment_day}, {span} days into the episode.", evidence)


def check_diagnosis(ctx: Context, crit: Criterion) -> Finding | None:
    v = ctx.visit
    if not v.billed or not ctx.has_target:
        return None
    if not v.diagnoses:
        return _finding(
            crit,
            "at-risk",
            "The claim lines carry no ICD-10-CM diagnosis.",
            [Evidence(v.billed[0].claim_reference, "no diagnosis")],
            severity="warning",
        )
    not_covered = tuple(str(p).upper() for p in crit.params.get("not_covered") or [])
    justify = tuple(str(p).upper() for p in crit.params.get("needs_justification") or [])
    evidence = [Evidence(v.billed[0].claim_reference, ", ".join(v.diagnoses))]
    bad = (
        [
            d
            for d in v.diagnoses
            if d.upper().replace(".", "").startswith(tuple(p.replace(".", "") for p in not_covered))
        ]
        if not_covered
        else []
    )
    if bad:
        return _finding(
            crit,
            "missing",
            f"Diagnosis {', '.join(bad)} is on this payer's list of diagnoses not covered for {TARGET_CODE}.",
            evidence,
        )
    soft = (
        [d for d in v.diagnoses if d.upper().replace(".", "").startswith(tuple(p.replace(".", "") for p in justify))]
        if justify
        else []
    )
    if soft:
        return _finding(
            crit,
            "at-risk",
            f"Diagnosis {', '.join(soft)} needs an explicit functional justification for this payer.",
            evidence,
            severity="warning",
        )
    codes_text = ", ".join(v.diagnoses)
    verb = "is" if len(v.diagnoses) == 1 else "are"
    noun = "Diagnosis" if len(v.diagnoses) == 1 else "Diagnoses"
    return _finding(
        crit, "met", f"{noun} {codes_text} {verb} not restricted for {TARGET_CODE} by this payer.", evidence
    )


# ------------------------------------------------------------------ code pairs and modifiers


def _pairs_on_visit(ctx: Context) -> list[dict[str, Any]]:
    data = table("ncci-pairs")
    codes_here = ctx.visit.codes
    return [
        dict(r)
        for r in effective_rows(data["rows"], ctx.day, "ncci-pairs")
        if str(r["column1"]) in codes_here and str(r["column2"]) in codes_here
    ]


def _bypass(ctx: Context, row: dict[str, Any]) -> set[str]:
    data = table("ncci-pairs")
    allowed = set(data["bypass_modifiers"])
    either_from = data.get("bypass_modifier_either_code_from")
    either = either_from is None or ctx.day >= date.fromisoformat(str(either_from))
    found = ctx.visit.modifiers_for(str(row["column2"])) & allowed
    if either:
        found |= ctx.visit.modifiers_for(str(row["column1"])) & allowed
    return found


def check_ncci_pairs(ctx: Context, crit: Criterion) -> Finding | None:
    rows = _pairs_on_visit(ctx)
    if not rows:
        return None
    problems, met = [], []
    evidence = [
        Evidence(b.reference, f"{b.code} {' '.join(b.modifiers)}".strip())
        for b in ctx.visit.billed
        if any(b.code in (str(r["column1"]), str(r["column2"])) for r in rows)
    ]
    for row in rows:
        c1, c2 = str(row["column1"]), str(row["column2"])
        if int(row["modifier_indicator"]) == 0:
            problems.append(f"{c1} with {c2} is never payable together on one day (NCCI modifier indicator 0)")
            continue
        mods = _bypass(ctx, row)
        if mods:
            met.append(f"{c1}/{c2} carries {', '.join(sorted(mods))}")
        else:
            problems.append(
                f"{c1} (column 1) and {c2} (column 2) on the same day need 59 or XE/XS/XP/XU on one of them"
            )
    cite = Citation("CMS NCCI procedure-to-procedure edits", None, None)
    if problems:
        return _finding(
            crit,
            "missing",
            "; ".join(problems) + ".",
            evidence,
            citation=cite,
            data={"pairs": [[str(r["column1"]), str(r["column2"])] for r in rows]},
        )
    distinct = ctx.notes.find("distinct-from-other-codes")
    evidence += [Evidence(s.reference, narrative.quote(s.text)) for s in distinct[:1]]
    return _finding(crit, "met", "; ".join(met) + ".", evidence, citation=cite)


def check_ncci_bypass_risk(ctx: Context, crit: Criterion) -> Finding | None:
    rows = [r for r in _pairs_on_visit(ctx) if int(r["modifier_indicator"]) == 1 and _bypass(ctx, r)]
    if not rows:
        return None
    pairs = ", ".join(f"{r['column1']}/{r['column2']}" for r in rows)
    distinct = ctx.notes.find("distinct-from-other-codes")
    evidence = [Evidence(s.reference, narrative.quote(s.text)) for s in distinct[:1]]
    msg = f"{ctx.payer.name} is reported to deny the column-2 code of {pairs} even with a correct bypass modifier. " + (
        "Keep the note's separate-service statement ready for an appeal."
        if evidence
        else "The note does not show separate time blocks: add them before billing."
    )
    return _finding(crit, "at-risk", msg, evidence)


def _expected_discipline_modifier(ctx: Context, code: str) -> str:
    disciplines = {c.discipline for p in ctx.visit.procedures if p.code == code for c in p.performers}
    return "GO" if disciplines == {"OT"} else "GP"


def check_discipline_modifier(ctx: Context, crit: Criterion) -> Finding | None:
    if not ctx.payer.discipline_modifier_required:
        return None
    lines = [b for b in ctx.visit.billed if b.code in ctx.timed_codes or b.code == TARGET_CODE]
    if not lines:
        return None
    missing, wrong = [], []
    for b in lines:
        want = _expected_discipline_modifier(ctx, b.code)
        have = set(b.modifiers) & {"GP", "GO", "GN"}
        if not have:
            missing.append((b, want))
        elif want not in have:
            wrong.append((b, want, have))
    if missing:
        text = ", ".join(f"{b.code} needs {w}" for b, w in missing)
        return _finding(
            crit,
            "missing",
            f"Therapy discipline modifier missing: {text}.",
            [Evidence(b.reference, f"{b.code} {' '.join(b.modifiers)}".strip()) for b, _ in missing],
            data={"add": [{"line": b.reference, "code": b.code, "modifier": w} for b, w in missing]},
        )
    if wrong:
        text = ", ".join(
            f"{b.code} has {'/'.join(sorted(h))}, the performer's discipline suggests {w}" for b, w, h in wrong
        )
        return _finding(
            crit,
            "at-risk",
            text + ".",
            [Evidence(b.reference, " ".join(b.modifiers)) for b, _, _ in wrong],
            severity="warning",
        )
    return _finding(
        crit,
        "met",
        "Every therapy line carries its discipline modifier.",
        [Evidence(b.reference, " ".join(b.modifiers)) for b in lines[:3]],
    )


def check_assistant_modifier(ctx: Context, crit: Criterion) -> Finding | None:
    if ctx.visit.visit_date is None:
        return None
    rules = effective_row("medicare-therapy", ctx.day)
    threshold = float(rules["assistant_share_threshold"])
    need: dict[str, str] = {}
    unknown: list[str] = []
    evidence: list[Evidence] = []
    for p in ctx.visit.procedures:
        if not any(c.role == "assistant" for c in p.performers) and not p.assistant_minutes:
            continue
        assistants = [c for c in p.performers if c.role == "assistant"]
        label = (
            ", ".join(f"{c.name or c.reference} ({'/'.join(c.qualifications[:1])})" for c in assistants)
            or "an assistant"
        )
        evidence.append(Evidence(p.reference, f"{p.code} performed by {label}"))
        if p.assistant_minutes is None or not p.minutes:
            unknown.append(p.code)
            continue
        if p.assistant_minutes / p.minutes > threshold:
            disc = {c.discipline for c in assistants}
            need[p.code] = "CO" if disc == {"OT"} else "CQ"
    if not need and not unknown:
        return None
    missing = [(code, mod) for code, mod in need.items() if mod not in ctx.visit.modifiers_for(code)]
    if missing:
        text = ", ".join(f"{code} needs {mod}" for code, mod in missing)
        return _finding(
            crit,
            "missing",
            f"An assistant furnished more than {threshold:.0%} of the minutes: {text}.",
            evidence,
            data={"add": [{"code": c, "modifier": m} for c, m in missing]},
        )
    if unknown:
        return _finding(
            crit,
            "at-risk",
            f"An assistant took part in {', '.join(unknown)} but their minutes are not recorded; CQ/CO cannot be decided.",
            evidence,
            severity="warning",
        )
    return _finding(crit, "met", "Assistant-furnished minutes carry CQ/CO.", evidence)


def check_kx_threshold(ctx: Context, crit: Criterion) -> Finding | None:
    v = ctx.visit
    if v.visit_date is None or v.ytd_therapy_amount is None:
        return None
    row = effective_row("kx-thresholds", ctx.day)
    disciplines = {c.discipline for p in v.procedures for c in p.performers}
    threshold = float(row["ot"] if disciplines == {"OT"} else row["pt_slp"])
    after = v.ytd_therapy_amount + (v.this_visit_amount or 0.0)
    cite = Citation("CMS therapy KX modifier threshold", f"CY {row['year']}", None)
    evidence = [
        Evidence(
            v.coverage_reference or v.patient_reference,
            f"{row['year']} therapy amount before this visit ${v.ytd_therapy_amount:,.2f}; after it ${after:,.2f}",
        )
    ]
    data = {"threshold": threshold, "ytd_before": v.ytd_therapy_amount, "ytd_after": after}
    if after <= threshold:
        return _finding(
            crit,
            "met",
            f"Year-to-date therapy ${after:,.2f} is within the ${threshold:,.0f} KX threshold.",
            evidence,
            citation=cite,
            data=data,
        )
    lines = [b for b in v.billed if b.code in ctx.timed_codes or b.code == TARGET_CODE]
    lacking = [b for b in lines if "KX" not in b.modifiers]
    if lacking:
        return _finding(
            crit,
            "missing",
            f"Year-to-date therapy reaches ${after:,.2f}, over the {row['year']} threshold of ${threshold:,.0f}: "
            f"add KX to {', '.join(b.code for b in lacking)} (it attests medical necessity).",
            evidence + [Evidence(b.reference, f"{b.code} {' '.join(b.modifiers)}".strip()) for b in lacking],
            citation=cite,
            data={**data, "add": [{"line": b.reference, "code": b.code, "modifier": "KX"} for b in lacking]},
        )
    review = float(row.get("targeted_review") or 0)
    if review and after > review:
        return _finding(
            crit,
            "at-risk",
            f"KX present; year-to-date ${after:,.2f} is over ${review:,.0f}, where claims may get targeted medical review.",
            evidence,
            citation=cite,
            severity="warning",
            data=data,
        )
    return _finding(
        crit, "met", f"KX present above the ${threshold:,.0f} threshold.", evidence, citation=cite, data=data
    )


# ------------------------------------------------------------------ plan of care and progress reports


def check_poc_certification(ctx: Context, crit: Criterion) -> Finding | None:
    v = ctx.visit
    if v.visit_date is None:
        return None
    medicare = bool(crit.params.get("medicare", False))
    rules = effective_row("medicare-therapy", ctx.day)
    cover = [p for p in v.plans if p.start and p.start <= v.visit_date and (p.end is None or v.visit_date <= p.end)]
    if not cover:
        lapsed = [p for p in v.plans if p.end and p.end < v.visit_date]
        if lapsed:
            last = max(lapsed, key=lambda p: p.end or date.min)
            assert last.end is not None
            return _finding(
                crit,
                "missing",
                f"The plan of care certification ended {last.end.isoformat()}; this visit on {v.visit_date.isoformat()} is "
                f"{(v.visit_date - last.end).days} day(s) past it.",
                [Evidence(last.reference, f"period {_d(last.start)} to {_d(last.end)}")],
            )
        return _finding(crit, "missing", "No plan of care covering this date is on record.", ())
    plan = max(cover, key=lambda p: p.start or date.min)
    evidence = [Evidence(plan.reference, f"period {_d(plan.start)} to {_d(plan.end)}; certified {_d(plan.certified)}")]
    if not medicare:
        return _finding(crit, "met", f"Plan of care {_d(plan.start)} to {_d(plan.end)} covers this visit.", evidence)
    assert plan.start is not None
    max_days = int(rules["max_certification_days"])
    if plan.end and (plan.end - plan.start).days + 1 > max_days:
        return _finding(
            crit,
            "missing",
            f"The certification period runs {(plan.end - plan.start).days + 1} days; at most {max_days} are allowed.",
            evidence,
        )
    limit = int(rules["initial_certification_days"])
    if plan.certified is not None:
        late = (plan.certified - plan.start).days
        if late > limit:
            return _finding(
                crit,
                "at-risk",
                f"The plan was certified {late} days after it began (over {limit}); a delayed-certification reason is needed.",
                evidence,
                severity="warning",
            )
        return _finding(
            crit,
            "met",
            f"Plan certified on {plan.certified.isoformat()}, covering {_d(plan.start)} to {_d(plan.end)}.",
            evidence,
        )
    exception = rules.get("initial_certification_order_exception") and v.referrals and plan.sent is not None
    if exception and plan.sent is not None and (plan.sent - plan.start).days <= limit:
        ref = v.referrals[0]
        return _finding(
            crit,
            "met",
            f"No signature yet, but a signed order ({ref.reference}) is on file and the plan was sent on "
            f"{plan.sent.isoformat()}, within {limit} days (initial-certification exception from 2025).",
            [*evidence, Evidence(ref.reference, f"order by {ref.requester or 'physician'} {_d(ref.authored)}")],
        )
    if (v.visit_date - plan.start).days > limit:
        return _finding(
            crit,
            "missing",
            f"The plan of care that began {plan.start.isoformat()} is still not certified {(v.visit_date - plan.start).days} days later.",
            evidence,
        )
    return _finding(
        crit,
        "at-risk",
        f"The plan is not yet certified; it must be within {limit} days of {plan.start.isoformat()}.",
        evidence,
        severity="warning",
    )


def _d(value: date | None) -> str:
    return value.isoformat() if value else "(not recorded)"


def check_progress_report(ctx: Context, crit: Criterion) -> Finding | None:
    v = ctx.visit
    if v.treatment_days_since_report is None or v.episode_start is None:
        return None
    every = int(effective_row("medicare-therapy", ctx.day)["progress_report_every_treatment_days"])
    since = v.treatment_days_since_report
    if v.last_progress_report:
        where = f"after the progress report of {v.last_progress_report.isoformat()}"
    else:
        where = f"of the episode that began on {v.episode_start.isoformat()}, with no progress report yet"
    evidence = [Evidence(v.progress_report_reference or v.encounter_reference, f"treatment day {since} {where}")]
    if since > every:
        return _finding(
            crit,
            "missing",
            f"This is treatment day {since} {where}; a progress report is required at least every {every} treatment days.",
            evidence,
        )
    if since == every:
        return _finding(
            crit,
            "at-risk",
            f"This is treatment day {since} {where}: the progress report is due at this visit.",
            evidence,
            severity="warning",
        )
    if since == 0:
        return _finding(
            crit, "met", f"A progress report was written on this date ({_d(v.last_progress_report)}).", evidence
        )
    return _finding(
        crit, "met", f"Treatment day {since} {where}; the next report is due by treatment day {every}.", evidence
    )


def check_plan_lists_code(ctx: Context, crit: Criterion) -> Finding | None:
    if not ctx.has_target or not ctx.visit.plans or ctx.visit.visit_date is None:
        return None
    plans = [p for p in ctx.visit.plans if p.start and p.start <= ctx.visit.visit_date]
    if not plans:
        return None
    plan = max(plans, key=lambda p: p.start or date.min)
    if TARGET_CODE in plan.planned_codes:
        return _finding(
            crit,
            "met",
            f"The plan of care lists {TARGET_CODE}.",
            [Evidence(plan.reference, ", ".join(plan.planned_codes))],
        )
    listed = ", ".join(plan.planned_codes) or "no coded activities"
    return _finding(
        crit, "at-risk", f"The plan of care lists {listed}, not {TARGET_CODE}.", [Evidence(plan.reference, listed)]
    )


CHECKS: dict[str, Check] = {
    "note-present": check_note_present,
    "narrative": check_narrative,
    "goals-on-record": check_goals_on_record,
    "clinician-qualification": check_clinician,
    "units": check_units,
    "units-per-session": check_units_per_session,
    "episode-limits": check_episode_limits,
    "diagnosis": check_diagnosis,
    "ncci-pairs": check_ncci_pairs,
    "ncci-bypass-risk": check_ncci_bypass_risk,
    "discipline-modifier": check_discipline_modifier,
    "assistant-modifier": check_assistant_modifier,
    "kx-threshold": check_kx_threshold,
    "poc-certification": check_poc_certification,
    "progress-report": check_progress_report,
    "plan-lists-code": check_plan_lists_code,
}


def evaluate(
    visit: TherapyVisit,
    *,
    payer: str | None = None,
    criteria_dir: Path = DEFAULT_CRITERIA_DIR,
    method: Method | None = None,
    today: date | None = None,
) -> Evaluation:
    """Run every criterion in effect on the visit date for the visit's (or the given) payer."""
    if payer is None and not known_payer(visit.payer_id, criteria_dir):
        visit.findings.append(
            data_quality(
                "unknown-payer",
                f"the payer id {visit.payer_id[:60]!r} from the chart has no criteria file; default commercial criteria used",
                visit.coverage_reference or visit.encounter_reference,
                severity="warning",
            )
        )
        visit.payer_id = "default-commercial"
    criteria = load_payer(payer or visit.payer_id, criteria_dir)
    day = visit.visit_date or today or date.today()
    codes_table = table("therapy-codes")
    timed = set(codes_table["timed"])
    rule = UnitRule.on(day)
    minutes = {c: m for c, m in visit.minutes_by_code().items() if c in timed}
    chosen: Method = method or ("per-code" if criteria.unit_method == "per-code" else "cms")
    supported = compute_units(minutes, chosen, rule)
    ctx = Context(visit, criteria, narrative.NoteIndex(visit.notes), timed, rule, supported, day)
    findings: list[Finding] = list(visit.findings)
    # An encounter whose data could not be read (TherapyVisit.checked False) carries only its findings.
    for crit in criteria.criteria if visit.checked else ():
        if not crit.in_effect(visit.visit_date):
            continue
        try:
            result = CHECKS[crit.check](ctx, crit)
        except MALFORMED_DATA as exc:  # one criterion's failure must not cost the encounter its other checks
            if debugging():
                raise
            log.warning("criterion %s could not be evaluated (%s)", crit.id, type(exc).__name__)
            result = data_quality(
                "criterion-not-evaluated",
                f"{crit.id} could not be evaluated on this encounter ({type(exc).__name__}); check it by hand",
                visit.encounter_reference,
                severity="warning",
            )
        if result is not None:
            findings.append(result)
    billed = {c: n for c, n in visit.billed_units_by_code().items() if c in timed}
    return Evaluation(visit, criteria, supported, billed, minutes, sort_findings(findings))
