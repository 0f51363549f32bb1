"""Whether to ask for external review once internal appeals are exhausted, and why (or why not)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

from ptguard.denials.deadlines import payer_type
from ptguard.denials.decode import DATA_DIR, Denial, carc_table
from ptguard.errors import NotFoundError, RuleFileError
from ptguard.rules.engine import Evaluation
from ptguard.rules.tables import effective_rows, table

TABLE = "external-review-advice"
WHERE = f"denials/data/{TABLE}.yaml"


@dataclass(frozen=True)
class AdviceThresholds:
    """The cut-offs of one effective-dated row of external-review-advice.yaml (ptguard heuristics, not regulation)."""

    high_dollar: float
    long_episode_days: int
    pattern_min: int
    medical_judgement: frozenset[str]
    effective_from: str
    sources: dict[str, str]


def _number(row: Mapping[str, Any], key: str, where: str, *, integer: bool) -> float:
    value: Any = row.get(key)
    kind_ok = isinstance(value, int) or (not integer and isinstance(value, float))
    if isinstance(value, bool) or not kind_ok or value <= 0:
        raise RuleFileError(f"{key} must be a positive {'whole number' if integer else 'number'}", where=where)
    return float(value)


@lru_cache(maxsize=64)
def thresholds(on: date, data_dir: Path | None = None) -> AdviceThresholds:
    """The advice thresholds in effect on `on` (the latest-starting row), checked: numbers, categories, sources."""
    data = table(TABLE, data_dir or DATA_DIR)
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows or not isinstance(data.get("source"), str):
        raise RuleFileError("needs a `source` line and a non-empty `rows` list", where=WHERE)
    found = effective_rows(rows, on, WHERE)
    if not found:  # before federal external review existed (2011): no advice, not a broken file
        raise NotFoundError(f"no external-review advice rule in effect on {on.isoformat()}", where=WHERE)
    row = max(found, key=lambda r: str(r.get("effective_from") or ""))
    where = f"{WHERE} rows[{rows.index(row)}]"
    known = {str(c["id"]) for c in carc_table()["categories"]}
    cats = row.get("medical_judgement_categories")
    if not isinstance(cats, list) or not cats or not set(map(str, cats)) <= known:
        raise RuleFileError("medical_judgement_categories must list category ids of carc.yaml", where=where)
    keys = ("high_dollar", "long_episode", "pattern", "medical_judgement")
    sources = {k: row.get(f"{k}_source") for k in keys}
    missing = [f"{k}_source" for k, v in sources.items() if not isinstance(v, str) or not v.strip()]
    if missing:
        raise RuleFileError(f"every threshold needs its source line ({', '.join(missing)} missing)", where=where)
    return AdviceThresholds(
        high_dollar=_number(row, "high_dollar", where, integer=False),
        long_episode_days=int(_number(row, "long_episode_days", where, integer=True)),
        pattern_min=int(_number(row, "pattern_min", where, integer=True)),
        medical_judgement=frozenset(map(str, cats)),
        effective_from=str(row.get("effective_from")),
        sources={k: str(v) for k, v in sources.items()},
    )


@dataclass
class ExternalReviewAdvice:
    """The recommendation, its reasons for and against, and whether it applies yet."""

    recommend: bool
    applies: bool
    summary: str
    reasons: list[str] = field(default_factory=list)
    against: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recommend": self.recommend,
            "applies": self.applies,
            "summary": self.summary,
            "reasons": self.reasons,
            "against": self.against,
        }


def external_review_advice(
    denial: Denial,
    evaluations: list[Evaluation],
    *,
    payer_id: str,
    internal_exhausted: bool,
    same_denials: int = 0,
    on: date | None = None,
) -> ExternalReviewAdvice:
    """Weigh the four grounds (clinical dispute, policy misapplied, high stakes with strong records, a pattern).
    The cut-offs come from external-review-advice.yaml, picked by `on` (default: the denial's notice date, else
    today)."""
    when = on or denial.notice_date or date.today()
    try:
        cut = thresholds(when)
    except NotFoundError:
        return ExternalReviewAdvice(
            False, False, f"No external-review rule is on file for a notice dated {when.isoformat()}: no advice."
        )
    judgement = cut.medical_judgement
    high_dollar = cut.high_dollar
    reasons: list[str] = []
    against: list[str] = []
    critical = [
        f for ev in evaluations for f in ev.problems if f.severity == "critical" and f.category != "data-quality"
    ]
    strong = not critical
    met = [f for ev in evaluations for f in ev.findings if not f.is_problem]
    policy = evaluations[0].payer.policy.label() if evaluations else "the payer's policy"
    if denial.category == "medical-necessity" and strong:
        reasons.append(
            "The dispute is about clinical appropriateness; an independent clinical reviewer decides that, "
            "not the plan's own staff."
        )
    if strong and met and denial.category in judgement:
        reasons.append(
            f"The chart meets each criterion of {policy} that ptguard checks ({len(met)} met, none missing), "
            "so the plan appears to have misapplied its own policy."
        )
    episode_days = max(
        (
            (ev.visit.visit_date - ev.visit.episode_start).days
            for ev in evaluations
            if ev.visit.visit_date and ev.visit.episode_start
        ),
        default=0,
    )
    if strong and denial.amount_at_stake >= high_dollar:
        reasons.append(f"${denial.amount_at_stake:,.2f} is at stake and the documentation is complete.")
    if strong and episode_days >= cut.long_episode_days:
        reasons.append(f"The episode has run {episode_days} days with complete documentation.")
    if same_denials >= cut.pattern_min:
        reasons.append(
            f"The same payer denied {same_denials} other claims in this category: an external decision can "
            "settle the question for the claims that follow."
        )
    if critical:
        against.append(
            "The chart lacks documentation the payer's criteria require ("
            + ", ".join(sorted({f.id for f in critical}))
            + "); an external reviewer reads the same records and is unlikely to decide otherwise."
        )
    if denial.category not in judgement:
        against.append(
            f"A {denial.category_label.lower()} denial turns on coding or contract terms rather than medical "
            "judgement; federal external review covers medical-judgement decisions, so it may not be eligible."
        )
    ptype = payer_type(payer_id)
    if ptype == "medicare":
        against.append(
            "Original Medicare has no external review: after redetermination the next level, reconsideration by a "
            "Qualified Independent Contractor, is already independent."
        )
    elif ptype == "medicare-advantage":
        against.append(
            "A Medicare Advantage plan that upholds its denial sends the case to the Independent Review Entity itself."
        )
    elif ptype == "medicaid-mco":
        against.append(
            "After the plan appeal, a Medicaid member's next step is a state fair hearing (some states add external review)."
        )
    eligible = ptype == "commercial" and denial.category in judgement
    recommend = eligible and bool(reasons) and strong
    if not internal_exhausted:
        summary = "Not yet: finish the internal appeal first. " + (
            "If it is upheld, external review looks worthwhile."
            if recommend
            else "If it is upheld, external review looks unlikely to help."
        )
    elif recommend:
        summary = "Yes: request external review."
    else:
        summary = "External review is not recommended."
    return ExternalReviewAdvice(recommend and internal_exhausted, internal_exhausted, summary, reasons, against)
