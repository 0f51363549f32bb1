"""Read the chart behind an encounter or a denied claim from a FHIR server, in parallel, within a time budget."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from ptguard.errors import FhirServerError, InputError, NotFoundError, UnsupportedVersionError
from ptguard.fhir.client import FhirClient
from ptguard.fhir.load import LoadResult, Resource, r5_reason
from ptguard.fhir.refs import ref_string, walk
from ptguard.findings import Finding, data_quality

Query = tuple[str, str, dict[str, str] | None]  # (label, resource type or "Type/id", search params or None for a read)

# Reference paths followed after the first round (payer Organization, performers, requesters, the Claim's parts).
FOLLOW: dict[str, tuple[str, ...]] = {
    "Coverage": ("payor",),
    "Procedure": ("performer.actor",),
    "PractitionerRole": ("practitioner",),
    "ServiceRequest": ("requester",),
    "Claim": ("insurance.coverage", "item.encounter", "patient"),
    "ClaimResponse": ("request", "patient", "insurer"),
    "Encounter": ("subject",),
}


@dataclass
class FetchResult:
    """Resources read, which queries failed and why (as data-quality findings), and how long it took."""

    load: LoadResult
    findings: list[Finding] = field(default_factory=list)
    elapsed_ms: float = 0.0
    complete: bool = True


def encounter_queries(patient_id: str, encounter_id: str) -> list[Query]:
    """What a documentation check of one encounter needs."""
    pat, enc = f"Patient/{patient_id}", f"Encounter/{encounter_id}"
    return [
        ("patient", pat, None),
        ("encounter", enc, None),
        ("procedures", "Procedure", {"encounter": enc}),
        ("notes", "DocumentReference", {"patient": pat}),
        ("compositions", "Composition", {"encounter": enc}),
        ("claims", "Claim", {"patient": pat}),
        ("coverage", "Coverage", {"patient": pat}),
        ("observations", "Observation", {"patient": pat, "_count": "100"}),
        ("goals", "Goal", {"patient": pat}),
        ("plans", "CarePlan", {"patient": pat}),
        ("orders", "ServiceRequest", {"patient": pat}),
        ("encounters", "Encounter", {"patient": pat, "_count": "100"}),
    ]


def patient_queries(patient_id: str) -> list[Query]:
    """A patient's therapy chart (every encounter, for appeals and patient-view)."""
    pat = f"Patient/{patient_id}"
    return [
        ("patient", pat, None),
        ("encounters", "Encounter", {"patient": pat, "_count": "100"}),
        ("procedures", "Procedure", {"patient": pat, "_count": "200"}),
        ("notes", "DocumentReference", {"patient": pat, "_count": "100"}),
        ("claims", "Claim", {"patient": pat}),
        ("claim-responses", "ClaimResponse", {"patient": pat}),
        ("coverage", "Coverage", {"patient": pat}),
        ("observations", "Observation", {"patient": pat, "_count": "200"}),
        ("goals", "Goal", {"patient": pat}),
        ("plans", "CarePlan", {"patient": pat}),
        ("orders", "ServiceRequest", {"patient": pat}),
    ]


def _run(client: FhirClient, query: Query) -> tuple[list[Resource], list[str]]:
    """The query's usable resources and why others were skipped; UnsupportedVersionError when none is usable."""
    _label, target, params = query
    if params is None:
        rtype, _, rid = target.partition("/")
        found = [client.read(rtype, rid)]
    else:
        found = client.search(target, params, max_pages=5)
    usable: list[Resource] = []
    skipped: list[str] = []
    r5: list[str] = []
    for res in found:
        if not isinstance(res.get("resourceType"), str):
            skipped.append("a resource has no resourceType")
        elif (reason := r5_reason(res)) is not None:
            r5.append(reason)
            skipped.append(f"{reason}; ptguard reads FHIR R4 only")
        else:
            usable.append(res)
    if skipped and not usable:
        if r5:
            raise UnsupportedVersionError(f"{r5[0]}; ptguard reads FHIR R4 only")
        raise InputError("the answer holds no FHIR resource")
    return usable, skipped


