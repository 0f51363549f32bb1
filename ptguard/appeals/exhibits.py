"""The exhibits of an appeal packet: remittance summary, daily notes, evaluation, plan of care, reports, measures."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import date
from typing import Any

from ptguard.appeals.facts import clean, long_date, money
from ptguard.appeals.gather import AppealSource
from ptguard.appeals.model import Exhibit, ExhibitBlock
from ptguard.chart import html_to_text
from ptguard.fhir import codes
from ptguard.fhir.dates import parse_date
from ptguard.fhir.load import Resource
from ptguard.fhir.refs import element, elements, ref_string

_EVALUATION = re.compile(r"\bevaluation\b|\binitial eval", re.IGNORECASE)
_PROGRESS = re.compile(r"progress (report|note)|re-?evaluation|recertif", re.IGNORECASE)


def _attachment(att: dict[str, Any]) -> tuple[str | None, bytes | None]:
    """(text, pdf bytes) of an inline attachment."""
    data = att.get("data")
    if not isinstance(data, str):
        return None, None
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return None, None
    ctype = str(att.get("contentType") or "text/plain").lower()
    if ctype.startswith("application/pdf"):
        return None, raw
    if "html" in ctype or "xml" in ctype:
        return html_to_text(raw.decode("utf-8", errors="replace")), None
    if ctype.startswith("text/"):
        return raw.decode("utf-8", errors="replace"), None
    return None, None


def _doc_blocks(doc: Resource, label: str) -> tuple[list[ExhibitBlock], str | None]:
    blocks: list[ExhibitBlock] = []
    pdf: str | None = None
    meta = [
        f"Document: {codes.text_of(doc.get('type')) or 'clinical document'}",
        f"Date: {long_date(parse_date(doc.get('date')))}" if doc.get("date") else "",
        "Author: "
        + ", ".join(d for a in elements(doc, "author") if isinstance(d := a.get("display"), str) and d.strip()),
    ]
    blocks.append(ExhibitBlock("text", " · ".join(m for m in meta if m and not m.endswith(": ")), source=label))
    for content in elements(doc, "content"):
        att = content.get("attachment")
        if not isinstance(att, dict):
            continue
        text, raw = _attachment(att)
        if raw is not None and pdf is None:
            pdf = base64.b64encode(raw).decode()
            blocks.append(ExhibitBlock("text", "The original PDF document follows this page.", source=label))
        if text:
            for para in re.split(r"\n\s*\n", text.strip()):
                if para.strip():
                    blocks.append(ExhibitBlock("text", " ".join(para.split()), source=label))
    return blocks, pdf


def _patient_docs(src: AppealSource) -> list[Resource]:
    index = src.builder.index
    patient_refs = {v.patient_reference for v in src.visits}
    out = []
    for doc in index.of_type("DocumentReference"):
        if doc.get("status") == "entered-in-error":
            continue
        subject = index.resolve(doc.get("subject"), doc)
        ref = index.label(subject) if subject else ref_string(doc.get("subject"))
        if ref in patient_refs:
            out.append(doc)
    return out


def build_exhibits(src: AppealSource) -> tuple[list[Exhibit], dict[str, str], list[str]]:
    """Exhibits in packet order, a map (kind or encounter reference → label), and the gaps found."""
    index = src.builder.index
    exhibits: list[Exhibit] = []
    labels: dict[str, str] = {}
    gaps: list[str] = []

    def add(kind: str, title: str, sources: list[str], blocks: list[ExhibitBlock], pdf: str | None = None) -> str:
        label = chr(ord("A") + len(exhibits))
        exhibits.append(Exhibit(label, title, kind, sources, blocks, pdf))
        labels.setdefault(kind, label)
        return label

    # A: the remittance decision and the claim lines it denied
    d = src.denial
    rows = [["Line", "Code", "Units", "Billed", "Paid", "Status", "Reason codes"]]
    for ln in d.denied_lines or d.lines:
        reasons = "; ".join(
            f"{r.group + '-' if r.group else ''}{r.code} ({r.meaning or 'no description'})" for r in ln.reasons
        )
        rows.append(
            [
                str(ln.sequence or ""),
                "-".join([ln.code or "?", *ln.modifiers]),
                f"{ln.units:g}" if ln.units is not None else "",
                money(ln.submitted),
                money(ln.paid),
                ln.status,
                reasons,
            ]
        )
    remit_blocks = [
        ExhibitBlock("text", f"Payer decision {d.reference}, dated {long_date(d.notice_date)}.", source=d.reference),
        ExhibitBlock("table", rows=rows, source=d.reference),
    ]
    if d.disposition:
        remit_blocks.append(ExhibitBlock("text", f"Payer's disposition: {clean(d.disposition)}", source=d.reference))
    add(
        "remittance",
        "Remittance decision and denied claim lines",
        [d.reference, *([d.claim_reference] if d.claim_reference else [])],
        remit_blocks,
    )

    # daily notes of each denied visit
    docs = _patient_docs(src)
    for ev in src.evaluations:
        v = ev.visit
        note_docs = [
            doc
            for doc in docs
            if any(
                index.resolve(e, doc) is index.get("Encounter", v.encounter_id)
                for e in elements(element(doc, "context"), "encounter")
            )
        ]
        blocks: list[ExhibitBlock] = []
        sources: list[str] = []
        pdf = None
        for doc in note_docs:
            b, p = _doc_blocks(doc, index.label(doc))
            blocks.extend(b)
            sources.append(index.label(doc))
            pdf = pdf or p
        if not note_docs:
            for n in v.notes:
                blocks.append(ExhibitBlock("text", n.text, source=n.reference))
                sources.append(n.reference)
        proc_rows = [["Code", "Minutes", "Recorded in"]] + [
            [p.code, str(p.minutes) if p.minutes is not None else "not recorded", p.reference] for p in v.procedures
        ]
        blocks.append(ExhibitBlock("heading", "Minutes by procedure"))
        blocks.append(ExhibitBlock("table", rows=proc_rows))
        sources.extend(p.reference for p in v.procedures)
        if not sources:
            gaps.append(f"the daily note of {long_date(v.visit_date)}")
        label = add(
            "daily-note", f"Daily treatment note, {long_date(v.visit_date)}", list(dict.fromkeys(sources)), blocks, pdf
        )
        labels[v.encounter_reference] = label

    last = max((v.visit_date for v in src.visits if v.visit_date), default=None)

    def dated(doc: Resource) -> date | None:
        return parse_date(doc.get("date"))

    evals = [
        doc
        for doc in docs
        if _EVALUATION.search(codes.text_of(doc.get("type"))) and not _PROGRESS.search(codes.text_of(doc.get("type")))
    ]
    if evals:
        blocks = []
        for doc in evals:
            b, _ = _doc_blocks(doc, index.label(doc))
            blocks.extend(b)
        add("evaluation", "Initial evaluation", [index.label(x) for x in evals], blocks)
    else:
        gaps.append("the initial evaluation note (none in the chart)")

    # plan of care, goals, referral
    v0 = src.visits[0]
    plan_blocks: list[ExhibitBlock] = []
    plan_sources: list[str] = []
    for plan in v0.plans:
        res = index.get("CarePlan", plan.reference.split("/")[-1])
        title = (res or {}).get("title") or "Plan of care"
        desc = (res or {}).get("description") or ""
        plan_blocks.append(ExhibitBlock("heading", str(title), source=plan.reference))
        text = f"Period {long_date(plan.start)} to {long_date(plan.end)}."
        if plan.certified:
            text += f" Certified (signed) {long_date(plan.certified)}."
        if plan.planned_codes:
            text += f" Planned services: {', '.join(plan.planned_codes)}."
        plan_blocks.append(ExhibitBlock("text", f"{text} {clean(str(desc))}".strip(), source=plan.reference))
        plan_sources.append(plan.reference)
    if v0.goals:
        plan_blocks.append(ExhibitBlock("heading", "Goals"))
        plan_blocks.append(
            ExhibitBlock(
                "table",
                rows=[["Goal", "Target date", "Status"]] + [[g.text, long_date(g.due), g.status] for g in v0.goals],
            )
        )
        plan_sources.extend(g.reference for g in v0.goals)
    for r in v0.referrals:
        plan_blocks.append(
            ExhibitBlock(
                "text",
                f"Referral / order from {r.requester or 'the referring clinician'}, dated {long_date(r.authored)}.",
                source=r.reference,
            )
        )
        plan_sources.append(r.reference)
    if plan_blocks:
        add("plan-of-care", "Plan of care, goals and referral", plan_sources, plan_blocks)
    else:
        gaps.append("the plan of care (none in the chart)")

    reports = [
        doc
        for doc in docs
        if _PROGRESS.search(codes.text_of(doc.get("type"))) and (last is None or (dated(doc) or date.min) <= last)
    ]
    if reports:
        blocks = []
        for doc in reports:
            b, _ = _doc_blocks(doc, index.label(doc))
            blocks.extend(b)
        add("progress-report", "Progress reports", [index.label(x) for x in reports], blocks)

    measures = sorted(v0.measures, key=lambda m: (m.name.lower(), m.when or date.min))
    if measures:
        rows = [["Date", "Measure", "Value", "Source"]] + [
            [long_date(m.when), m.name, m.value, m.reference] for m in measures
        ]
        add(
            "measures",
            "Objective measures over time",
            [m.reference for m in measures],
            [ExhibitBlock("table", rows=rows)],
        )
    else:
        gaps.append("objective measures (no Observations in the chart)")
    return exhibits, labels, gaps
