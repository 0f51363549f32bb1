"""Every row of the appeal-deadline table, a notice in one year due in the next, and a non-UTC notice stamp."""

from __future__ import annotations

from datetime import date

import pytest

from ptguard.denials.deadlines import compute_deadline
from ptguard.denials.decode import decode

NOTICE = date(2026, 11, 20)
TODAY = date(2026, 12, 3)

# (payer id, level, due date, words of the rule) — from shared/domain/billing-97530.md §7, worked by hand.
ROWS = [
    ("medicare", "reopening", date(2027, 11, 20), "405.980"),
    ("medicare", "redetermination", date(2027, 3, 25), "405.942"),  # 5-day receipt + 120
    ("medicare", "reconsideration", date(2027, 5, 24), "405.962"),  # 5 + 180
    ("medicare", "alj", date(2027, 1, 24), "405.1014"),  # 5 + 60
    ("medicare", "appeals-council", date(2027, 1, 24), "405.1102"),
    ("medicare", "federal-court", date(2027, 1, 24), "405.1136"),
    ("medicare-advantage", "plan-reconsideration", date(2027, 1, 24), "422.582"),  # 65 days
    ("medicare-advantage", "alj", date(2027, 1, 19), "422.602"),
    ("aetna", "internal-appeal", date(2027, 5, 19), "2560.503-1"),  # 180 days
    ("cigna", "external-review", date(2027, 3, 20), "147.136(d)"),  # 4 months
    ("medicaid-mco", "plan-appeal", date(2027, 1, 19), "438.402"),  # 60 days
    ("medicaid-mco", "state-fair-hearing", date(2027, 3, 20), "438.408"),  # 120 days
]


@pytest.mark.parametrize(("payer", "level", "due", "rule"), ROWS, ids=[f"{p}-{lv}" for p, lv, _, _ in ROWS])
def test_every_row(payer: str, level: str, due: date, rule: str) -> None:
    d = compute_deadline(payer, NOTICE, today=TODAY, level=level)
    assert d.due == due
    assert rule in d.rule
    assert d.days_left == (due - TODAY).days
    assert d.due.year == 2027  # a notice in 2026, due in the next year


def test_non_utc_notice_stamp_keeps_its_own_date() -> None:
    # 22:30 on 31 Dec in UTC-8 is already 1 Jan in UTC: the notice date is the one the payer wrote.
    cr = {"resourceType": "ClaimResponse", "id": "x", "created": "2026-12-31T22:30:00-08:00", "outcome": "complete"}
    notice = decode(cr).notice_date
    assert notice == date(2026, 12, 31)
    d = compute_deadline("medicare", notice, today=date(2027, 1, 2))
    assert d.due == date(2027, 5, 5)  # 31 Dec + 5 days receipt = 5 Jan; + 120 days
