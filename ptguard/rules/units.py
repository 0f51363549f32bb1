"""Timed-code units: the CMS total-time method (8-minute rule) and the per-code method."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Literal

from ptguard.rules.tables import effective_row

Method = Literal["cms", "per-code"]
METHODS: tuple[Method, ...] = ("cms", "per-code")


@dataclass(frozen=True)
class UnitRule:
    """Minutes per unit and the fewest minutes that earn one, with the rule's source."""

    unit_minutes: int
    minimum_minutes: int
    source: str

    @classmethod
    def on(cls, day: date | None = None) -> UnitRule:
        row = effective_row("timed-units", day or date.today())
        return cls(int(row["unit_minutes"]), int(row["minimum_minutes"]), str(row["source"]))

    def units_for(self, minutes: int) -> int:
        """Units a number of minutes supports: 8–22 → 1, 23–37 → 2, … (below the minimum → 0)."""
        if minutes < self.minimum_minutes:
            return 0
        return (minutes + self.unit_minutes - self.minimum_minutes) // self.unit_minutes


@dataclass(frozen=True)
class UnitResult:
    """Units per code under one method, and the minutes they came from."""

    method: Method
    total_minutes: int
    total_units: int
    units: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        return {"method": self.method, "total_minutes": self.total_minutes, "units": dict(self.units)}


def cms_units(minutes_by_code: Mapping[str, int], rule: UnitRule) -> UnitResult:
    """CMS total-time method: units from the day's total timed minutes, then assigned to codes.

    Each code first gets one unit per full unit of its own minutes; the units left over go, one at a time,
    to the codes with the most leftover minutes (ties: more total minutes, then code order).
    """
    clean = {code: max(0, int(m)) for code, m in minutes_by_code.items()}
    total = sum(clean.values())
    total_units = rule.units_for(total)
    units = {code: m // rule.unit_minutes for code, m in clean.items()}
    remaining = total_units - sum(units.values())
    order = sorted(clean, key=lambda c: (-(clean[c] % rule.unit_minutes), -clean[c], c))
    i = 0
    while remaining > 0 and order:
        units[order[i % len(order)]] += 1
        remaining -= 1
        i += 1
    return UnitResult("cms", total, total_units, units)


def per_code_units(minutes_by_code: Mapping[str, int], rule: UnitRule) -> UnitResult:
    """Per-code ("substantial portion") method: each code's own minutes read against the unit table."""
    clean = {code: max(0, int(m)) for code, m in minutes_by_code.items()}
    units = {code: rule.units_for(m) for code, m in clean.items()}
    return UnitResult("per-code", sum(clean.values()), sum(units.values()), units)


def compute_units(minutes_by_code: Mapping[str, int], method: Method, rule: UnitRule) -> UnitResult:
    """Units per code by the chosen method."""
    return cms_units(minutes_by_code, rule) if method == "cms" else per_code_units(minutes_by_code, rule)
