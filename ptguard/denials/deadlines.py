"""Appeal deadlines by payer type and level, from effective-dated data, with the rule that set each one."""

from __future__ import annotations

import calendar
import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml

from ptguard.denials.decode import DATA_DIR
from ptguard.errors import ConfigError, InputError, NotFoundError
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
    period: str = ""  # the time limit and what it counts from, e.g. "60 days from receipt of"

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
            "period": self.period,
        }


def payer_types() -> list[str]:
    """The payer types deadlines.yaml knows (medicare, medicare-advantage, medicaid-mco, commercial)."""
    return [str(t) for t in table("deadlines", DATA_DIR)["payer_types"]]


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


def is_later_level(ptype: str, level: str, on: date) -> bool:
    """True for a level that runs from the decision of the level before it (not from the denial notice)."""
    level = canonical_level(level)
    return level != "reopening" and level != first_level(ptype, on)


def previous_level(ptype: str, level: str, on: date) -> str | None:
    """The appeal level before `level` (None for the first level and for reopening)."""
    names = [str(r["level"]) for r in levels(ptype, on) if r["level"] != "reopening"]
    level = canonical_level(level)
    return names[names.index(level) - 1] if level in names and names.index(level) > 0 else None


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


MAX_CONTRACT_DAYS = 3650  # a filing limit longer than ten years is a typing error, not a contract


class _DuplicateKeyError(Exception):
    """A YAML mapping that names the same key twice (yaml.safe_load would keep the last silently)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise _DuplicateKeyError(str(key)[:40])
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_contract_overrides(path: Path | None) -> dict[str, dict[str, int]]:
    """Contract-specific filing limits: {payer_id: {level: days}} from a YAML/JSON file, every entry checked.

    A payer id must have a criteria file and each level must be one of that payer type's levels, so a typo
    ("Aetna", "internal" for a Medicaid plan) is an error rather than a limit that is silently never applied.
    """
    from ptguard.config import load_settings
    from ptguard.rules.criteria_files import available_payers

    if path is None:
        return {}
    if not path.is_file():
        raise ConfigError("contract deadlines: not a readable file", where=str(path))
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except _DuplicateKeyError as exc:
        raise ConfigError(f"contract deadlines name {exc} twice", where=str(path)) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"contract deadlines cannot be read ({type(exc).__name__})", where=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError("contract deadlines must map payer id → {level: days}", where=str(path))
    payers = available_payers(load_settings().criteria_dir)
    rows = table("deadlines", DATA_DIR)["rows"]
    out: dict[str, dict[str, int]] = {}
    for payer, lv in data.items():
        name = str(payer)[:40]
        if str(payer) not in payers:
            raise ConfigError(f"unknown payer id {name!r} (known: {', '.join(payers)})", where=str(path))
        if not isinstance(lv, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_CONTRACT_DAYS for v in lv.values()
        ):
            raise ConfigError(f"{name}: each level needs a whole number of days from 1 to {MAX_CONTRACT_DAYS}",
                              where=str(path))
        ptype = payer_type(str(payer))
        known = sorted({str(r["level"]) for r in rows if r["payer_type"] == ptype})
        levels_given = {canonical_level(str(k)): int(v) for k, v in lv.items()}
        if len(levels_given) < len(lv):
            raise ConfigError(f"{name}: a level is given twice (a short name and its full name)", where=str(path))
        unknown = sorted(set(levels_given) - set(known))
        if unknown:
            raise ConfigError(
                f"{name}: {unknown[0][:40]!r} is not an appeal level of {ptype} payers (levels: {', '.join(known)})",
                where=str(path),
            )
        out[str(payer)] = levels_given
    return out


_CONFIGURED: tuple[tuple[str, int, int], dict[str, dict[str, int]]] | None = None


def configured_contract() -> dict[str, dict[str, int]]:
    """The contract limits of PTGUARD_CONTRACT_DEADLINES (empty when unset), re-read when the file changes."""
    global _CONFIGURED
    raw = os.environ.get("PTGUARD_CONTRACT_DEADLINES")
    if not raw:
        return {}
    path = Path(raw).expanduser()
    try:
        st = path.stat()
    except OSError:
        raise ConfigError("contract deadlines: not a readable file", where=f"PTGUARD_CONTRACT_DEADLINES={path}") from None
    key = (str(path), st.st_mtime_ns, st.st_size)
    cached = _CONFIGURED  # one read of the global: another thread may rebind it meanwhile
    if cached is not None and cached[0] == key:
        return cached[1]
    value = load_contract_overrides(path)
    _CONFIGURED = (key, value)
    return value


def compute_deadline(
    payer_id: str,
    notice_date: date,
    *,
    today: date,
    level: str | None = None,
    contract: dict[str, dict[str, int]] | None = None,
) -> Deadline:
    """Due date of `level` (default: the first appeal level) for a notice dated `notice_date`.

    `contract` None means the limits configured in PTGUARD_CONTRACT_DEADLINES; pass {} for the regulatory floor only.
    """
    ptype = payer_type(payer_id)
    rows = levels(ptype, notice_date)
    given = level
    level = canonical_level(level) if level else first_level(ptype, notice_date)
    row = next((r for r in rows if r["level"] == level), None)
    if row is None:
        names = ", ".join(str(r["level"]) for r in rows)
        raise NotFoundError(f"no appeal level {given or level!r} for {ptype} payers (levels: {names})")
    presumption = int(row.get("receipt_presumption_days") or 0)
    if contract is None:
        contract = configured_contract()
    override = contract.get(payer_id, {}).get(level)
    try:
        start = notice_date + timedelta(days=presumption) if row["from"] == "receipt" else notice_date
        if override:  # a contract counts its days from the date of the notice, with no receipt presumption
            due = notice_date + timedelta(days=override)
        elif row.get("months"):
            due = _add_months(start, int(row["months"]))
        else:
            due = start + timedelta(days=int(row["days"]))
    except (OverflowError, ValueError):
        raise InputError(
            f"no deadline can be counted from a notice dated {notice_date.isoformat()}: the date is out of range"
        ) from None
    if override:
        period = f"{override} days from"
        rule = f"contract filing limit for {payer_id}: {override} days"
        basis = f"{override} days from the notice dated {notice_date.isoformat()} (contract; the regulatory floor is {row['rule']})"
    else:
        span = f"{row['months']} months" if row.get("months") else f"{row['days']} days"
        period = f"{span} from receipt of" if presumption else f"{span} from"
        if presumption:
            basis = (
                f"{span} from receipt; receipt presumed {presumption} days after the notice dated "
                f"{notice_date.isoformat()}, i.e. {start.isoformat()}"
            )
        else:
            basis = f"{span} from the notice dated {notice_date.isoformat()}"
        rule = str(row["rule"])
    return Deadline(ptype, level, str(row["label"]), due, (due - today).days, rule, basis, bool(override), period)
