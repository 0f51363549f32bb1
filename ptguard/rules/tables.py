"""Effective-dated data tables (YAML under rules/data/), loaded once and picked by date of service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from ptguard.config import RULES_DIR
from ptguard.errors import RuleFileError

DATA_DIR = RULES_DIR / "data"


@cache
def _load(path: Path) -> Any:
    try:
        with path.open("rb") as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise RuleFileError("data table not found", where=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RuleFileError(f"invalid YAML{pos}", where=str(path)) from None


@cache
def table(name: str, data_dir: Path | None = None) -> Any:
    """The parsed contents of `rules/data/<name>.yaml` (parsed once per process)."""
    return _load((data_dir or DATA_DIR) / f"{name}.yaml")


def _as_date(value: Any, where: str) -> date | None:
    if value is None:
        return None
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise RuleFileError(f"{value!r} is not a date (YYYY-MM-DD)", where=where) from None


def in_effect(row: Mapping[str, Any], on: date, where: str = "table row") -> bool:
    """True when `on` falls within the row's effective_from..effective_to (inclusive; open ends allowed)."""
    start = _as_date(row.get("effective_from"), where)
    end = _as_date(row.get("effective_to"), where)
    return (start is None or start <= on) and (end is None or on <= end)


def effective_rows(rows: Sequence[Mapping[str, Any]], on: date, where: str = "table") -> list[Mapping[str, Any]]:
    """All rows in effect on a date."""
    return [r for i, r in enumerate(rows) if in_effect(r, on, f"{where} rows[{i}]")]


@cache
def effective_row(name: str, on: date, data_dir: Path | None = None) -> Mapping[str, Any]:
    """The single row of table `name` in effect on `on` (the latest-starting one if several)."""
    rows = table(name, data_dir).get("rows") or []
    found = effective_rows(rows, on, name)
    if not found:
        raise RuleFileError(f"no row in effect on {on.isoformat()}", where=f"rules/data/{name}.yaml")
    return max(found, key=lambda r: str(r.get("effective_from") or ""))
