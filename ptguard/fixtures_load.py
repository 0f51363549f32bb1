"""Post fhir_fixtures/*.json transaction Bundles to any FHIR R4 server, idempotently, and report what was created."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from ptguard.errors import FhirServerError, InputError, PtguardError
from ptguard.fhir.client import FhirClient
from ptguard.fhir.refs import element

TOKEN_ENV = "PTGUARD_FHIR_TOKEN"  # noqa: S105 - the variable name, not a secret
DEFAULT_DIR_NAME = "fhir_fixtures"


@dataclass
class FileReport:
    """What one fixture file did on the server: counts per resource type, by outcome."""

    path: Path
    created: Counter[str] = field(default_factory=Counter)
    existing: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    other: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    # The server refused us as a client (401/403) or could not be reached: every other file would fail the same way.
    stops_run: bool = False

    @property
    def ok(self) -> bool:
        """True when the file was posted and every entry succeeded."""
        return self.error is None

    @property
    def created_count(self) -> int:
        """Number of resources this run created."""
        return sum(self.created.values())

    @property
    def existing_count(self) -> int:
        """Number of resources that were already on the server (conditional create matched)."""
        return sum(self.existing.values())

    def summary(self) -> str:
        """One line for humans: file, created, already present, updated, error."""
        if self.error:
            return f"{self.path.name}: FAILED: {self.error}"
        parts = [f"{self.created_count} created", f"{self.existing_count} already present"]
        if self.updated:
            parts.append(f"{sum(self.updated.values())} updated")
        if self.other:
            parts.append(f"{sum(self.other.values())} other")
        detail = ", ".join(f"{n} {t}" for t, n in sorted(self.created.items()))
        return f"{self.path.name}: " + ", ".join(parts) + (f" ({detail})" if detail else "")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "file": self.path.name,
            "created": dict(self.created),
            "existing": dict(self.existing),
            "updated": dict(self.updated),
            "other": dict(self.other),
            "warnings": list(self.warnings),
            "error": self.error,
        }


@dataclass
class LoadReport:
    """The outcome of loading a directory of fixture Bundles."""

    files: list[FileReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every file loaded."""
        return all(f.ok for f in self.files)

    @property
    def created_count(self) -> int:
        """Resources created by this run, all files."""
        return sum(f.created_count for f in self.files)

    @property
    def existing_count(self) -> int:
        """Resources already present, all files."""
        return sum(f.existing_count for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ok": self.ok,
            "created": self.created_count,
            "existing": self.existing_count,
            "files": [f.as_dict() for f in self.files],
        }


def fixture_files(directory: Path) -> list[Path]:
    """The *.json files of `directory`, in name order (files may build on earlier ones)."""
    if not directory.is_dir():
        raise InputError(f"fixture directory not found: {directory}")
    return sorted(p for p in directory.glob("*.json") if p.is_file())


def _status_code(status: object) -> int | None:
    text = str(status or "").strip()
    digits = text[:3]
    return int(digits) if len(digits) == 3 and digits.isascii() and digits.isdigit() else None


def _entry_type(entry: dict[str, Any]) -> str:
    resource = entry.get("resource")
    if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
        return str(resource["resourceType"])
    url = str(element(entry, "request").get("url") or "")
    return url.split("?", 1)[0].split("/", 1)[0] or "?"


def _read_bundle(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc}", where=path.name) from None
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise InputError("not a FHIR Bundle", where=path.name)
    if data.get("type") not in ("transaction", "batch"):
        raise InputError(f"Bundle.type is {data.get('type')!r}, expected 'transaction'", where=path.name)
    entries = data.get("entry")
    if not isinstance(entries, list) or not entries:
        raise InputError("the Bundle has no entries", where=path.name)
    return data


