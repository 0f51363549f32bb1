"""Load payer criteria files (YAML), validate them against the JSON Schema, and resolve `extends`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import yaml
from jsonschema import Draft202012Validator

from ptguard.config import PACKAGE_DIR
from ptguard.errors import NotFoundError, RuleFileError
from ptguard.findings import Citation, Severity

PAYER_ID = re.compile(r"[a-z][a-z0-9-]{0,49}")
SCHEMA_PATH = PACKAGE_DIR.parent / "schemas" / "payer-criteria.schema.json"
DEFAULT_CRITERIA_DIR = PACKAGE_DIR / "rules" / "criteria"


class _StringDateLoader(yaml.SafeLoader):
    """SafeLoader that leaves dates as strings, so files validate against the schema as written."""


_StringDateLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class Criterion:
    """One payer criterion: what it checks, how serious a miss is, the policy behind it and the fix."""

    id: str
    check: str
    title: str
    checks: str
    severity: Severity
    citation: Citation
    fix: str
    example: str | None
    effective_from: date | None
    effective_to: date | None
    params: dict[str, Any]
    source_file: str

    def in_effect(self, on: date | None) -> bool:
        if on is None:
            return True
        return (self.effective_from is None or self.effective_from <= on) and (
            self.effective_to is None or on <= self.effective_to
        )


@dataclass(frozen=True)
class PayerCriteria:
    """A payer's resolved criteria (its file merged over the files it extends)."""

    payer: str
    name: str
    unit_method: str
    discipline_modifier_required: bool
    policy: Citation
    criteria: tuple[Criterion, ...]
    files: tuple[str, ...] = field(default=())


@cache
def _validator() -> Draft202012Validator:
    schema = orjson.loads(SCHEMA_PATH.read_bytes())
    return Draft202012Validator(schema)


def read_criteria_file(path: Path) -> dict[str, Any]:
    """Parse and schema-check one file; errors name the file, the JSON path and the reason."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StringDateLoader)  # noqa: S506 - SafeLoader subclass
    except FileNotFoundError:
        raise RuleFileError("criteria file not found", where=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise RuleFileError(f"{pos}invalid YAML ({getattr(exc, 'problem', exc)})", where=str(path)) from None
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        raise RuleFileError(f"{err.json_path}: {err.message}", where=str(path))
    assert isinstance(data, dict)
    return data


def _citation(raw: dict[str, Any] | None, fallback: Citation) -> Citation:
    if not raw:
        return fallback
    number = raw.get("number")
    if raw.get("section"):
        number = f"{number} {raw['section']}".strip() if number else raw["section"]
    return Citation(str(raw["source"]), number, raw.get("url"))


def _date(value: Any) -> date | None:
    return date.fromisoformat(value) if isinstance(value, str) else None


def _resolve(
    payer: str, directory: Path, chain: tuple[str, ...]
) -> tuple[dict[str, Any], list[dict[str, Any]], tuple[str, ...]]:
    if payer in chain:
        raise RuleFileError(f"'extends' forms a cycle: {' → '.join((*chain, payer))}", where=str(directory))
    require_payer(payer, directory)
    path = directory / f"{payer}.yaml"
    data = read_criteria_file(path)
    if data["payer"] != payer:
        raise RuleFileError(f"$.payer: {data['payer']!r} does not match the file name", where=str(path))
    merged: dict[str, Any] = {}
    crits: list[dict[str, Any]] = []
    files: tuple[str, ...] = ()
    if data.get("extends"):
        try:
            merged, crits, files = _resolve(data["extends"], directory, (*chain, payer))
        except NotFoundError as exc:
            raise NotFoundError(exc.message, where=exc.where or f"{path} $.extends") from None
    for key, value in data.items():
        if key != "criteria":
            merged[key] = value
    by_id = {c["id"]: i for i, c in enumerate(crits)}
    for i, crit in enumerate(data.get("criteria") or []):
        crit = {**crit, "_file": str(path), "_path": f"$.criteria[{i}]"}
        if crit["id"] in by_id:
            crits[by_id[crit["id"]]] = {**crits[by_id[crit["id"]]], **crit}
        else:
            by_id[crit["id"]] = len(crits)
            crits.append(crit)
    return merged, crits, (*files, str(path))


@cache
def load_payer(payer: str, directory: Path = DEFAULT_CRITERIA_DIR) -> PayerCriteria:
    """A payer's criteria, resolved and checked; cached per (payer, directory)."""
    merged, crits, files = _resolve(payer, directory, ())
    policy = _citation(merged.get("policy"), Citation(merged["name"]))
    out: list[Criterion] = []
    for c in crits:
        if c.get("enabled", True) is False:
            continue
        missing = [k for k in ("check", "title", "checks", "severity", "fix") if not c.get(k)]
        if missing:
            raise RuleFileError(f"{c['_path']}: criterion {c['id']!r} lacks {', '.join(missing)}", where=c["_file"])
        out.append(
            Criterion(
                id=c["id"],
                check=c["check"],
                title=c["title"],
                checks=c["checks"],
                severity=c["severity"],
                citation=_citation(c.get("citation"), policy),
                fix=c["fix"],
                example=c.get("example"),
                effective_from=_date(c.get("effective_from")),
                effective_to=_date(c.get("effective_to")),
                params=dict(c.get("params") or {}),
                source_file=c["_file"],
            )
        )
    return PayerCriteria(
        payer=payer,
        name=merged["name"],
        unit_method=merged.get("unit_method", "cms"),
        discipline_modifier_required=bool(merged.get("discipline_modifier_required", True)),
        policy=policy,
        criteria=tuple(out),
        files=files,
    )


def available_payers(directory: Path = DEFAULT_CRITERIA_DIR) -> list[str]:
    """Payer ids that have a criteria file (files starting with '_' are shared bases)."""
    return sorted(p.stem for p in directory.glob("*.yaml") if PAYER_ID.fullmatch(p.stem))


def require_payer(payer: str, directory: Path | None = None) -> str:
    """`payer` when it has a criteria file (PTGUARD_CRITERIA_DIR by default), else NotFoundError listing the known ids
    (RuleFileError, exit 4, when the folder has no criteria files at all)."""
    if directory is None:
        from ptguard.config import load_settings

        directory = load_settings().criteria_dir
    if known_payer(payer, directory):
        return payer
    payers = available_payers(directory)
    if not payers:  # a wrong PTGUARD_CRITERIA_DIR, not an unknown payer
        what = "is not a folder" if not directory.is_dir() else "holds no payer criteria files (<payer-id>.yaml)"
        raise RuleFileError(f"the criteria folder {what}; set PTGUARD_CRITERIA_DIR to one", where=str(directory))
    known = ", ".join(payers)
    if not PAYER_ID.fullmatch(payer):
        raise NotFoundError(f"{payer[:40]!r} is not a payer id (lower-case letters, digits and '-'); known: {known}")
    raise NotFoundError(f"unknown payer id {payer!r}; known payers: {known}")


def known_payer(payer: str, directory: Path = DEFAULT_CRITERIA_DIR) -> bool:
    """True when `payer` is a well-formed id with a criteria file (safe to pass to load_payer)."""
    return bool(PAYER_ID.fullmatch(payer)) and (directory / f"{payer}.yaml").is_file()
