"""The `ptguard` command: check, units, and the commands other parts of ptguard register."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO, cast

import orjson

from ptguard import __version__
from ptguard.errors import ConfigError, InputError, PtguardError, debugging
from ptguard.findings import Finding

# Modules that contribute subcommands through add_cli(subparsers); missing optional ones are skipped.
CORE_COMMANDS = frozenset({"check", "units"})
COMMAND_MODULES: tuple[str, ...] = (
    "ptguard.fixtures_load",
    "sandbox.cli",
    "sandbox.demo",
    "ptguard.remit.commands",
    "ptguard.appeals.cli",
    "ptguard.denials.cli",
    "ptguard.cds_feedback",
    "webapp.serve",
)

_MARK = {"critical": "✗ CRITICAL", "warning": "! WARNING ", "info": "· info    "}


def _dump(value: Any, out: TextIO) -> None:
    out.write(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n")


def _print_finding(f: Finding, out: TextIO, *, verbose: bool) -> None:
    if not f.is_problem:
        out.write(f"  ✓ met        {f.id}: {f.message}\n")
        return
    out.write(f"  {_MARK[f.severity]} {f.id} [{f.status}]: {f.message}\n")
    for e in f.evidence[: 3 if verbose else 2]:
        out.write(f"      evidence  {e.reference}: {e.text}\n")
    if f.fix:
        out.write(f"      fix       {f.fix}\n")
    if f.citation:
        out.write(f"      policy    {f.citation.label()}\n")


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    from ptguard.check import DEFAULT_VALIDATE_LIMIT, run_check
    from ptguard.config import load_settings

    settings = load_settings()
    criteria_dir = Path(args.criteria_dir) if args.criteria_dir else settings.criteria_dir
    if not criteria_dir.is_dir():
        raise ConfigError("the criteria directory does not exist", where=str(criteria_dir))
    if settings.payer_map is not None and not settings.payer_map.is_file():
        raise ConfigError("PTGUARD_PAYER_MAP does not name a readable file", where=str(settings.payer_map))
    if args.payer is not None and not args.payer.strip():
        raise InputError("--payer needs a payer id (e.g. aetna, medicare)")
    report = run_check(
        args.bundle,
        encounter=args.encounter,
        payer=args.payer,
        method=args.method,
        criteria_dir=criteria_dir,
        payer_map=settings.payer_map,
        validate_limit={"all": None, "none": 0}.get(args.validate, DEFAULT_VALIDATE_LIMIT),
    )
    if args.format == "text":
        out = cast(TextIO, _SafeText(out))
    if args.format == "json":
        _dump(report.to_dict(), out)
        return 0
    if not report.evaluations:
        out.write(f"No therapy encounters found in {report.resource_count} resource(s).\n")
    for ev in report.evaluations:
        v = ev.visit
        when = v.visit_date.isoformat() if v.visit_date else "date unknown"
        out.write("\n")
        out.write(f"{v.encounter_reference} · {when} · {v.patient_name or v.patient_reference}\n")
        out.write(
            f"  payer      {ev.payer.payer} ({v.payer_name or ev.payer.name}); policy {ev.payer.policy.label()}\n"
        )
        sup = ", ".join(f"{c}={n}" for c, n in sorted(ev.units.units.items())) or "none"
        billed = ", ".join(f"{c}={n:g}" for c, n in sorted(ev.billed_units.items())) or "none"
        out.write(
            f"  units      {ev.units.method}: {ev.units.total_minutes} timed min → supported {sup}; billed {billed}\n"
        )
        problems = ev.problems
        met = [f for f in ev.findings if not f.is_problem]
        for f in problems:
            _print_finding(f, out, verbose=args.all)
        if args.all:
            for f in met:
                _print_finding(f, out, verbose=True)
        out.write(f"  summary    {len(problems)} problem(s), {len(met)} criteria met\n")
    if report.data_quality:
        out.write("\n")
        out.write(f"{len(report.data_quality)} data-quality note(s) about the input")
        out.write(":\n" if args.all else " (use --all to list them).\n")
        if args.all:
            for f in report.data_quality:
                out.write(f"  · {f.evidence[0].reference if f.evidence else ''}: {f.message}\n")
    return 0


_CODE = re.compile(r"[0-9A-Z]{5}")
MAX_CLI_MINUTES = 24 * 60


def _parse_minutes(items: Sequence[str]) -> dict[str, int]:
    minutes: dict[str, int] = {}
    for item in items:
        code, sep, value = item.partition("=")
        code, value = code.strip().upper(), value.strip()
        if not sep or not _CODE.fullmatch(code):
            raise InputError(f"{item[:40]!r} is not CODE=MINUTES with a 5-character code (e.g. 97530=31)")
        if not (value.isascii() and value.isdigit()):
            raise InputError(f"{item[:40]!r}: the minutes must be a whole number of 0 or more (e.g. 97530=31)")
        total = minutes.get(code, 0) + int(value)
        if total > MAX_CLI_MINUTES:
            raise InputError(f"{code}: {total} minutes is more than a day; give the minutes of one date of service")
        minutes[code] = total
    return minutes


def cmd_units(args: argparse.Namespace, out: TextIO) -> int:
    from ptguard.rules.tables import table
    from ptguard.rules.units import UnitRule, compute_units

    minutes = _parse_minutes(args.minutes)
    codes = table("therapy-codes")
    untimed = {c: 1 for c in minutes if c in codes["untimed"]}
    unknown = sorted(c for c in minutes if c not in codes["timed"] and c not in untimed)
    if unknown:
        raise InputError(f"{', '.join(unknown)}: not a therapy code ptguard knows (see rules/data/therapy-codes.yaml)")
    timed = {c: m for c, m in minutes.items() if c not in untimed}
    result = compute_units(timed, args.method, UnitRule.on())
    if args.format == "json":
        value = result.to_dict()
        if untimed:
            value["untimed"] = untimed
        out.write(orjson.dumps(value).decode() + "\n")
        return 0
    out.write(f"{result.method}: {result.total_minutes} timed minutes → {result.total_units} unit(s)\n")
    for code, n in result.units.items():
        out.write(f"  {code}: {minutes[code]} min → {n}\n")
    for code in untimed:
        out.write(f"  {code}: untimed — 1 unit per session whatever the minutes; not in the timed total\n")
    return 0


class _SafeText:
    """A text stream that shows control and bidi-override characters from the data as visible escapes."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, text: str) -> int:
        """Write text whose only real line breaks are trailing ones; any other control character is escaped."""
        body = text.rstrip("\n")
        tail = text[len(body) :]
        return self._out.write(_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", body) + tail)

    def flush(self) -> None:
        self._out.flush()


_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def build_parser(*, with_plugins: bool = True) -> argparse.ArgumentParser:
    """The argument parser; `with_plugins=False` skips the other modules' commands (fast start for check/units)."""
    parser = argparse.ArgumentParser(prog="ptguard", description="CPT 97530 documentation checks and denial appeals.")
    parser.add_argument("--version", action="version", version=f"ptguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    check = sub.add_parser("check", help="check the 97530 documentation and billing of therapy encounters")
    check.add_argument("bundle", nargs="+", help="FHIR R4 JSON/NDJSON/XML file(s) or a directory of them")
    check.add_argument("--encounter", help="only this Encounter id")
    check.add_argument("--payer", help="use this payer's criteria instead of the one mapped from Coverage")
    check.add_argument("--method", choices=["cms", "per-code"], help="override the payer's unit counting method")
    check.add_argument("--format", choices=["text", "json"], default="text")
    check.add_argument("--all", action="store_true", help="text: also list the criteria met and each data-quality note (JSON always has them)")
    check.add_argument("--criteria-dir", default=os.environ.get("PTGUARD_CRITERIA_DIR"), help=argparse.SUPPRESS)
    check.add_argument(
        "--validate",
        choices=["sample", "all", "none"],
        default="sample",
        help="full FHIR R4 validation of the resources acted on: the first 100 encounters (default), all, or none",
    )
    check.set_defaults(func=cmd_check)

    units = sub.add_parser("units", help="units per code from minutes (8-minute rule or per-code)")
    units.add_argument("minutes", nargs="+", metavar="CODE=MINUTES")
    units.add_argument("--method", choices=["cms", "per-code"], default="cms")
    units.add_argument("--format", choices=["text", "json"], default="text")
    units.set_defaults(func=cmd_units)

    for name in COMMAND_MODULES if with_plugins else ():
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue
            raise
        add_cli: Callable[[Any], None] | None = getattr(module, "add_cli", None)
        if add_cli is not None:
            add_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point: one-line errors on stderr, exit codes from ptguard.errors, never a traceback."""
    out = out or sys.stdout
    level = os.environ.get("PTGUARD_LOG_LEVEL", "ERROR").upper()
    if level not in logging.getLevelNamesMapping():
        sys.stderr.write(f"ptguard: warning: PTGUARD_LOG_LEVEL={level[:20]!r} is not a log level; using ERROR\n")
        level = "ERROR"
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # urllib3 logs each request line with its query string (search values, ids): never below WARNING.
    logging.getLogger("urllib3").setLevel(max(logging.getLevelNamesMapping()[level], logging.WARNING))
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(with_plugins=not (argv and argv[0] in CORE_COMMANDS))
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args, out)
        return result
    except PtguardError as exc:
        sys.stderr.write(f"ptguard: error: {exc.one_line()}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("ptguard: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        if debugging():
            raise
        where = f"{exc.filename}: " if isinstance(exc.filename, str) else ""
        sys.stderr.write(f"ptguard: error: {where}cannot read or write ({exc.strerror or type(exc).__name__})\n")
        return 74
    except Exception as exc:
        if debugging():
            raise
        sys.stderr.write(f"ptguard: internal error ({type(exc).__name__}); set PTGUARD_DEBUG=1 for details\n")
        return 70


if __name__ == "__main__":
    raise SystemExit(main())
