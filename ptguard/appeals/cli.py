"""`ptguard appeal`: assemble the appeal letter and PDF packet for a denial from files or a FHIR server."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from pathlib import Path
from typing import Any, TextIO

import orjson

from ptguard.errors import InputError
from ptguard.fhir.dates import date_option

SCHEMA = "https://ptguard.dev/schemas/appeal-output.schema.json"


def add_cli(sub: Any) -> None:
    """Register `ptguard appeal`."""
    p = sub.add_parser(
        "appeal",
        help="assemble the appeal letter and PDF packet for a denied claim",
        description="From a ClaimResponse (a file, or an id in --bundle files or on --fhir) to a letter whose "
        "sentences cite the chart, and a PDF packet with bookmarked exhibits.",
    )
    p.add_argument(
        "claim_response",
        nargs="?",
        help="a ClaimResponse file, or its id (in --bundle files or on --fhir); with --claim-response, the chart "
        "(a FHIR file or folder), as in `ptguard appeal BUNDLE --claim-response ID`",
    )
    p.add_argument("--claim-response", dest="claim_response_opt", metavar="ID", help="the ClaimResponse id")
    p.add_argument(
        "--bundle", nargs="+", default=[], help="FHIR files or folders holding the chart (e.g. fhir_fixtures/)"
    )
    p.add_argument("--fhir", help="FHIR base URL to read the ClaimResponse and the chart from")
    p.add_argument("--token", default=os.environ.get("PTGUARD_FHIR_TOKEN"), help="bearer token for --fhir")
    p.add_argument("--out", help="write the PDF packet here")
    p.add_argument("--level", help="appeal level (default: the first level for the payer type)")
    p.add_argument(
        "--decision-date",
        help="for a later level: date (YYYY-MM-DD) of the decision being appealed, which its deadline runs from",
    )
    p.add_argument("--contract", help="YAML file of contract filing limits {payer: {level: days}}")
    p.add_argument("--today", help=argparse.SUPPRESS)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_appeal)


def cmd_appeal(args: argparse.Namespace, out: TextIO) -> int:
    from ptguard.appeals.assemble import assemble
    from ptguard.appeals.gather import build_source, gather_from_server, load_files
    from ptguard.denials.deadlines import load_contract_overrides
    from ptguard.fhir.load import LoadResult

    if args.claim_response_opt is not None and not args.claim_response_opt.strip():
        raise InputError("--claim-response needs the ClaimResponse id (e.g. cr-aetna-01)")
    target = args.claim_response_opt or args.claim_response
    chart_paths: list[str | Path] = list(args.bundle)
    if args.claim_response_opt and args.claim_response:
        # `ptguard appeal BUNDLE --claim-response ID`: the positional names the chart.
        if not Path(args.claim_response).exists():
            raise InputError(f"{args.claim_response}: no such file or folder (the chart to read)")
        chart_paths.insert(0, args.claim_response)
    if not target or not target.strip():
        raise InputError("name the ClaimResponse: a file, or an id with --bundle or --fhir")
    findings: list[Any] = []
    if args.fhir:
        from ptguard.fhir.client import FhirClient

        with FhirClient(args.fhir, token=args.token) as client:
            load, cr, findings = gather_from_server(client, target)
        wanted: str | None = f"{cr.get('resourceType')}/{cr.get('id')}"
    else:
        paths = chart_paths
        wanted = target
        if Path(target).is_file():
            paths.insert(0, target)
            single = load_files([target])
            crs = [r for r in single.resources if r.get("resourceType") in ("ClaimResponse", "ExplanationOfBenefit")]
            if len(crs) != 1:
                raise InputError(f"{target} holds {len(crs)} ClaimResponses; name one with --claim-response")
            wanted = f"{crs[0]['resourceType']}/{crs[0].get('id')}"
        if not paths:
            raise InputError("no chart to read: give --bundle FILES or --fhir URL")
        load = load_files(paths)
        assert isinstance(load, LoadResult)
        findings = list(load.findings)  # duplicate copies, skipped files…: said, never silent
    today = date.fromisoformat(args.today) if args.today else None
    contract = load_contract_overrides(Path(args.contract)) if args.contract else None
    src = build_source(load, wanted)
    decision = date_option(args.decision_date, "--decision-date") if args.decision_date else None
    letter = assemble(src, today=today, level=args.level, contract=contract, decision_date=decision)
    packet = None
    if args.out:
        from ptguard.appeals.render import render_packet

        packet = render_packet(letter, today=today)
        Path(args.out).write_bytes(packet.pdf)
    if args.format == "json":
        data = output_json(letter, src.denial.to_dict(), packet_path=args.out, pages=packet.pages if packet else None)
        data["data_quality"] = [f.to_dict() for f in findings]
        out.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    out.write(f"{letter.subject}\n{'=' * len(letter.subject)}\n")
    for p in letter.paragraphs:
        if p.heading:
            out.write(f"\n## {p.heading}\n")
        for s in p.sentences:
            refs = f"  [{', '.join(s.sources)}]" if s.sources else ""
            out.write(f"- {s.text}{refs}\n")
    if letter.gaps:
        out.write(f"\n{len(letter.gaps)} gap(s) to fill before sending.\n")
    for n in letter.notes:
        out.write(f"note: {n}\n")
    if packet:
        out.write(f"\nPDF packet: {args.out} ({packet.pages} pages; bookmarks: {', '.join(packet.outline)})\n")
    for f in findings:
        sys.stderr.write(f"ptguard: {f.message}\n")
    return 0


def output_json(letter: Any, denial: dict[str, Any], *, packet_path: str | None, pages: int | None) -> dict[str, Any]:
    """The JSON of `ptguard appeal --format json` (schemas/appeal-output.schema.json)."""
    data = letter.to_dict(with_exhibit_content=False)
    data["$schema"] = SCHEMA
    data["denial"] = denial
    data["sentences"] = [s.to_dict() for s in letter.sentences()]
    data["packet"] = {"path": packet_path, "pages": pages} if packet_path else None
    return dict(data)