def load_file(client: FhirClient, path: Path) -> FileReport:
    """Post one transaction Bundle and classify each entry's outcome (201 created, 200 already there)."""
    report = FileReport(path=path)
    try:
        bundle = _read_bundle(path)
    except InputError as exc:
        report.error = exc.one_line()
        return report
    entries: list[dict[str, Any]] = [e if isinstance(e, dict) else {} for e in bundle["entry"]]
    for index, entry in enumerate(entries):
        request = entry.get("request") or {}
        if request.get("method") == "POST" and not request.get("ifNoneExist"):
            report.warnings.append(
                f"entry {index} ({_entry_type(entry)}) is a POST without ifNoneExist: not idempotent"
            )
    try:
        response = client.transaction(bundle)
    except PtguardError as exc:
        report.error = exc.one_line()
        status = getattr(exc, "status", None)
        unreachable = "cannot connect" in report.error or "no answer within" in report.error
        report.stops_run = status in (401, 403) or unreachable
        return report
    answers = response.get("entry") or []
    if len(answers) != len(entries):
        report.warnings.append(f"the server answered {len(answers)} entries for {len(entries)} sent")
    for entry, answer in zip(entries, answers, strict=False):
        resource_type = _entry_type(entry)
        method = str(element(entry, "request").get("method") or "")
        code = _status_code(element(answer, "response").get("status") if isinstance(answer, dict) else None)
        if code == 201:
            report.created[resource_type] += 1
        elif code == 200 and method == "POST":
            report.existing[resource_type] += 1
        elif code == 200 and method == "PUT":
            report.updated[resource_type] += 1
        elif code is not None and code < 300:
            report.other[resource_type] += 1
        else:
            report.other[resource_type] += 1
            report.error = report.error or f"entry for {resource_type} answered {code or 'no status'}"
    return report


def load_fixtures(
    client: FhirClient,
    directory: Path | str,
    *,
    progress: Callable[[FileReport], None] | None = None,
) -> LoadReport:
    """Post every fixture Bundle in `directory` (name order); a failed file is reported, the rest still load.

    A server that cannot be reached, or refuses the client (401/403), stops the run (FhirServerError) instead of
    failing every file.
    """
    report = LoadReport()
    for path in fixture_files(Path(directory)):
        file_report = load_file(client, path)
        report.files.append(file_report)
        if progress is not None:
            progress(file_report)
        if file_report.stops_run:
            assert file_report.error is not None
            hint = " (give --token or set PTGUARD_FHIR_TOKEN)" if re.search(r"\b40[13]\b", file_report.error) else ""
            raise FhirServerError(file_report.error + hint)
    return report


def default_fixture_dir() -> Path:
    """./fhir_fixtures when it exists, else the one next to the ptguard package (source checkout)."""
    here = Path.cwd() / DEFAULT_DIR_NAME
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / DEFAULT_DIR_NAME


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register `load-fixtures --fhir URL [--token T] [--dir DIR]` on an argparse subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "load-fixtures",
        help="post fhir_fixtures/*.json transaction Bundles to a FHIR R4 server (idempotent)",
        description="Post the fixture transaction Bundles to any FHIR R4 server. Conditional creates make a"
        f" second run create nothing. The bearer token may come from ${TOKEN_ENV}.",
    )
    parser.add_argument(
        "--fhir", required=True, metavar="URL", help="FHIR base URL, e.g. http://127.0.0.1:8090/fhir/R4"
    )
    parser.add_argument("--token", default=None, help=f"bearer token (prefer ${TOKEN_ENV}: argv is visible to others)")
    parser.add_argument("--dir", type=Path, default=None, help="fixture directory (default: fhir_fixtures)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    parser.add_argument("--format", choices=["text", "json"], default="text", help="text (default) or JSON")
    parser.add_argument("--json", dest="format", action="store_const", const="json", help=argparse.SUPPRESS)
    parser.set_defaults(func=run_cli)
    return parser


def run_cli(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Handler of `load-fixtures`; returns the exit code (0 all loaded, 1 some file failed, else the error's)."""
    out = out or sys.stdout
    token = args.token or os.environ.get(TOKEN_ENV) or None
    directory = args.dir if args.dir is not None else default_fixture_dir()

    def show(file_report: FileReport) -> None:
        if args.format != "json" and not file_report.stops_run:  # a run-stopping error is said once, below
            print(file_report.summary(), file=out, flush=True)
            for warning in file_report.warnings:
                print(f"  warning: {warning}", file=sys.stderr)

    try:
        with FhirClient(args.fhir, token=token, timeout=args.timeout) as client:
            report = load_fixtures(client, directory, progress=show)
    except PtguardError as exc:
        print(f"ptguard: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    if args.format == "json":
        print(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode(), file=out)
    else:
        print(
            f"{len(report.files)} file(s): {report.created_count} created, {report.existing_count} already present"
            + ("" if report.ok else "; some files FAILED"),
            file=out,
        )
    return 0 if report.ok else 1
