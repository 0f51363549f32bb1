"""Facts for appeal templates: each value carries the chart references it was read from (never invented)."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ptguard.chart import Measure, TherapyVisit
from ptguard.findings import Evidence
from ptguard.rules.engine import Evaluation

# Private-use characters mark a fact's references and a gap inside rendered template text.
OPEN, MID, CLOSE, GAP, SEP = "\ue000", "\ue001", "\ue002", "\ue003", "\ue004"
_MARKS = re.compile(f"[{OPEN}{MID}{CLOSE}{GAP}{SEP}]")
FACT_MARK = re.compile(f"{OPEN}([^{MID}]*){MID}([^{CLOSE}]*){CLOSE}")
GAP_MARK = re.compile(f"{GAP}([^{CLOSE}]*){CLOSE}")
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(.*)$")


def clean(text: str) -> str:
    """Chart text without our marker characters and with single spaces."""
    return " ".join(_MARKS.sub("", text).split())


def long_date(d: date | None) -> str:
    return f"{d.day} {d:%B %Y}" if d else ""


def money(value: float | None) -> str:
    return f"${value:,.2f}" if value is not None else ""


@dataclass(frozen=True)
class Fact:
    """A value shown in the letter and the resources it came from."""

    value: str
    refs: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.value)

    def __str__(self) -> str:
        return self.value

    def marked(self) -> str:
        return f"{OPEN}{SEP.join(self.refs)}{MID}{clean(self.value)}{CLOSE}"


@dataclass(frozen=True)
class Gap:
    """A fact the chart does not hold: shown as a gap to fill, never guessed."""

    what: str

    def marked(self) -> str:
        return f"{GAP}{clean(self.what)}{CLOSE}"


def fact(value: Any, *refs: str | None) -> Fact:
    return Fact(clean(str(value)) if value is not None else "", tuple(r for r in refs if r))


@dataclass
class MeasureTrend:
    """One objective measure over time: the first and the latest value, each with its Observation."""

    name: str
    first: Measure
    latest: Measure
    points: list[Measure]

    @property
    def changed(self) -> bool:
        return self.first.reference != self.latest.reference

    @property
    def refs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.reference for m in self.points))

    def direction(self) -> str:
        a, b = _NUMBER.match(self.first.value), _NUMBER.match(self.latest.value)
        if not (a and b) or a.group(2).strip() != b.group(2).strip():
            return ""
        x, y = float(a.group(1)), float(b.group(1))
        return "rose" if y > x else "fell" if y < x else "held steady"

    def as_fact(self) -> Fact:
        if not self.changed:
            return fact(f"“{self.name}” {self.latest.value} on {long_date(self.latest.when)}", self.latest.reference)
        return fact(
            f"the measure “{self.name}” went from {self.first.value} on {long_date(self.first.when)} to "
            f"{self.latest.value} on {long_date(self.latest.when)}",
            *self.refs,
        )


def measure_trends(measures: list[Measure]) -> list[MeasureTrend]:
    """Measures grouped by name, oldest first; a name seen once is still listed (no change to claim)."""
    groups: dict[str, list[Measure]] = defaultdict(list)
    for m in measures:
        groups[m.name.strip().lower()].append(m)
    out = []
    for items in groups.values():
        items.sort(key=lambda m: (m.when or date.min, m.reference))
        out.append(MeasureTrend(items[0].name, items[0], items[-1], items))
    out.sort(key=lambda t: (not t.changed, t.name.lower()))
    return out


# Finding ids whose quoted note sentences support each argument family, most telling first.
QUOTE_FAMILIES: dict[str, tuple[str, ...]] = {
    "activities": ("note.activity-specific", "note.dynamic-functional"),
    "skill": ("note.skilled-need",),
    "modifications": ("note.modifications",),
    "goal_link": ("note.functional-goal",),
    "response": ("note.patient-response",),
    "distinct": ("note.distinct-from-other-codes",),
    "home_program": ("note.why-not-home-program",),
    "equipment": ("note.equipment-setup",),
}
METHOD_WORDS = {"cms": "CMS total-time method, the 8-minute rule", "per-code": "each code counted on its own"}


@dataclass
class VisitFacts:
    """What the letter may say about one visit behind a denied line."""

    reference: str
    date: Fact
    clinician: Fact
    minutes: list[Fact]
    total_minutes: Fact
    units_supported: Fact
    billed: list[Fact]
    quotes: dict[str, list[Fact]]
    problems: list[str]
    note_refs: list[str]
    separate_blocks: list[Fact] = field(default_factory=list)


def _quotes(evaluation: Evaluation, note_refs: set[str]) -> dict[str, list[Fact]]:
    used: set[str] = set()
    met = {f.id: f for f in evaluation.findings if not f.is_problem}
    out: dict[str, list[Fact]] = {}
    missing = {f.id for f in evaluation.findings if f.is_problem}
    for family, ids in QUOTE_FAMILIES.items():
        items: list[Fact] = []
        if missing & set(ids):
            out[family] = items
            continue
        for fid in ids:
            finding = met.get(fid)
            for ev in finding.evidence if finding else ():
                if _usable(ev, note_refs) and ev.text not in used and len(items) < 2:
                    used.add(ev.text)
                    items.append(fact(ev.text.rstrip(), ev.reference))
        out[family] = items
    return out


def _usable(ev: Evidence, note_refs: set[str]) -> bool:
    return ev.reference in note_refs and ev.is_quote and len(ev.text) > 20


_BLOCK = re.compile(r"\b(\d{1,2}:\d{2})\s*(?:to|-|–)\s*(\d{1,2}:\d{2})\b")


def visit_facts(evaluation: Evaluation, denied_codes: set[str]) -> VisitFacts:
    v: TherapyVisit = evaluation.visit
    enc = v.encounter_reference
    performers = {c.reference: c for p in v.procedures for c in p.performers if c.name}
    clin = next(iter(performers.values()), None)
    minutes = [
        fact(f"{p.code}: {p.minutes} minutes", p.reference)
        for p in v.procedures
        if p.minutes is not None and p.code in evaluation.timed_minutes
    ]
    proc_refs = [p.reference for p in v.procedures if p.minutes is not None]
    total = sum(evaluation.timed_minutes.values())
    sup = evaluation.units
    units_text = ", ".join(f"{n} unit{'s' if n != 1 else ''} of {c}" for c, n in sorted(sup.units.items()))
    billed = [
        fact(f"{b.code}{'-' + '-'.join(b.modifiers) if b.modifiers else ''} × {b.units:g} unit(s)", b.reference)
        for b in v.billed
        if b.units is not None
    ]
    note_refs = sorted({n.reference for n in v.notes})
    separate = []
    for n in v.notes:
        for sentence in re.split(r"(?<=[.;])\s+", n.text):
            m = _BLOCK.search(sentence)
            if m and any(code in sentence for code in v.codes):
                separate.append(fact(sentence.strip().rstrip("."), n.reference))
    return VisitFacts(
        reference=enc,
        date=fact(long_date(v.visit_date), enc),
        clinician=fact(clin.name, clin.reference) if clin else Fact("", ()),
        minutes=minutes,
        total_minutes=fact(f"{total} timed minutes", *proc_refs) if total else Fact("", ()),
        units_supported=fact(f"{units_text} ({METHOD_WORDS.get(sup.method, sup.method)})", *proc_refs)
        if units_text
        else Fact("", ()),
        billed=billed,
        quotes=_quotes(evaluation, set(note_refs)),
        problems=[f.id for f in evaluation.problems if f.category != "data-quality"],
        note_refs=note_refs,
        separate_blocks=separate[:3],
    )
