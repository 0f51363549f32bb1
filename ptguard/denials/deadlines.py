"""Appeal deadlines by payer type and level, from effective-dated data, with the rule that set each one."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml

from ptguard.denials.decode import DATA_DIR
from ptguard.errors import ConfigError, NotFoundError
from ptguard.rules.tables import effective_rows, table


@dataclass(frozen=True)
class Deadline:
    """The due date of one appeal level and how it was reached."""

    payer_type: str
    level: str
    label: str
    due: date
    days_left: int
    rule: str
    basis: str
    contract_override: bool = False

    @property
    def overdue(self) -> bool:
        return self.days_left < 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "payer_type": self.payer_type,
            "level": self.level,
            "label": self.label,
            "due": self.due.isoformat(),
            "days_left": self.days_left,
            "rule": self.rule,
            "basis": self.basis,
            "contract_override": self.contract_override,
        }


def payer_type(payer_id: str) -> str:
    """medicare, medicare-advantage, medicaid-mco or commercial, from deadlines.yaml."""
    for ptype, payers in table("deadlines", DATA_DIR)["payer_types"].items():
        if payer_id in payers:
            return str(ptype)
    return "commercial"


def levels(ptype: str, on: date) -> list[dict[str, Any]]:
    """The appeal levels of a payer type in effect on a date, in order."""
    rows = [
        dict(r)
        for r in effective_rows(table("deadlines", DATA_DIR)["rows"], on, "deadlines")
        if r["payer_type"] == ptype
    ]
    return sorted(rows, key=lambda r: int(r["order"]))


def canonical_level(level: str) -> str:
    """The level name used in deadlines.yaml for a level or one of its short names (council, court, internal…)."""
    aliases = table("deadlines", DATA_DIR).get("level_aliases") or {}
    return str(aliases.get(level, level))


def first_level(ptype: str, on: date) -> str:
    """The first appeal level (reopening is not an appeal level)."""
    found = [str(r["level"]) for r in levels(ptype, on) if r["level"] != "reopening"]
    if not found:
        raise NotFoundError(f"no appeal level for {ptype} payers is on file for {on.isoformat()}")
    return found[0]


def next_level(ptype: str, current: str, on: date) -> str | None:
    """The level after `current`, or None at the last level."""
    rows = [r for r in levels(ptype, on) if r["level"] != "reopening"]
    names = [str(r["level"]) for r in rows]
    if current not in names:
        raise NotFoundError(f"no appeal level {current!r} for {ptype} payers (levels: {', '.join(names)})")
    i = names.index(current)
    return names[i + 1] if i + 1 < len(names) else None


def _add_months(d: date, months: int) -> date:
    month = d.month - 1 + months
    year = d.year + month // 12
    month = month % 12 + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def load_contract_overrides(path: Path | None) -> dict[str, dict[str, int]]:
    """Contract-specific filing limits: {payer_id: {level: days}} from a YAML/JSON file."""
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"contract deadlines cannot be read ({type(exc).__name__})", where=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError("contract deadlines must map payer id → {level: days}", where=str(path))
    out: dict[str, dict[str, int]] = {}
    for payer, lv in data.items():
        if not isinstance(lv, dict) or not all(isinstance(v, int) and v > 0 for v in lv.values()):
            raise ConfigError(f"{payer}: each level needs a positive number of days", where=str(path))
        out[str(payer)] = {str(k): int(v) for k, v in lv.items()}
    return out


def compute_deadline(
    payer_id: str,
    notice_date: date,
    *,
    today: date,
    level: str | None = None,
    contract: dict[str, dict[str, int]] | None = None,
) -> Deadline:
    """Due date of `level` (default: the first appeal level) for a notice dated `notice_date`."""
    ptype = payer_type(payer_id)
    rows = levels(ptype, notice_date)
    level = canonical_level(level) if level else first_level(ptype, notice_date)
    row = next((r for r in rows if r["level"] == level), None)
    if row is None:
        names = ", ".join(str(r["level"]) for r in rows)
        raise NotFoundError(f"no appeal level {level!r} for {ptype} payers (levels: {names})")
    presumption = int(row.get("receipt_presumption_days") or 0)
    start = notice_date + timedelta(days=presumption) if row["from"] == "receipt" else notice_date
    override = (contract or {}).get(payer_id, {}).get(level)
    if override:
        due = start + timedelta(days=override)
        rule = f"contract filing limit for {payer_id}: {override} days"
        basis = f"{override} days from the notice dated {notice_date.isoformat()} (contract; the regulatory floor is {row['rule']})"
    else:
        due = _add_months(start, int(row["months"])) if row.get("months") else start + timedelta(days=int(row["days"]))
        span = f"{row['months']} months" if row.get("months") else f"{row['days']} days"
        if presumption:
            basis = (
                f"{span} from receipt; receipt presumed {presumption} days after the notice dated "
                f"{notice_date.isoformat()}, i.e. {start.isoformat()}"
            )
        else:
            basis = f"{span} from the notice dated {notice_date.isoformat()}"
        rule = str(row["rule"])
    return Deadline(ptype, level, str(row["label"]), due, (due - today).days, rule, basis, bool(override))
