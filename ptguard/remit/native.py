"""Native FHIR ClaimResponses (and EOBs) onto the denial worklist: from FHIR files or from a FHIR server."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

from ptguard.errors import InputError, NotFoundError
from ptguard.fhir.client import FhirClient
from ptguard.fhir.load import LoadResult
from ptguard.fhir.refs import ResourceIndex, element, ref_string
from ptguard.remit.intake import IngestResult, ingest_claim_response

ADJUDICATIONS = ("ClaimResponse", "ExplanationOfBenefit")


def ingest_resources(
    resources: Iterable[dict[str, Any]],
    index: ResourceIndex,
    *,
    db_url: str,
    today: date,
    fhir_server: str | None = None,
    payer_map: Path | None = None,
) -> list[IngestResult]:
    """Each ClaimResponse/EOB among `resources` onto the worklist (idempotent: a line already there is left alone)."""
    return [
        ingest_claim_response(r, db_url=db_url, today=today, index=index, fhir_server=fhir_server, payer_map=payer_map)
        for r in resources
        if r.get("resourceType") in ADJUDICATIONS
    ]


def ingest_load(load: LoadResult, *, db_url: str, today: date, payer_map: Path | None = None) -> list[IngestResult]:
    """The ClaimResponses/EOBs of loaded FHIR files, with the files as the chart their payers are resolved in."""
    return ingest_resources(load.resources, ResourceIndex.from_load(load), db_url=db_url, today=today,
                            payer_map=payer_map)


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
