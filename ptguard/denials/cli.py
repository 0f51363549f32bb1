"""`ptguard deadline`: the due date of an appeal level by payer type, with the rule behind it."""

from __future__ import annotations

import argparse
from datetime import date, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from ptguard.denials.deadlines import (
    Deadline,
    compute_deadline,
    levels,
    load_contract_overrides,
    payer_type,
    payer_types,
    previous_level,
)
from ptguard.errors import InputError
from ptguard.fhir.dates import date_option
from ptguard.rules.criteria_files import require_payer

SCHEMA = "https://ptguard.dev/schemas/deadline-output.schema.json"
def deadline_json(d: Deadline, notice: date, today: date, runs_from: str | None = None) -> dict[str, Any]:
    """The JSON of one level (schemas/deadline-output.schema.json `$defs/deadline`).

    `runs_from` names the earlier decision a later level counts from (in --all); its dates are then unknown.
    """
    later = runs_from is not None
    return {
        "payer_type": d.payer_type,
        "level": d.level,
        "label": d.label,
        "notice_date": notice.isoformat(),
        "runs_from": f"the {runs_from} decision" if later else "the notice",
        "due_date": None if later else d.due.isoformat(),
        "days_left": None if later else d.days_left,
        "overdue": None if later else d.overdue,
        "rule": d.rule,
        "basis": (
            f"{d.period} the {runs_from} decision: give that decision's date as --notice-date with --level {d.level}"
            if later else d.basis
        ),
        "contract_override": d.contract_override,
        "today": today.isoformat(),
    }


def cmd_deadline(args: argparse.Namespace, out: TextIO) -> int:
    if not args.payer_type and not args.payer:
        raise InputError("name the payer: --payer-type medicare|medicare-advantage|commercial|medicaid-mco, or --payer ID")
    types = payer_types()
    if args.payer_type and args.payer_type not in types:
        raise InputError(f"--payer-type {args.payer_type[:40]!r} is not one of: {', '.join(types)}")
    notice = date_option(args.notice_date, "--notice-date")
    today = date_option(args.today, "--today") if args.today else datetime.now().astimezone().date()
    # A payer id selects its payer type and its contract limits; a payer type alone uses the regulatory floor.
    payer = args.payer or args.payer_type
    if args.payer:
        require_payer(args.payer)
    if args.contract and not args.payer:
        raise InputError("--contract applies a payer's contract limits: give --payer ID with it")
    ptype = payer_type(payer)
    if args.payer_type and ptype != args.payer_type:
        raise InputError(f"--payer {args.payer} is a {ptype} payer, not {args.payer_type}")
    # --contract FILE, else (for a payer id) PTGUARD_CONTRACT_DEADLINES; a payer type alone: the regulatory floor.
    contract = load_contract_overrides(Path(args.contract)) if args.contract else (None if args.payer else {})
    names: list[str | None] = (
        [str(r["level"]) for r in levels(ptype, notice)] if args.all else [args.level or None]
    )
    found = [compute_deadline(payer, notice, today=today, level=n, contract=contract) for n in names]
    # With --all, only the first level (and reopening) run from this notice; each later one from the decision before it.
    rows = [
        deadline_json(d, notice, today, previous_level(ptype, d.level, notice) if args.all else None) for d in found
    ]
    if args.format == "json":
        data: dict[str, Any] = {"$schema": SCHEMA, "deadlines": rows} if args.all else {"$schema": SCHEMA, **rows[0]}
        out.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    out.write(f"{ptype} payer · notice dated {notice.isoformat()} · today {today.isoformat()}\n")
    for row in rows:
        if row["due_date"] is None:
            when = f"runs from {row['runs_from']}"
        else:
            left = row["days_left"]
            when = f"due {row['due_date']} ({-left} days overdue)" if left < 0 else f"due {row['due_date']} ({left} days left)"
        label = f"{row['label']} — contract limit" if row["contract_override"] else row["label"]
        out.write(f"  {row['level']:22s} {when}: {label}\n")
        out.write(f"  {'':22s} rule {row['rule']}; {row['basis']}\n")
    return 0


def add_cli(sub: Any) -> None:
    """Register `ptguard deadline`."""
    p = sub.add_parser(
        "deadline",
        help="the due date of an appeal level by payer type, with the rule behind it",
        description="Due date and days left for an appeal level, from the notice date, by the effective-dated "
        "table in ptguard/denials/data/deadlines.yaml (Medicare's 5-day receipt presumption included).",
    )
    p.add_argument(
        "--payer-type", metavar="TYPE", help="medicare, medicare-advantage, commercial or medicaid-mco (deadlines.yaml)"
    )
    p.add_argument("--payer", help="a payer id instead (aetna, medicare, …): its type, and its contract limits")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--level",
        help="the appeal level (default: the first one); `--all` lists a payer type's levels by name",
    )
    which.add_argument("--all", action="store_true", help="every level of the payer type")
    p.add_argument(
        "--notice-date", required=True, help="date of the notice or decision being appealed, YYYY-MM-DD"
    )
    p.add_argument("--today", help="count days left from this date (default: today)")
    p.add_argument(
        "--contract", help="YAML {payer: {level: days}} of contract limits (default $PTGUARD_CONTRACT_DEADLINES); with --payer"
    )
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_deadline)
