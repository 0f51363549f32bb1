"""Units by the CMS 8-minute rule and the per-code method, including the manual's worked examples."""

from __future__ import annotations

from datetime import date

import pytest

from ptguard.rules.units import UnitRule, cms_units, per_code_units


@pytest.fixture
def rule() -> UnitRule:
    return UnitRule.on(date(2026, 11, 2))


def test_manual_example_24_plus_23(rule: UnitRule) -> None:
    result = cms_units({"97112": 24, "97110": 23}, rule)
    assert result.total_minutes == 47
    assert result.units == {"97112": 2, "97110": 1}


def test_manual_example_33_plus_7(rule: UnitRule) -> None:
    assert cms_units({"97110": 33, "97140": 7}, rule).units == {"97110": 2, "97140": 1}


def test_three_codes_of_eight_minutes(rule: UnitRule) -> None:
    minutes = {"97110": 8, "97112": 8, "97530": 8}
    assert cms_units(minutes, rule).total_units == 2
    assert per_code_units(minutes, rule).total_units == 3
    assert sum(cms_units(minutes, rule).units.values()) == 2


def test_seven_minutes_alone_is_not_billable(rule: UnitRule) -> None:
    assert cms_units({"97530": 7}, rule).units == {"97530": 0}
    assert per_code_units({"97530": 7}, rule).units == {"97530": 0}


@pytest.mark.parametrize(
    ("minutes", "units"),
    [
        (0, 0),
        (7, 0),
        (8, 1),
        (22, 1),
        (23, 2),
        (37, 2),
        (38, 3),
        (52, 3),
        (53, 4),
        (67, 4),
        (68, 5),
        (127, 8),
        (128, 9),
    ],
)
def test_unit_table(rule: UnitRule, minutes: int, units: int) -> None:
    assert rule.units_for(minutes) == units


def test_cms_assignment_gives_each_code_its_full_units(rule: UnitRule) -> None:
    result = cms_units({"97530": 31, "97110": 16, "97140": 8}, rule)
    assert result.total_units == 4  # 55 minutes
    assert result.units["97530"] >= 2 and result.units["97110"] >= 1
    assert sum(result.units.values()) == result.total_units


def test_cms_units_always_sum_to_the_total(rule: UnitRule) -> None:
    for a in range(0, 60, 7):
        for b in range(0, 45, 4):
            result = cms_units({"97530": a, "97110": b}, rule)
            assert sum(result.units.values()) == rule.units_for(a + b)
