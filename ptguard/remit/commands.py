"""`ptguard remit import|watch`, `ptguard worklist` and `ptguard denial` (registered through add_cli)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from ptguard.config import load_settings
from ptguard.denials.deadlines import configured_contract
from ptguard.errors import InputError
from ptguard.fhir.client import FhirClient
from ptguard.fhir.load import load_many
from ptguard.fhir.refs import ResourceIndex
from ptguard.remit.denial_output import describe_file
from ptguard.remit.intake import ImportResult, IngestResult, import_835, import_exit_code
from ptguard.remit.matching import claim_id_systems
from ptguard.remit.watch import MAX_FILE_BYTES, PROCESSED, QUARANTINE, scan_once
from ptguard.remit.worklist import STATUSES, list_work_items
from ptguard.rules.criteria_files import require_payer
from ptguard.serving import install_stop_signals, stop_signals

TOKEN_ENV = "PTGUARD_FHIR_TOKEN"  # noqa: S105 - the variable name, not a secret
_SKIP_DIRS = frozenset({PROCESSED, QUARANTINE})


def _today() -> date:
    return datetime.now().astimezone().date()


def _dump(value: Any, out: TextIO) -> None:
    out.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _client(args: argparse.Namespace) -> FhirClient | None:
    if not getattr(args, "fhir", None):
        return None
    settings = load_settings()
    token = args.token or os.environ.get(TOKEN_ENV)
    return FhirClient(args.fhir, token=token, timeout=settings.fhir_timeout_seconds)


def _index(args: argparse.Namespace) -> ResourceIndex | None:
    paths: list[Path] = []
    for p in getattr(args, "chart", None) or []:
        path = Path(p)
        paths.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    return ResourceIndex.from_load(load_many(paths)) if paths else None


def input_files(paths: list[str]) -> Iterator[Path]:
    """The files named, and every regular non-hidden file under the folders named (processed/, quarantine/ skipped).

    Every path named is checked before any is read: a typo stops the run before anything is imported.
    """
    bad = [raw for raw in paths if not (Path(raw).is_file() or Path(raw).is_dir())]
    if bad:
        what = "not a regular file or folder" if all(Path(b).exists() for b in bad) else "no such file or folder"
        raise InputError(f"{what}; nothing imported", where=", ".join(bad[:5]))
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            yield path
        elif path.is_dir():
            for sub in sorted(path.rglob("*")):
                rel = sub.relative_to(path).parts
                if sub.is_file() and not any(part.startswith(".") or part in _SKIP_DIRS for part in rel):
                    yield sub
        else:
            raise InputError("no such file or folder", where=raw)


def summarise(results: list[ImportResult]) -> dict[str, Any]:
    """The run summary (schemas/remit-import-output.schema.json): totals, therapy denials by payer and CARC."""
    by_status = Counter(r.status for r in results)
    by_payer: dict[str, Counter[str]] = defaultdict(Counter)
    for r in results:
        for t in r.therapy_denials:
            for carc in t.carcs or ["(no CARC)"]:
                by_payer[t.payer][carc] += 1
    return {
        "files": len(results),
        "by_status": dict(sorted(by_status.items())),
        "claims": sum(r.claims for r in results),
        "paid": sum(r.paid for r in results),
        "denied": sum(r.denied for r in results),
        "reversals": sum(r.reversals for r in results),
        "therapy_denial_lines": sum(len(r.therapy_denials) for r in results),
        "therapy_denials_by_payer": {p: dict(sorted(c.items())) for p, c in sorted(by_payer.items())},
        "work_items_created": sum(r.work_items_created for r in results),
        "unmatched_claims": sum(len(r.unmatched) for r in results),
        "quarantined": [{"file": r.filename, "reason": (r.errors or [r.message or ""])[0]}
                        for r in results if r.status == "quarantined"],
        "rejected": [{"file": r.filename, "reason": r.message or ""} for r in results if r.status == "rejected"],
        "failed": [{"file": r.filename, "reason": r.message or ""} for r in results if r.status == "failed"],
    }


def _print_summary(summary: dict[str, Any], out: TextIO) -> None:
    statuses = ", ".join(f"{n} {s}" for s, n in summary["by_status"].items()) or "none"
    out.write(f"files      {summary['files']} ({statuses})\n")
    # A partly paid claim counts in both: these are claims with a payment and claims with a denied/reduced line.
    out.write(f"claims     {summary['claims']}: {summary['paid']} with a payment, {summary['denied']} with a denied or "
              f"reduced line, {summary['reversals']} reversal(s); {summary['unmatched_claims']} not matched to a Claim\n")
    out.write(f"therapy    {summary['therapy_denial_lines']} denied/reduced line(s), "
              f"{summary['work_items_created']} new work item(s)\n")
    for payer, carcs in summary["therapy_denials_by_payer"].items():
        out.write(f"  {payer}: " + ", ".join(f"{c} ×{n}" for c, n in carcs.items()) + "\n")
    for kind in ("quarantined", "rejected", "failed"):
        for entry in summary[kind]:
            out.write(f"{kind:<10} {entry['file']}: {entry['reason']}\n")


def cmd_import(args: argparse.Namespace, out: TextIO) -> int:
    settings = load_settings()
    configured_contract()  # a bad PTGUARD_CONTRACT_DEADLINES stops the run before any file is touched (exit 5)
    files = list(input_files(args.paths))
    if not files:
        raise InputError("no files to import", where=", ".join(args.paths))
    index = _index(args)
    systems = tuple(claim_id_systems(settings.extra))
    results: list[ImportResult] = []
    client = _client(args)
    restore = install_stop_signals()  # SIGTERM (and Ctrl-C from a background shell) stop the batch: exit 130
    try:
        for n, path in enumerate(files, start=1):
            try:
                size = path.stat().st_size
                data = path.read_bytes() if size <= MAX_FILE_BYTES else None
            except OSError as exc:  # vanished or unreadable since it was listed: this file only
                result = ImportResult(filename=path.name, sha256="", status="failed", failure_exit_code=74,
                                      message=f"cannot read the file ({exc.strerror or type(exc).__name__})")
            else:
                if data is None:
                    result = ImportResult(filename=path.name, sha256="", status="rejected",
                                          message=f"file is over the {MAX_FILE_BYTES // 2**20} MiB limit")
                else:  # import_835 never raises for one file: a failure is a `failed` result, the batch goes on
                    result = import_835(data, filename=path.name, db_url=settings.database_url,
                                        fhir=client, index=index, today=_today(), claim_id_systems=systems,
                                        payer_map=settings.payer_map)
            results.append(result)
            line = f"[{n}/{len(files)}] {path}: {result.status}"
            if result.readable and result.status != "already-imported":
                line += f", {result.claims} claim(s), {len(result.therapy_denials)} therapy denial line(s)"
                if result.duplicate_claims:
                    line += f" ({result.duplicate_claims} duplicate claim(s) in the file, counted once)"
            if result.status != "imported" and result.message:
                line += f" — {result.message}"
            sys.stderr.write(line + "\n")
    finally:
        restore()
        if client is not None:
            client.close()
    summary = summarise(results)
    summary["duplicate_claims"] = sum(r.duplicate_claims for r in results)
    summary["exit_code"] = code = import_exit_code(results)
    if args.format == "json":
        _dump({"summary": summary, "files": [r.to_dict() for r in results]}, out)
    else:
        _print_summary(summary, out)
        if summary["duplicate_claims"]:
            out.write(f"duplicate  {summary['duplicate_claims']} claim(s) repeated within a file: counted and "
                      "stored once\n")
    return code


def cmd_watch(args: argparse.Namespace, out: TextIO) -> int:
    settings = load_settings()
    configured_contract()
    folder = Path(args.folder)
    if not folder.is_dir():
        raise InputError("no such folder", where=args.folder)
    index = _index(args)
    systems = tuple(claim_id_systems(settings.extra))
    client = _client(args)

    def report(path: Path, result: ImportResult, moved: Path | None) -> None:
        where = f" → {moved.parent.name}/" if moved else " (left in place; retried next round)"
        out.write(f"{path.name}: {result.status}{where}" + (f" — {result.message}" if result.message else "") + "\n")
        out.flush()

    if not args.once:
        sys.stderr.write(f"ptguard remit watch: watching {folder} every {args.interval:g} s; Ctrl-C stops\n")
    try:
        # A watcher is a service: Ctrl-C (even when a background shell ignores it) and SIGTERM stop it cleanly (exit
        # 0), after the file in hand is marked failed for a retry when it was cut off.
        with stop_signals():
            while True:
                scan_once(folder, db_url=settings.database_url, fhir=client, index=index, today=_today(),
                          claim_id_systems=systems, report=report, settle_seconds=args.settle)
                if args.once:
                    return 0
                time.sleep(args.interval)
    except KeyboardInterrupt:
        sys.stderr.write("ptguard remit watch: stopped\n")
        return 0
    finally:
        if client is not None:
            client.close()


def cmd_worklist(args: argparse.Namespace, out: TextIO) -> int:
    settings = load_settings()
    status = None if args.status == "all" else args.status
    today = _today()
    items = list_work_items(settings.database_url, status=status, today=today)
    if args.format == "json":
        _dump({"today": today.isoformat(), "status": args.status, "items": items}, out)
        return 0
    if not items:
        out.write(f"No {'' if status is None else status + ' '}work items.\n")
        return 0
    for it in items:
        days = it["days_left"]
        left = "no deadline" if days is None else (f"OVERDUE {-days} d" if days < 0 else f"{days} d left")
        codes = ", ".join(it["carcs"] + it["rarcs"]) or "-"
        lines = ", ".join(f"{ln.get('sequence')}:{ln.get('code')}" for ln in it["lines"]) or "-"
        patient = it["patient"]["display"] or it["patient"]["reference"] or "?"
        claim = it["claim"]["reference"] or it["claim"]["control_number"] or "?"
        out.write(f"{left:>14}  {it['due_date'] or '-':10}  {patient} · {claim} · {it['payer']['name'] or '?'}"
                  f" ({it['payer']['id'] or '?'})\n")
        out.write(f"{'':16}lines {lines} · {codes} · {it['category']} → {it['path']} · {it['status']}"
                  f"{'' if it['matched'] else ' · not matched to a Claim'} · id {it['id']}\n")
    return 0


def _report_ingested(results: list[IngestResult], args: argparse.Namespace, out: TextIO) -> int:
    """The outcome of `worklist add|sync`: 0, or 2 when not one ClaimResponse/EOB could be read."""
    from ptguard.remit.native import UnreadableResult

    created = sum(r.work_items_created for r in results)
    existing = sum(r.work_items_existing for r in results)
    unreadable = [r for r in results if isinstance(r, UnreadableResult)]
    for bad in unreadable:
        sys.stderr.write(f"ptguard: {bad.problem}\n")
    code = 2 if unreadable and len(unreadable) == len(results) else 0
    if args.format == "json":
        entries: list[dict[str, Any]] = []
        for r in results:
            entry: dict[str, Any] = {"reference": r.reference, "denied": r.denied,
                                     "work_items_created": r.work_items_created,
                                     "work_items_existing": r.work_items_existing, "item_ids": r.item_ids}
            if isinstance(r, UnreadableResult):
                entry["problem"] = r.problem
            entries.append(entry)
        _dump({"claim_responses": len(results), "unreadable": len(unreadable), "denied": sum(r.denied for r in results),
               "work_items_created": created, "work_items_existing": existing, "results": entries}, out)
        return code
    for r in results:
        if isinstance(r, UnreadableResult):
            what = "could not be read; nothing of it added"
        elif r.denied:
            what = f"{r.work_items_created} new work item(s), {r.work_items_existing} already listed"
        else:
            what = "not a therapy denial"
        out.write(f"{r.reference}: {what}\n")
    out.write(f"{len(results)} ClaimResponse(s): {created} work item(s) added, {existing} already on the worklist"
              + (f"; {len(unreadable)} could not be read" if unreadable else "") + "\n")
    return code


def cmd_worklist_add(args: argparse.Namespace, out: TextIO) -> int:
    from ptguard.remit.native import ingest_files

    settings = load_settings()
    configured_contract()
    # File by file: one that cannot be read (or a resource in it) is reported, and the others are still added.
    load, results = ingest_files(list(args.paths), db_url=settings.database_url, today=_today(),
                                 payer_map=settings.payer_map)
    for f in load.findings:
        sys.stderr.write(f"ptguard: {f.message}\n")
    return _report_ingested(results, args, out)


def cmd_worklist_sync(args: argparse.Namespace, out: TextIO) -> int:
    from ptguard.remit.native import sync_from_server

    settings = load_settings()
    configured_contract()
    client = _client(args)
    assert client is not None  # --fhir is required
    with client:
        results = sync_from_server(client, db_url=settings.database_url, today=_today(), patient=args.patient,
                                   payer_map=settings.payer_map)
    return _report_ingested(results, args, out)


def cmd_denial(args: argparse.Namespace, out: TextIO) -> int:
    configured_contract()
    if args.payer:
        require_payer(args.payer)
    denials = describe_file(Path(args.file), today=_today(), payer=args.payer)
    if args.format == "json":
        _dump(denials[0] if len(denials) == 1 else {"denials": denials}, out)
        return 0
    for d in denials:
        out.write(f"{d['resource']} · {d['payer'] or 'payer unknown'} · notice {d['notice_date'] or 'undated'}\n")
        unreadable = " (lines could not be read)" if d.get("lines_unreadable") else ""
        out.write(f"  denied     {'yes' if d['denied'] else 'no'}{unreadable}; {d['category_label']} → {d['path']}\n")
        for ln in d["lines"]:
            reasons = ", ".join(f"{r['group']}-{r['code']}" if r.get("group") else r["code"] for r in ln["reasons"])
            out.write(f"  line {ln['sequence']}: {ln['code'] or '(code not in the file)'} {' '.join(ln['modifiers'])} {ln['status']}"
                      f" ({reasons or ('codes at claim level' if d.get('claim_reasons') else 'no reason codes')})\n")
        for r in d.get("claim_reasons") or []:
            code = f"{r['group']}-{r['code']}" if r.get("group") else r["code"]
            out.write(f"  claim      {code}: {r.get('meaning') or 'meaning not on file'}\n")
        for f in d.get("data_quality") or []:
            out.write(f"  data       {f['message']}\n")
        out.write(f"  why        {d['why']}\n")
        if d.get("deadline"):
            dl = d["deadline"]
            out.write(f"  deadline   {dl['due']} ({dl['days_left']} days left): {dl['label']}; {dl['rule']}\n")
    return 0


def add_cli(subparsers: Any) -> None:
    """Register `remit import|watch`, `worklist` and `denial` on the ptguard command."""
    remit = subparsers.add_parser("remit", help="import X12 835 remittances (files, a drop folder)")
    commands = remit.add_subparsers(dest="remit_command", metavar="COMMAND")
    commands.required = True

    def fhir_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--fhir", metavar="URL", help="FHIR R4 base: match claims there and write the ClaimResponses")
        p.add_argument("--token", help=f"bearer token for --fhir (default ${TOKEN_ENV})")
        p.add_argument("--chart", action="append", metavar="PATH",
                       help="match claims against local FHIR files instead (file or folder; repeatable)")

    imp = commands.add_parser("import", help="import 835 files or folders of them")
    imp.add_argument("paths", nargs="+", metavar="FILE|DIR")
    fhir_options(imp)
    imp.add_argument("--format", choices=["text", "json"], default="text")
    imp.set_defaults(func=cmd_import)

    watch = commands.add_parser("watch", help="watch a drop folder; files go to processed/ or quarantine/")
    watch.add_argument("folder", metavar="DIR")
    fhir_options(watch)
    watch.add_argument("--interval", type=float, default=10.0, help="seconds between scans (default 10)")
    watch.add_argument("--settle", type=float, default=2.0, help=argparse.SUPPRESS)
    watch.add_argument("--once", action="store_true", help="scan once and exit")
    watch.set_defaults(func=cmd_watch)

    wl = subparsers.add_parser(
        "worklist",
        help="the denial worklist, sorted by days left; `worklist add|sync` puts native ClaimResponses on it",
    )
    wl.add_argument("--status", choices=[*STATUSES, "all"], default="open")
    wl.add_argument("--format", choices=["text", "json"], default="text")
    wl.set_defaults(func=cmd_worklist)
    wl_commands = wl.add_subparsers(dest="worklist_command", metavar="[add|sync]")
    add = wl_commands.add_parser("add", help="ClaimResponses/EOBs in FHIR files (the same files are the chart)")
    add.add_argument("paths", nargs="+", metavar="FILE|DIR")
    add.add_argument("--format", choices=["text", "json"], default="text")
    add.set_defaults(func=cmd_worklist_add)
    sync = wl_commands.add_parser("sync", help="every ClaimResponse on a FHIR server (or one patient's)")
    sync.add_argument("--fhir", metavar="URL", required=True, help="FHIR R4 base")
    sync.add_argument("--token", help=f"bearer token (default ${TOKEN_ENV})")
    sync.add_argument("--patient", metavar="ID", help="only this patient's ClaimResponses")
    sync.add_argument("--format", choices=["text", "json"], default="text")
    sync.set_defaults(func=cmd_worklist_sync)

    den = subparsers.add_parser("denial", help="decode a ClaimResponse/EOB (or Bundle, or 835): lines, codes, path")
    den.add_argument("file", metavar="FILE")
    den.add_argument("--payer", help="payer id for the deadline (default: mapped from the insurer)")
    den.add_argument("--format", choices=["text", "json"], default="text")
    den.set_defaults(func=cmd_denial)
