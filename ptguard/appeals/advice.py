"""Whether to ask for external review once internal appeals are exhausted, and why (or why not)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ptguard.denials.deadlines import payer_type
from ptguard.denials.decode import Denial
from ptguard.rules.engine import Evaluation

HIGH_DOLLAR = 1000.0
LONG_EPISODE_DAYS = 60
PATTERN_MIN = 2
MEDICAL_JUDGEMENT = {"medical-necessity", "non-covered", "benefit-maximum", "units-frequency", "authorization"}


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
    high_dollar: float = HIGH_DOLLAR,
) -> ExternalReviewAdvice:
    """Weigh the four grounds (clinical dispute, policy misapplied, high stakes with strong records, a pattern)."""
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
    if strong and met and denial.category in MEDICAL_JUDGEMENT:
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
    if strong and episode_days >= LONG_EPISODE_DAYS:
        reasons.append(f"The episode has run {episode_days} days with complete documentation.")
    if same_denials >= PATTERN_MIN:
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
    if denial.category not in MEDICAL_JUDGEMENT:
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
    eligible = ptype == "commercial" and denial.category in MEDICAL_JUDGEMENT
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
