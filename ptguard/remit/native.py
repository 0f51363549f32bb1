"""Native FHIR ClaimResponses (and EOBs) onto the denial worklist: from FHIR files or from a FHIR server."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from ptguard.errors import MALFORMED_DATA, InputError, NotFoundError, debugging
from ptguard.fhir.client import FhirClient
from ptguard.fhir.load import LoadResult
from ptguard.fhir.refs import ResourceIndex, element, ref_string
from ptguard.remit.intake import IngestResult, ingest_claim_response

log = logging.getLogger(__name__)

ADJUDICATIONS = ("ClaimResponse", "ExplanationOfBenefit")


@dataclass
class UnreadableResult(IngestResult):
    """A ClaimResponse/EOB (or a file) that could not be read: nothing of it stored, `problem` says why in one line."""

    problem: str = ""
    source: str | None = None


def _label(resource: dict[str, Any], index: ResourceIndex | None) -> str:
    if index is not None:
        return index.label(resource)
    rid = resource.get("id")
    return f"{resource.get('resourceType')}/{rid}" if isinstance(rid, str) else str(resource.get("resourceType"))


def _unreadable(reference: str, exc: Exception, source: str | None = None) -> UnreadableResult:
    """The result of one resource or file that tripped a reader; the log gets the exception's type only (PHI)."""
    if debugging():
        raise exc
    log.warning("could not put a resource on the worklist (%s)", type(exc).__name__)
    where = f" (in {source})" if source else ""
    problem = (f"{reference}{where} could not be read: an element has the wrong JSON type or shape "
               f"({type(exc).__name__}); nothing of it added")
    return UnreadableResult(reference=reference, denied=False, problem=problem, source=source)


def ingest_resources(
    resources: Iterable[dict[str, Any]],
    index: ResourceIndex,
    *,
    db_url: str,
    today: date,
    fhir_server: str | None = None,
    payer_map: Path | None = None,
    source: str | None = None,
) -> list[IngestResult]:
    """Each ClaimResponse/EOB among `resources` onto the worklist (idempotent: a line already there is left alone).

    One that cannot be read is an UnreadableResult (saying why, naming `source`), and the others still go on.
    """
    out: list[IngestResult] = []
    for r in resources:
        if r.get("resourceType") not in ADJUDICATIONS:
            continue
        try:
            out.append(ingest_claim_response(r, db_url=db_url, today=today, index=index, fhir_server=fhir_server,
                                             payer_map=payer_map))
        except MALFORMED_DATA as exc:
            out.append(_unreadable(_label(r, index), exc, source))
    return out


def load_files(paths: list[str | Path]) -> tuple[LoadResult, list[tuple[Path, LoadResult]], list[IngestResult]]:
    """check.load_input_files, a file whose data trips the loader being an UnreadableResult naming it."""
    from ptguard.check import load_input_files

    failed: list[IngestResult] = []

    def unreadable(f: Path, exc: Exception) -> None:
        failed.append(_unreadable(f"file {f.name}", exc, str(f)))

    merged, parts = load_input_files(paths, unreadable=unreadable)
    return merged, parts, failed


def ingest_files(
    paths: list[str | Path], *, db_url: str, today: date, payer_map: Path | None = None
) -> tuple[LoadResult, list[IngestResult]]:
    """`worklist add`: the ClaimResponses/EOBs of FHIR files, all the files being the chart they are resolved in.

    File by file: a file found in a folder (or a resource in any file) that cannot be read is reported as an
    UnreadableResult naming the file, and the others are still added; a file named on the command line must load. Returns the merged load (its findings are the files' notes) and results.
    """
    merged, parts, results = load_files(paths)
    if not any(r.get("resourceType") in ADJUDICATIONS for r in merged.resources) and not results:
        raise InputError("no ClaimResponse or ExplanationOfBenefit in the files", where=", ".join(map(str, paths)))
    index = ResourceIndex.from_load(merged)
    kept = {id(r) for r in merged.resources}  # a copy read from two files is added once (the copy the load kept)
    done: set[int] = set()
    for f, part in parts:
        mine = [r for r in part.resources if id(r) in kept and id(r) not in done]
        done.update(id(r) for r in mine)
        results += ingest_resources(mine, index, db_url=db_url, today=today, payer_map=payer_map, source=str(f))
    return merged, results


def sync_from_server(
    client: FhirClient,
    *,
    db_url: str,
    today: date,
    patient: str | None = None,
    fhir_server: str | None = None,
    payer_map: Path | None = None,
) -> list[IngestResult]:
    """Every ClaimResponse on a FHIR server (or one patient's), with its Claim and insurer, onto the worklist.

    `fhir_server` is the base recorded on the work items (default: the client's), i.e. the one the SMART app's
    sessions use — in the sandbox that is the authorization server's FHIR proxy, not the server itself.
    """
    # The Claim gives each line its code (a ClaimResponse item names only its sequence); the insurer, the payer.
    params: list[tuple[str, str]] = [
        ("_count", "100"), ("_include", "ClaimResponse:request"), ("_include", "ClaimResponse:insurer"),
    ]
    if patient:
        params.append(("patient", patient))
    matches: list[dict[str, Any]] = []
    everything: list[dict[str, Any]] = []
    for bundle in client.search_pages("ClaimResponse", params):
        for entry in bundle.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict):
                continue
            everything.append(resource)
            if element(entry, "search").get("mode", "match") == "match":
                matches.append(resource)
    # Servers that ignore _include (the sandbox's among them) answer with the matches alone: read what is missing.
    have = {f"{r.get('resourceType')}/{r.get('id')}" for r in everything}
    for cr in matches:
        for key in ("request", "insurer"):
            ref = ref_string(cr.get(key))
            parts = (ref or "").split("/")
            if ref and len(parts) == 2 and ref not in have:
                have.add(ref)
                try:
                    everything.append(client.read(parts[0], parts[1]))
                except (NotFoundError, InputError):  # a dangling or malformed reference: decoded without it
                    continue
    return ingest_resources(matches, ResourceIndex(everything), db_url=db_url, today=today,
                            fhir_server=fhir_server or client.base_url, payer_map=payer_map)
