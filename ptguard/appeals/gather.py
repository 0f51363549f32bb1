"""Collect what an appeal needs (ClaimResponse, Claim, visits, evaluations) from loaded files or a FHIR server."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ptguard.chart import ChartBuilder, TherapyVisit
from ptguard.denials.decode import Denial, decode
from ptguard.errors import InputError, NotFoundError
from ptguard.fhir.client import FhirClient
from ptguard.fhir.fetch import fetch, merge, patient_queries
from ptguard.fhir.load import LoadResult, Resource, load_path
from ptguard.fhir.refs import elements, ref_string
from ptguard.findings import Finding
from ptguard.rules.criteria_files import PayerCriteria, load_payer
from ptguard.rules.engine import Evaluation, evaluate

FIXTURE_ID = "https://ptguard.dev/fixture-id"


@dataclass
class AppealSource:
    """The chart facts behind one denial: the decoded ClaimResponse and the visits of its denied lines."""

    builder: ChartBuilder
    claim_response: Resource
    claim: Resource | None
    denial: Denial
    evaluations: list[Evaluation]
    payer: PayerCriteria
    findings: list[Finding] = field(default_factory=list)

    @property
    def visits(self) -> list[TherapyVisit]:
        return [e.visit for e in self.evaluations]

    @property
    def payer_id(self) -> str:
        return self.payer.payer


def _find_claim_response(load: LoadResult, wanted: str | None) -> Resource:
    kinds = [r for r in load.resources if r.get("resourceType") in ("ClaimResponse", "ExplanationOfBenefit")]
    if wanted:
        rid = wanted.split("/")[-1]
        for r in kinds:
            idents = {str(i.get("value")) for i in r.get("identifier") or [] if isinstance(i, dict)}
            if r.get("id") == rid or rid in idents:
                return r
        raise NotFoundError(f"no ClaimResponse {rid!r} in the data")
    if len(kinds) == 1:
        return kinds[0]
    if not kinds:
        raise NotFoundError("no ClaimResponse or ExplanationOfBenefit in the data")
    raise InputError("several ClaimResponses in the data: name the one to appeal")


def build_source(load: LoadResult, claim_response: str | None = None, *, payer: str | None = None) -> AppealSource:
    """Decode the ClaimResponse and assemble the visits behind its denied (or reduced) lines."""
    builder = ChartBuilder(load, validate_limit=0)
    index = builder.index
    cr = _find_claim_response(load, claim_response)
    claim_ref = ref_string(cr.get("request") if cr.get("resourceType") == "ClaimResponse" else cr.get("claim"))
    claim = index.resolve(claim_ref, cr) if claim_ref else None
    first = decode(cr, index=index)
    if claim is None:
        raise NotFoundError(
            f"{first.reference} points to {claim_ref or 'no Claim'}, which is not available; the visits behind the "
            "denied lines cannot be found without it. Load the Claim (or ask for Claim read access) and try again."
        )
    denied_seqs = {ln.sequence for ln in first.denied_lines} or {ln.sequence for ln in first.lines}
    encounters: list[Resource] = []
    for item in elements(claim, "item"):
        if denied_seqs and item.get("sequence") not in denied_seqs:
            continue
        for enc_ref in elements(item, "encounter"):
            enc = index.resolve(enc_ref, claim)
            if enc is not None and enc not in encounters:
                encounters.append(enc)
    if not encounters:
        claim_label = index.label(claim)
        for enc in builder.therapy_encounters():
            visit = builder.build(enc)
            if any(b.claim_reference == claim_label for b in visit.billed):
                encounters.append(enc)
    visits = [builder.build(e, payer_override=payer) for e in encounters]
    if not visits:
        raise NotFoundError(
            f"no therapy visit behind {index.label(claim)} is in the data (Claim.item.encounter or a visit on the "
            "service date); load the patient's chart and try again"
        )
    payer_id = payer or visits[0].payer_id
    denial = decode(cr, index=index, payer_hint=payer_id)
    evaluations = [evaluate(v, payer=payer_id) for v in visits]
    return AppealSource(builder, cr, claim, denial, evaluations, load_payer(payer_id))


def load_files(paths: list[str | Path]) -> LoadResult:
    """Load bundles/files (a directory stands for its *.json files) into one collection."""
    from ptguard.check import load_inputs

    return load_inputs(list(paths))


def read_claim_response(client: FhirClient, claim_response: str) -> Resource:
    """A ClaimResponse by id, else by fixture identifier (the sandbox assigns its own ids)."""
    rid = claim_response.split("/")[-1]
    try:
        return client.read("ClaimResponse", rid)
    except NotFoundError:
        found = client.search("ClaimResponse", {"identifier": f"{FIXTURE_ID}|{rid}"})
        if not found:
            raise NotFoundError(f"ClaimResponse {rid!r} is not on the FHIR server") from None
        return found[0]


def gather_from_server(
    client: FhirClient, claim_response: str, *, budget_seconds: float = 20.0
) -> tuple[LoadResult, Resource, list[Finding]]:
    """Read the ClaimResponse, then the patient's chart, in parallel; refused reads become findings."""
    cr = read_claim_response(client, claim_response)
    patient_ref = ref_string(cr.get("patient"))
    claim_ref = ref_string(cr.get("request"))
    first = LoadResult(source=client.base_url)
    first.add(cr, f"{client.base_url}/ClaimResponse/{cr.get('id')}")
    if not patient_ref and claim_ref and claim_ref.startswith("Claim/"):
        claim = client.read("Claim", claim_ref.split("/")[-1])
        first.add(claim, f"{client.base_url}/{claim_ref}")
        patient_ref = ref_string(claim.get("patient"))
    if not patient_ref or not patient_ref.startswith("Patient/"):
        raise NotFoundError("the ClaimResponse names no patient, and its Claim does not either")
    result = fetch(client, patient_queries(patient_ref.split("/")[-1]), budget_seconds=budget_seconds, have=first)
    return merge(first, result.load), cr, result.findings


def source_from_files(paths: list[str | Path], claim_response: str | None) -> AppealSource:
    """Build the appeal source from files; a single file holding a ClaimResponse may be the first path."""
    expanded: list[str | Path] = []
    for p in paths:
        expanded.append(p)
    if not expanded:
        raise InputError("no input files")
    return build_source(load_files(expanded), claim_response)


def single_file(path: Path) -> LoadResult:
    return load_path(path)