def _describe(exc: BaseException, label: str) -> tuple[str, str]:
    if isinstance(exc, NotFoundError):
        return "fhir-not-found", f"{label}: not found on the FHIR server"
    if isinstance(exc, UnsupportedVersionError):
        return "fhir-r5", f"{label}: {exc.one_line()}"
    if isinstance(exc, FhirServerError):
        status = getattr(exc, "status", None)
        if status in (401, 403):
            return (
                "fhir-forbidden",
                f"{label}: the server refused access ({status}); the granted scopes may not cover it",
            )
        return "fhir-error", f"{label}: {exc.one_line()}"
    if isinstance(exc, InputError):
        return "fhir-bad-request", f"{label}: {exc.one_line()}"
    return "fhir-error", f"{label}: {type(exc).__name__}"


def fetch(
    client: FhirClient,
    queries: Iterable[Query],
    *,
    budget_seconds: float | None = None,
    follow: bool = True,
    workers: int = 6,
    have: LoadResult | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FetchResult:
    """Run the queries in parallel (then one round following references); stop waiting when the budget runs out."""
    started = clock()
    deadline = started + budget_seconds if budget_seconds is not None else None
    result = FetchResult(LoadResult(source=client.base_url))
    seen: set[str] = set()
    if have is not None:
        for res in have.resources:
            if res.get("resourceType") and res.get("id"):
                seen.add(f"{res['resourceType']}/{res['id']}")

    def add(resources: list[Resource]) -> None:
        # Every copy goes to the loader, one of `have` included: it keeps the newer of two that differ (merge, later).
        for res in resources:
            key = f"{res.get('resourceType')}/{res.get('id')}"
            seen.add(key)
            result.load.add(res, f"{client.base_url}/{key}")

    if budget_seconds is not None:
        # Every request of the client ends by the budget's end (a trickling server cannot keep a thread reading).
        client_deadline = time.monotonic() + budget_seconds
        if client.deadline is None or client.deadline > client_deadline:
            client.deadline = client_deadline
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ptguard-fetch")
    try:
        rounds: list[list[Query]] = [list(queries)]
        while rounds:
            batch = rounds.pop(0)
            futures: dict[Future[tuple[list[Resource], list[str]]], Query] = {
                pool.submit(_run, client, q): q for q in batch
            }
            pending = set(futures)
            while pending:
                timeout = None if deadline is None else max(0.0, deadline - clock())
                done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
                if not done:
                    result.complete = False
                    for fut in pending:
                        label = futures[fut][0]
                        result.findings.append(
                            data_quality("fhir-timeout", f"{label}: no answer within the time budget", client.base_url)
                        )
                        fut.cancel()
                    pending = set()
                    break
                for fut in done:
                    label = futures[fut][0]
                    try:
                        usable, skipped = fut.result()
                        add(usable)
                        if skipped:
                            result.findings.append(
                                data_quality(
                                    "fhir-skipped",
                                    f"{label}: {len(skipped)} resource(s) skipped ({skipped[0]})",
                                    client.base_url,
                                )
                            )
                    except Exception as exc:
                        ident, message = _describe(exc, label)
                        result.findings.append(data_quality(ident, message, client.base_url, severity="warning"))
            if follow and not rounds and result.complete:
                missing = _missing_references(result.load.resources, seen)
                follow = False
                if missing:
                    rounds.append([(f"reference {m}", m, None) for m in sorted(missing)[:50]])
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    result.elapsed_ms = (clock() - started) * 1000
    return result


def _missing_references(resources: list[Resource], seen: set[str]) -> set[str]:
    missing: set[str] = set()
    for res in resources:
        for path in FOLLOW.get(str(res.get("resourceType")), ()):
            for value in walk(res, path):
                ref = ref_string(value)
                if ref and "/" in ref and not ref.startswith(("#", "urn:", "http")) and "?" not in ref:
                    parts = ref.split("/")
                    if len(parts) == 2 and ref not in seen:
                        missing.add(ref)
    return missing


def merge(*loads: LoadResult) -> LoadResult:
    """Several loads as one (prefetch plus fetched): a resource in more than one is read once, as the loader does.

    Identical copies are dropped; copies that differ keep the later meta.lastUpdated, with a data-quality finding.
    """
    out = LoadResult(source=", ".join(x.source for x in loads))
    for load in loads:
        out.extend(load)
    return out
