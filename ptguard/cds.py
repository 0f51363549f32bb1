"""CDS Hooks calls as core logic: services, prefetch templates, request reading, fetching within a budget, findings."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Literal
from urllib.parse import urlsplit

from ptguard.chart import ChartBuilder, TherapyVisit
from ptguard.errors import ConfigError, InputError, NotFoundError, PtguardError, UnsupportedVersionError
from ptguard.fhir import codes
from ptguard.fhir.client import FhirClient, http_url_problem
from ptguard.fhir.dates import parse_date
from ptguard.fhir.fetch import Query, _missing_references, encounter_queries, fetch, merge, patient_queries
from ptguard.fhir.load import SKIPPED_ENTRY_FINDINGS, LoadResult, Resource, load_json_value
from ptguard.fhir.refs import ResourceIndex, element, elements, text
from ptguard.findings import Finding, data_quality
from ptguard.rules.criteria_files import load_payer
from ptguard.rules.engine import Evaluation, evaluate
from ptguard.rules.tables import table

log = logging.getLogger("ptguard.cds")

CUSTOM_NOTE_HOOK = "ptguard-note-sign"
Scope = Literal["encounter", "patient"]
Kind = Literal["signing", "denials"]

# Context fields per hook: name -> primitive? (only primitive fields may appear in prefetch tokens).
HOOK_CONTEXT: dict[str, dict[str, bool]] = {
    "patient-view": {"userId": True, "patientId": True, "encounterId": True},
    "encounter-discharge": {"userId": True, "patientId": True, "encounterId": True},
    "encounter-start": {"userId": True, "patientId": True, "encounterId": True},
    "order-sign": {"userId": True, "patientId": True, "encounterId": True, "draftOrders": False},
    "order-select": {
        "userId": True,
        "patientId": True,
        "encounterId": True,
        "selections": False,
        "draftOrders": False,
    },
    "order-dispatch": {"patientId": True, "dispatchedOrders": False, "performer": True, "fulfillmentTasks": False},
    "appointment-book": {"userId": True, "patientId": True, "encounterId": True, "appointments": False},
    CUSTOM_NOTE_HOOK: {"userId": True, "patientId": True, "encounterId": True, "documentId": True, "draftNote": False},
}
USER_TOKENS = frozenset({"userPractitionerId", "userPractitionerRoleId", "userPatientId", "userRelatedPersonId"})
_TOKEN = re.compile(r"\{\{(.*?)\}\}")

# Extra search parameters added to the shared chart queries when they are offered as prefetch templates.
_TEMPLATE_EXTRAS: dict[str, dict[str, str]] = {
    "coverage": {"status": "active"},
    "observations": {"_sort": "-date"},
}


@dataclass(frozen=True)
class Service:
    """One entry of the discovery document and how its calls are answered."""

    id: str
    hook: str
    title: str
    description: str
    kind: Kind
    scope: Scope
    required_context: tuple[str, ...]
    usage: str | None = None

    def queries(self, patient_id: str, encounter_id: str | None) -> list[Query]:
        """The chart queries this service needs (the same list its prefetch templates are made from)."""
        if self.kind == "denials":
            pat = f"Patient/{patient_id}"
            return [
                ("patient", pat, None),
                ("claim-responses", "ClaimResponse", {"patient": pat}),
                ("claims", "Claim", {"patient": pat}),
                ("coverage", "Coverage", {"patient": pat}),
            ]
        if self.scope == "encounter" and encounter_id:
            found = encounter_queries(patient_id, encounter_id)
        else:
            found = patient_queries(patient_id)
        out: list[Query] = []
        for label, target, params in found:
            extra = _TEMPLATE_EXTRAS.get(label)
            out.append((label, target, {**params, **extra} if params is not None and extra else params))
        return out

    def prefetch(self) -> dict[str, str]:
        """Prefetch templates: the chart queries with `{{context.X}}` tokens in place of ids."""
        enc = "{{context.encounterId}}" if self.scope == "encounter" else None
        return {
            label: target if params is None else target + "?" + "&".join(f"{k}={v}" for k, v in params.items())
            for label, target, params in self.queries("{{context.patientId}}", enc)
        }

    def discovery_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": self.prefetch(),
        }
        if self.usage:
            entry["usageRequirements"] = self.usage
        return entry


_SIGNING = (
    "Checks the visit's CPT 97530 documentation and billing against the payer's criteria (functional goal, "
    "skilled need, objective measures, units by the minutes, NCCI pairs, GP/GO, CQ/CO, KX, plan of care)"
)
SERVICES: dict[str, Service] = {
    s.id: s
    for s in (
        Service(
            "ptguard-97530-signing",
            "encounter-discharge",
            "ptguard: 97530 documentation check",
            _SIGNING + " when the visit is closed or signed.",
            "signing",
            "encounter",
            ("patientId", "encounterId"),
        ),
        Service(
            "ptguard-97530-order-sign",
            "order-sign",
            "ptguard: 97530 check at plan-of-care / treatment order signing",
            _SIGNING + " when a CPT-coded PT/OT treatment or plan-of-care ServiceRequest is signed; checks the "
            "encounter in context, else the patient's most recent unbilled therapy encounter.",
            "signing",
            "patient",
            ("patientId", "draftOrders"),
        ),
        Service(
            "ptguard-97530-note-sign",
            CUSTOM_NOTE_HOOK,
            "ptguard: 97530 check at note signing (custom hook)",
            _SIGNING + " when a therapy note is signed. Custom hook 'ptguard-note-sign'; context: userId, patientId, "
            "encounterId (required), documentId (the note's DocumentReference id) and draftNote (an unsaved "
            "DocumentReference) optional.",
            "signing",
            "encounter",
            ("patientId", "encounterId"),
            usage="For EHRs that support custom hooks; fire it when a therapy daily note is signed.",
        ),
        Service(
            "ptguard-97530-patient-view",
            "patient-view",
            "ptguard: 97530 check on chart open",
            _SIGNING + " when the chart is opened: the encounter in context, else the patient's most recent "
            "unbilled therapy encounter.",
            "signing",
            "patient",
            ("patientId",),
        ),
        Service(
            "ptguard-denials",
            "patient-view",
            "ptguard: open therapy denials",
            "Open denied therapy claims of the patient (from the denial worklist and the FHIR server), each with "
            "its appeal deadline and a link to the appeal view.",
            "denials",
            "patient",
            ("patientId",),
        ),
    )
}


def discovery() -> dict[str, Any]:
    """The discovery document (`GET /cds-services`)."""
    return {"services": [s.discovery_entry() for s in SERVICES.values()]}


def prefetch_token_errors(template: str, hook: str) -> list[str]:
    """Why a prefetch template breaks the CDS Hooks 2.0 token rules (empty list when it is valid)."""
    fields = HOOK_CONTEXT.get(hook)
    errors: list[str] = []
    if template.count("{{") != template.count("}}"):
        errors.append(f"{template!r}: unbalanced braces")
    for raw in _TOKEN.findall(template):
        token = raw.strip()
        if token in USER_TOKENS:
            continue
        parts = token.split(".")
        if len(parts) != 2 or parts[0] != "context" or not parts[1]:
            errors.append(f"{{{{{token}}}}}: only {{{{context.X}}}} with a primitive field, or a user token")
            continue
        if fields is None:
            continue  # an unknown hook: its context is not known here, only the shape can be checked
        if parts[1] not in fields:
            errors.append(f"{{{{{token}}}}}: {hook} has no context field {parts[1]!r}")
        elif not fields[parts[1]]:
            errors.append(f"{{{{{token}}}}}: {hook} context field {parts[1]!r} is not a primitive")
    return errors


def discovery_errors(document: Any) -> list[str]:
    """Token-rule errors of every prefetch template of a discovery document (its shape is the schema's job)."""
    errors: list[str] = []
    services = document.get("services") if isinstance(document, dict) else document
    for svc in services if isinstance(services, list) else []:
        if not isinstance(svc, dict):
            continue
        for key, template in (svc.get("prefetch") or {}).items():
            if not isinstance(template, str):
                errors.append(f"{svc.get('id')}.prefetch.{key}: not a string")
                continue
            errors.extend(f"{svc.get('id')}.prefetch.{key}: {e}" for e in prefetch_token_errors(template, svc["hook"]))
    return errors


# ---------------------------------------------------------------------------------------------- requests


class CdsRequestError(InputError):
    """A malformed CDS Hooks request (answered 400 with an OperationOutcome)."""

    def __init__(self, message: str, *, where: str | None = None, code: str = "invalid") -> None:
        super().__init__(message, where=where)
        self.code = code


class RequiredDataUnavailableError(PtguardError):
    """Data the check cannot run without (the encounter) is neither prefetched nor fetchable (answered 412)."""

    exit_code = 3


@dataclass
class CdsRequest:
    """The parts of a CDS Hooks request the service uses."""

    hook: str
    hook_instance: str
    context: dict[str, Any]
    fhir_server: str | None
    access_token: str | None
    prefetch: dict[str, Any]
    notes: list[Finding] = field(default_factory=list)

    @property
    def patient_id(self) -> str:
        return _bare_id(self.context.get("patientId"), "Patient")

    @property
    def encounter_id(self) -> str | None:
        value = self.context.get("encounterId")
        return _bare_id(value, "Encounter") if isinstance(value, str) and value.strip() else None


_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def valid_id(text: str) -> bool:
    """A FHIR id: [A-Za-z0-9-.]{1,64}, the whole string (no trailing newline), and not only dots ('.', '..')."""
    return _ID.fullmatch(text) is not None and text.strip(".") != ""


def _bare_id(value: Any, rtype: str) -> str:
    text = str(value or "").strip()
    if text.startswith(f"{rtype}/"):
        text = text[len(rtype) + 1 :]
    return text


def parse_request(body: Any, service: Service) -> CdsRequest:
    """Check a decoded request body against CDS Hooks 2.0 and the service; CdsRequestError says what is wrong."""
    if not isinstance(body, dict):
        raise CdsRequestError("the request body is not a JSON object", code="structure")
    hook = body.get("hook")
    if not isinstance(hook, str) or not hook:
        raise CdsRequestError("'hook' is missing", where="hook", code="required")
    if hook != service.hook:
        raise CdsRequestError(f"service {service.id} answers the {service.hook!r} hook, not {hook!r}", where="hook")
    instance = body.get("hookInstance")
    if not isinstance(instance, str) or not instance.strip():
        raise CdsRequestError("'hookInstance' is missing", where="hookInstance", code="required")
    context = body.get("context")
    if not isinstance(context, dict):
        raise CdsRequestError("'context' is missing or not an object", where="context", code="required")
    for name in service.required_context:
        value = context.get(name)
        if value is None or value == "":
            raise CdsRequestError(f"context.{name} is required by {hook}", where=f"context.{name}", code="required")
    for name in ("patientId", "encounterId"):
        value = context.get(name)
        if value is None:
            continue
        rtype = "Patient" if name == "patientId" else "Encounter"
        if not isinstance(value, str) or value != value.strip() or not valid_id(_bare_id(value, rtype)):
            raise CdsRequestError(f"context.{name} is not a FHIR id", where=f"context.{name}")
    if "draftOrders" in service.required_context and not (
        isinstance(context.get("draftOrders"), dict) and context["draftOrders"].get("resourceType") == "Bundle"
    ):
        raise CdsRequestError("context.draftOrders must be a Bundle", where="context.draftOrders")
    server = body.get("fhirServer")
    if server is not None:
        problem = http_url_problem(server)
        if problem is not None:
            raise CdsRequestError(f"'fhirServer' is not an absolute http(s) URL ({problem})", where="fhirServer")
    auth = body.get("fhirAuthorization")
    token: str | None = None
    if auth is not None:
        if not isinstance(auth, dict):
            raise CdsRequestError("'fhirAuthorization' is not an object", where="fhirAuthorization")
        raw = auth.get("access_token")
        if raw is not None and not isinstance(raw, str):
            raise CdsRequestError("fhirAuthorization.access_token is not a string", where="fhirAuthorization")
        token = raw or None
    prefetch = body.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, dict):
        raise CdsRequestError("'prefetch' is not an object", where="prefetch")
    return CdsRequest(hook, instance, context, server or None, token, dict(prefetch or {}))


def fhir_server_allowed(url: str, prefixes: Iterable[str]) -> bool:
    """True when `url` is under one of the base URL `prefixes`: same scheme and host:port, path at a segment boundary."""
    parts = urlsplit(url)
    if parts.username or parts.password or "\\" in url or any(ch.isspace() for ch in url):
        return False
    segments = [s for s in parts.path.split("/") if s]
    if any(s in (".", "..") or "%" in s for s in segments):
        return False
    path = "/" + "/".join(segments)
    for prefix in prefixes:
        p = urlsplit(prefix)
        if (parts.scheme.lower(), parts.netloc.lower()) != (p.scheme.lower(), p.netloc.lower()):
            continue
        base = "/" + "/".join(s for s in p.path.split("/") if s)
        if base == "/" or path == base or path.startswith(base + "/"):
            return True
    return False


def restrict_fhir_server(request: CdsRequest, prefixes: Iterable[str]) -> None:
    """Drop a fhirServer (and its token) the caller's allow-list does not cover: nothing is fetched from it."""
    if request.fhir_server is None or fhir_server_allowed(request.fhir_server, prefixes):
        return
    request.fhir_server = None
    request.access_token = None
    request.notes.append(
        data_quality(
            "fhir-server-not-allowed", "fhirServer not allowed for this issuer", "fhirServer", severity="warning"
        )
    )


# ---------------------------------------------------------------------------------------------- prefetch


@dataclass
class PrefetchRead:
    """What a request's prefetch (and context resources) held: resources, satisfied keys and notes."""

    load: LoadResult
    satisfied: set[str] = field(default_factory=set)
    notes: list[Finding] = field(default_factory=list)
    partial: set[str] = field(default_factory=set)  # keys whose Bundle had entries that were skipped


# Notes that say a query's data is FHIR R5 (their `data["query"]` names the prefetch key or query label).
R5_NOTES = frozenset({"data-quality.prefetch-r5", "data-quality.fhir-r5"})
R5_MESSAGE = "FHIR R5 data, which ptguard does not read (it reads FHIR R4 only)"
_MAX_ENTRY_NOTES = 3


def _r5_note(ident: str, query: str, message: str, where: str) -> Finding:
    return replace(data_quality(ident, message, where, severity="warning"), data={"query": query})


def r5_queries(notes: Iterable[Finding]) -> set[str]:
    """The prefetch keys / chart query labels whose data was FHIR R5."""
    return {str(n.data.get("query")) for n in notes if n.id in R5_NOTES}


def read_prefetch(request: CdsRequest) -> PrefetchRead:
    """Read each prefetch value: a resource or Bundle satisfies its key; null, an OperationOutcome or non-FHIR does not.

    `null` means "no such data" for a search, so its key is satisfied; for a read (Patient, Encounter) the
    service still tries to fetch it. An empty Bundle satisfies its key (nothing to find). An OperationOutcome
    (in place of the value or as the only entry of a Bundle), a value that is not FHIR, FHIR R5, or a Bundle
    none of whose entries can be used (`entry` not a list, entries that are not resources or are R5) leaves
    the key unsatisfied, so it is fetched from `fhirServer`, with a note. Unusable entries of a Bundle that
    has usable ones are skipped with a note each; the key is satisfied but marked partial.
    """
    out = PrefetchRead(LoadResult(source="prefetch"))
    for key, value in request.prefetch.items():
        where = f"prefetch.{key}"
        if value is None:
            if key not in ("patient", "encounter"):
                out.satisfied.add(key)
            continue
        if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
            out.notes.append(
                data_quality("prefetch-not-fhir", f"{where} is not a FHIR resource; fetched instead", where)
            )
            continue
        if value["resourceType"] == "OperationOutcome":
            out.notes.append(
                data_quality("prefetch-outcome", f"{where} is an OperationOutcome (the EHR could not fill it)", where)
            )
            continue
        if value["resourceType"] == "Bundle":
            entries = value.get("entry") or []
            if (
                isinstance(entries, list)
                and entries
                and all(
                    isinstance(e, dict)
                    and isinstance(e.get("resource"), dict)
                    and e["resource"].get("resourceType") == "OperationOutcome"
                    for e in entries
                )
            ):
                out.notes.append(
                    data_quality("prefetch-outcome", f"{where} holds only an OperationOutcome; fetched instead", where)
                )
                continue
        try:
            loaded = load_json_value(value, where)
        except UnsupportedVersionError:
            out.notes.append(_r5_note("prefetch-r5", key, f"{where}: {R5_MESSAGE}; fetched instead", where))
            continue
        except InputError as exc:
            out.notes.append(data_quality("prefetch-unreadable", f"{where}: {exc.message}", where))
            continue
        usable = [
            (res, url)
            for res, url in zip(loaded.resources, loaded.full_urls, strict=False)
            if res.get("resourceType") != "OperationOutcome"
        ]
        skipped = [f for f in loaded.findings if f.id in SKIPPED_ENTRY_FINDINGS]
        if skipped and not usable:
            first = skipped[0]
            if all(f.id == "data-quality.r5-resource" for f in skipped):
                out.notes.append(_r5_note("prefetch-r5", key, f"{where}: {R5_MESSAGE}; fetched instead", where))
            else:
                out.notes.append(
                    data_quality(
                        "prefetch-unusable",
                        f"{_located(first)}: {first.data.get('reason', first.message)}; nothing usable, fetched instead",
                        where,
                        severity="warning",
                    )
                )
            continue
        for res, url in usable:
            out.load.add(res, url)
        out.load.findings.extend(f for f in loaded.findings if f.id not in SKIPPED_ENTRY_FINDINGS)
        out.satisfied.add(key)
        if skipped:
            out.partial.add(key)
            for f in skipped[:_MAX_ENTRY_NOTES]:
                out.notes.append(
                    data_quality("prefetch-bad-entry", f"{_located(f)}: {f.message}", where, severity="warning")
                )
            if len(skipped) > _MAX_ENTRY_NOTES:
                out.notes.append(
                    data_quality(
                        "prefetch-bad-entry",
                        f"{where}: {len(skipped) - _MAX_ENTRY_NOTES} more unusable entries skipped",
                        where,
                        severity="warning",
                    )
                )
    context = request.context
    for key in ("draftOrders", "selections_bundle"):
        if isinstance(context.get(key), dict):
            try:
                loaded = load_json_value(context[key], f"context.{key}")
            except InputError:
                continue
            for res, url in zip(loaded.resources, loaded.full_urls, strict=False):
                out.load.add(res, url)
    draft = context.get("draftNote")
    if isinstance(draft, dict) and draft.get("resourceType") == "DocumentReference":
        note = dict(draft)
        note.setdefault("id", f"draft-{request.hook_instance[:40]}")
        if request.encounter_id and not element(note, "context").get("encounter"):
            note["context"] = {
                **(note.get("context") or {}),
                "encounter": [{"reference": f"Encounter/{request.encounter_id}"}],
            }
        if not note.get("subject"):
            note["subject"] = {"reference": f"Patient/{request.patient_id}"}
        out.load.add(note, None)
    return out


def _located(finding: Finding) -> str:
    """Where a loader finding points (`prefetch.procedures entry[2]`)."""
    return finding.evidence[0].reference if finding.evidence else "prefetch"


# ---------------------------------------------------------------------------------------------- the check


@dataclass
class DenialItem:
    """An open denied therapy claim of the patient, from the worklist or a ClaimResponse on the FHIR server."""

    source: Literal["worklist", "fhir"]
    claim_response: str | None
    claim: str | None
    work_item: str | None
    payer_id: str
    payer_name: str
    codes: list[str]
    reason_codes: list[str]
    category: str
    path: str
    why: str
    amount: float | None
    notice_date: date | None
    service_date: date | None
    due: date | None
    days_left: int | None
    deadline_label: str | None
    deadline_rule: str | None
    deadline_problem: str | None = None  # why no deadline could be counted (a broken setting), said on the card


@dataclass
class CdsResult:
    """The outcome of one call: the evaluation (signing services) or denials, and notes about the data."""

    service: Service
    request: CdsRequest
    evaluation: Evaluation | None = None
    denials: list[DenialItem] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    complete: bool = True
    encounter_reference: str | None = None
    skipped: str | None = None
    elapsed_ms: float = 0.0
    claims: dict[str, Resource] = field(default_factory=dict)
    unavailable: set[str] = field(default_factory=set)
    withheld: list[str] = field(default_factory=list)
    chart_notes: list[Finding] = field(default_factory=list)  # the chart reader's notes about the whole load

    @property
    def problems(self) -> list[Finding]:
        if self.evaluation is None:
            return []
        return [f for f in self.evaluation.problems if f.category != "data-quality"]


ClientFactory = Callable[[str, str | None, float], FhirClient]
WorklistReader = Callable[[str], list[DenialItem]]


def _default_client(base: str, token: str | None, timeout: float) -> FhirClient:
    return FhirClient(base, token=token, timeout=(timeout, timeout), retries=0)


def _keys(load: LoadResult) -> set[str]:
    return {f"{r.get('resourceType')}/{r.get('id')}" for r in load.resources if r.get("id")}


def gather(
    request: CdsRequest,
    queries: list[Query],
    read: PrefetchRead,
    *,
    deadline: float,
    client_factory: ClientFactory = _default_client,
    extra: Iterable[Query] = (),
) -> tuple[LoadResult, list[Finding], bool, set[str]]:
    """Prefetch plus whatever is missing, fetched from fhirServer until `deadline` (time.monotonic).

    Returns the data, notes about what could not be read, whether everything arrived, and the labels of the
    chart queries whose data is missing (so the checks that depend on them are not reported as failures).
    """
    notes: list[Finding] = []
    have = _keys(read.load)
    missing = [q for q in queries if q[0] not in read.satisfied]
    missing += [q for q in extra if q[1] not in have]
    refs = _missing_references(read.load.resources, have)
    missing += [(f"reference {r}", r, None) for r in sorted(refs)[:50]]
    if not missing:
        return read.load, notes, True, set()
    labels = [q[0] for q in missing if not q[0].startswith("reference ")]
    if not request.fhir_server:
        if labels:
            notes.append(
                data_quality(
                    "not-prefetched",
                    f"not in the prefetch and no fhirServer to read them from: {', '.join(labels)}",
                    "prefetch",
                    severity="warning",
                )
            )
        return read.load, notes, not labels, set(labels)
    remaining = deadline - time.monotonic()
    if remaining < 0.02:
        notes.append(
            data_quality("fhir-timeout", f"no time left to read {', '.join(labels) or 'references'}", "fhirServer")
        )
        return read.load, notes, False, set(labels)
    client = client_factory(request.fhir_server, request.access_token, remaining)
    try:
        fetched = fetch(client, missing, budget_seconds=remaining, have=read.load, workers=8)
    finally:
        client.close()
    # A failed read of a reference the prefetch named is not worth a note of its own; failed chart queries are.
    # The caller sees one generic text per failed query: why it failed (refused, timed out, 403, 404, the server's
    # diagnostics) would make ptguard an oracle for probing hosts; the kind of failure goes to the log only.
    # FHIR R5 data is no failure of the server: the caller is told so (a read's R5 answer fails the query; R5 entries
    # of a search are skipped, the rest kept).
    for f in fetched.findings:
        label = f.message.partition(":")[0]
        log.warning(
            "CDS fetch of %s from fhirServer %s (%s)",
            "a reference" if label.startswith("reference ") else label,
            "skipped resources" if f.id == "data-quality.fhir-skipped" else "failed",
            f.id,
        )
        if label.startswith("reference "):
            continue
        if f.id == "data-quality.fhir-r5":
            notes.append(_r5_note("fhir-r5", label, f"{label}: the FHIR server sent {R5_MESSAGE}", "fhirServer"))
        elif f.id == "data-quality.fhir-skipped":
            notes.append(data_quality("fhir-skipped", f.message, "fhirServer", severity="warning"))
        else:
            notes.append(
                data_quality(
                    "fhir-unavailable",
                    f"{label}: could not be read from the FHIR server",
                    "fhirServer",
                    severity=f.severity,
                )
            )
    complete = fetched.complete and not fetched.findings
    failed = {f.message.partition(":")[0] for f in fetched.findings if f.id != "data-quality.fhir-skipped"}
    unavailable = failed & set(labels)
    # A fetch that ran out of time never followed the references of what it read (the performer's Practitioner and
    # PractitionerRole, say): checks that read them must not report their absence.
    if any(label.startswith("reference ") for label in failed) or not fetched.complete:
        unavailable.add("references")
    return merge(read.load, fetched.load), notes, complete, unavailable


def run_check(
    service: Service,
    request: CdsRequest,
    *,
    budget_ms: int = 400,
    started: float | None = None,
    client_factory: ClientFactory = _default_client,
    worklist: WorklistReader | None = None,
    today: date | None = None,
    payer_map: Any = None,
    validate: bool = False,
) -> CdsResult:
    """Answer one call: read the prefetch, fetch what is missing within the budget, and evaluate or list denials.

    `validate` runs fhir.resources R4B validation on the encounter, procedures and claims (about 10 ms a call;
    off by default on this hot path — the chart reader's own checks always run).
    Raises RequiredDataUnavailableError when the encounter a signing service needs cannot be had.
    """
    started = time.monotonic() if started is None else started
    # Leave room after fetching to build the visit, evaluate and make the cards.
    reserve = min(0.06, budget_ms / 1000 * 0.15)
    deadline = started + budget_ms / 1000 - reserve
    result = CdsResult(service, request)
    result.notes.extend(request.notes)
    read = read_prefetch(request)
    result.notes.extend(read.notes)
    if service.kind == "denials":
        _denials(result, read, deadline, client_factory, worklist, today or date.today(), payer_map)
    else:
        _signing(result, read, deadline, client_factory, payer_map, validate)
    result.elapsed_ms = (time.monotonic() - started) * 1000
    return result


def _therapy_orders(load: LoadResult) -> list[Resource]:
    therapy = set(table("therapy-codes")["timed"]) | set(table("therapy-codes")["untimed"])
    found: list[Resource] = []
    for res in load.resources:
        if res.get("resourceType") != "ServiceRequest":
            continue
        concepts = [
            res.get("code"),
            *(
                ext.get("valueCodeableConcept")
                for ext in element(res, "code").get("extension") or []
                if isinstance(ext, dict)
            ),
        ]
        if any(codes.procedure_code(c) in therapy for c in concepts if c):
            found.append(res)
    return found


def _signing(
    result: CdsResult,
    read: PrefetchRead,
    deadline: float,
    client_factory: ClientFactory,
    payer_map: Any,
    validate: bool = False,
) -> None:
    request, service = result.request, result.service
    if request.hook == "order-sign" and not _therapy_orders(read.load):
        result.skipped = "no CPT-coded therapy ServiceRequest among the draft orders"
        return
    eid = request.encounter_id
    # Encounter-scope services read the encounter's chart; patient-scope ones the patient's (the encounter is in it).
    queries = service.queries(request.patient_id, eid if service.scope == "encounter" else None)
    extra: list[Query] = []
    doc = request.context.get("documentId")
    if isinstance(doc, str) and valid_id(_bare_id(doc, "DocumentReference")):
        extra.append(("note being signed", f"DocumentReference/{_bare_id(doc, 'DocumentReference')}", None))
    load, notes, complete, unavailable = gather(
        request, queries, read, deadline=deadline, client_factory=client_factory, extra=extra
    )
    result.notes.extend(notes)
    result.complete = complete and not read.partial
    result.unavailable = unavailable
    builder = ChartBuilder(load, payer_map=payer_map, validate_limit=None if validate else 0)
    encounter: Resource | None
    if eid is not None:
        encounter = next(
            (e for e in builder.index.of_type("Encounter") if str(e.get("id")) == eid),
            None,
        )
        if encounter is None:
            if "encounter" in r5_queries(result.notes):
                raise RequiredDataUnavailableError(
                    f"the encounter in context is {R5_MESSAGE}", where="context.encounterId"
                )
            raise RequiredDataUnavailableError(
                "the encounter in context is neither in the prefetch nor readable from fhirServer",
                where="context.encounterId",
            )
    else:
        encounter = most_recent_unbilled(builder)
        if encounter is None:
            result.skipped = "the patient has no unbilled therapy encounter"
            return
    if not builder.is_therapy_encounter(encounter):
        result.skipped = "the encounter has no therapy procedure or claim line"
        result.encounter_reference = builder.index.label(encounter)
        return
    visit: TherapyVisit = builder.build(encounter)
    result.encounter_reference = visit.encounter_reference
    for line in visit.billed:
        claim = builder.index.resolve(line.claim_reference)
        if claim is not None:
            result.claims[line.claim_reference] = claim
    result.evaluation = evaluate(visit)
    result.chart_notes = [f for f in builder.load_findings if f.id == "data-quality.bad-claim-items"]
    if result.unavailable:
        _drop_unsupported(result)


# Which chart queries each check reads: a problem found while one of them is missing may be an artefact.
CHECK_NEEDS: dict[str, frozenset[str]] = {
    "note-present": frozenset({"notes", "compositions", "procedures"}),
    "narrative": frozenset({"notes", "compositions", "procedures"}),
    "goals-on-record": frozenset({"goals"}),
    "units": frozenset({"procedures", "claims"}),
    "units-per-session": frozenset({"procedures", "claims", "notes"}),
    "episode-limits": frozenset({"encounters", "plans", "claims"}),
    "diagnosis": frozenset({"claims"}),
    "clinician-qualification": frozenset({"procedures", "references"}),
    "ncci-pairs": frozenset({"claims", "notes"}),
    "ncci-bypass-risk": frozenset({"claims", "notes"}),
    "discipline-modifier": frozenset({"claims", "procedures"}),
    "assistant-modifier": frozenset({"procedures", "claims"}),
    "kx-threshold": frozenset({"claims", "coverage"}),
    "poc-certification": frozenset({"plans", "orders"}),
    "progress-report": frozenset({"notes", "encounters", "plans", "claims"}),
    "plan-lists-code": frozenset({"plans"}),
}
PAYER_NEEDS = frozenset({"coverage", "claims"})


def _drop_unsupported(result: CdsResult) -> None:
    """Withhold problems whose data did not arrive (a note that timed out is not a missing note)."""
    ev = result.evaluation
    if ev is None:
        return
    checks = {c.id: c.check for c in ev.payer.criteria}
    payer_unknown = ev.visit.coverage_reference is None and bool(PAYER_NEEDS & result.unavailable)
    kept: list[Finding] = []
    for f in ev.findings:
        needs = CHECK_NEEDS.get(checks.get(f.id, ""), frozenset())
        if f.is_problem and f.category != "data-quality" and (payer_unknown or needs & result.unavailable):
            result.withheld.append(f.id)
            continue
        kept.append(f)
    ev.findings = kept


def most_recent_unbilled(builder: ChartBuilder) -> Resource | None:
    """The patient's latest therapy encounter whose claim is absent, a draft, or not yet adjudicated."""
    ix = builder.index
    adjudicated: set[int] = set()
    for cr in ix.of_type("ClaimResponse"):
        claim = ix.resolve(cr.get("request"), cr)
        if claim is not None:
            adjudicated.add(id(claim))

    def start(enc: Resource) -> str:
        return str(element(enc, "period").get("start") or "")

    for enc in sorted(builder.therapy_encounters(), key=start, reverse=True):
        claims = [c for c, _item in builder.items_by_enc.get(id(enc), [])]
        if not claims or all(c.get("status") == "draft" or id(c) not in adjudicated for c in claims):
            return enc
    return None


# ---------------------------------------------------------------------------------------------- denials


def _denials(
    result: CdsResult,
    read: PrefetchRead,
    deadline: float,
    client_factory: ClientFactory,
    worklist: WorklistReader | None,
    today: date,
    payer_map: Any,
) -> None:
    from ptguard.denials.deadlines import compute_deadline
    from ptguard.denials.decode import decode_or_note

    request = result.request
    items: list[DenialItem] = list(worklist(request.patient_id)) if worklist is not None else []
    queries = result.service.queries(request.patient_id, None)
    load, notes, complete, _unavailable = gather(
        request, queries, read, deadline=deadline, client_factory=client_factory
    )
    result.notes.extend(notes)
    result.complete = complete and not read.partial
    builder = ChartBuilder(load, payer_map=payer_map)
    ix: ResourceIndex = builder.index
    therapy = builder.therapy_codes
    known = {i.claim_response for i in items if i.claim_response} | {i.claim for i in items if i.claim}
    for cr in ix.of_type("ClaimResponse"):
        ref = ix.label(cr)
        try:
            denial = decode_or_note(cr, index=ix)  # one unreadable ClaimResponse costs only its own card
        except PtguardError:
            continue
        if not denial.denied or ref in known or (denial.claim_reference and denial.claim_reference in known):
            continue
        lines = denial.denied_lines
        line_codes = [ln.code for ln in lines if ln.code]
        if not (set(line_codes) & therapy) and lines:
            continue
        insurer = ix.resolve(cr.get("insurer"), cr)
        claim = ix.resolve(cr.get("request"), cr)
        if insurer is None and claim is not None:
            for ins in elements(claim, "insurance"):
                cov = ix.resolve(ins.get("coverage"), claim)
                if cov is not None:
                    insurer = next((ix.resolve(p, cov) for p in elements(cov, "payor")), None)
                    break
        display = text(element(cr, "insurer").get("display")) or ""
        payer_id = builder.payers.payer_for(insurer, display)
        payer_name = _payer_name(payer_id) or str((insurer or {}).get("name") or display or payer_id)
        notice = denial.notice_date or parse_date(cr.get("created"))
        due = days = label = rule = problem = None
        if notice is not None:
            try:
                dl = compute_deadline(payer_id, notice, today=today)
                due, days, label, rule = dl.due, dl.days_left, dl.label, dl.rule
            except (NotFoundError, InputError):  # no level in effect then, or a date out of range: no deadline
                pass
            except ConfigError as exc:  # PTGUARD_CONTRACT_DEADLINES broke while serving: say so, never drop it
                problem = _deadline_setting_problem(exc)
        service_date = _service_date(claim)
        items.append(
            DenialItem(
                source="fhir",
                claim_response=ref,
                claim=denial.claim_reference,
                work_item=None,
                payer_id=payer_id,
                payer_name=payer_name,
                codes=sorted(set(line_codes)) or [],
                reason_codes=denial.codes(),
                category=denial.category_label,
                path=denial.path,
                why=denial.why,
                amount=denial.amount_at_stake or None,
                notice_date=notice,
                service_date=service_date,
                due=due,
                days_left=days,
                deadline_label=label,
                deadline_rule=rule,
                deadline_problem=problem,
            )
        )
    items.sort(key=lambda i: (i.due is None, i.due or date.max))
    result.denials = items


def _deadline_setting_problem(exc: ConfigError) -> str:
    log.warning("appeal deadline not counted: PTGUARD_CONTRACT_DEADLINES is unusable (%s)", exc.one_line()[:200])
    return "the appeal deadline could not be counted: the contract deadline setting is broken (see the server log)"


def _payer_name(payer_id: str) -> str | None:
    try:
        return load_payer(payer_id).name
    except PtguardError:
        return None


def _service_date(claim: Resource | None) -> date | None:
    if not claim:
        return None
    for item in elements(claim, "item"):
        d = parse_date(item.get("servicedDate")) or parse_date(element(item, "servicedPeriod").get("start"))
        if d:
            return d
    return parse_date(element(claim, "billablePeriod").get("start"))


def worklist_reader(database_url: str, *, today: date | None = None) -> WorklistReader:
    """Open denial work items of a patient from the store (the 835 intake fills them)."""

    def read(patient_id: str) -> list[DenialItem]:
        from sqlalchemy import select

        from ptguard.denials.deadlines import compute_deadline
        from ptguard.store.db import session_scope
        from ptguard.store.models import WorkItem

        day = today or date.today()
        wanted = f"Patient/{patient_id}"
        out: list[DenialItem] = []
        with session_scope(database_url) as session:
            rows = session.scalars(
                select(WorkItem).where(WorkItem.status == "open", WorkItem.patient_ref.is_not(None))
            ).all()
            for row in rows:
                ref = str(row.patient_ref or "")
                if ref != wanted and not ref.endswith("/" + wanted):
                    continue
                due, days, rule, label = row.due_date, None, row.deadline_rule, None
                problem = None
                if due is None and row.notice_date is not None and row.payer_id:
                    try:
                        dl = compute_deadline(row.payer_id, row.notice_date, today=day)
                        due, rule, label = dl.due, dl.rule, dl.label
                    except (NotFoundError, InputError):
                        pass
                    except ConfigError as exc:
                        problem = _deadline_setting_problem(exc)
                if due is not None:
                    days = (due - day).days
                out.append(
                    DenialItem(
                        source="worklist",
                        claim_response=row.claim_response_ref,
                        claim=row.claim_ref,
                        work_item=row.id,
                        payer_id=row.payer_id or "default-commercial",
                        payer_name=row.payer_name or row.payer_id or "payer",
                        codes=_strings(row.lines, "code"),
                        reason_codes=_strings(row.codes, "code"),
                        category=row.category or "denial",
                        path=row.path or "appeal",
                        why="",
                        amount=row.amount,
                        notice_date=row.notice_date,
                        service_date=_first_date(row.lines),
                        due=due,
                        days_left=days,
                        deadline_label=label,
                        deadline_rule=rule,
                        deadline_problem=problem,
                    )
                )
        return out

    return read


def _strings(values: Any, key: str) -> list[str]:
    out: list[str] = []
    for v in values or []:
        item = v.get(key) if isinstance(v, Mapping) else v
        if isinstance(item, str) and item and item not in out:
            out.append(item)
    return out


def _first_date(lines: Any) -> date | None:
    for ln in lines or []:
        if isinstance(ln, Mapping):
            for key in ("service_date", "date", "servicedDate"):
                d = parse_date(ln.get(key))
                if d:
                    return d
    return None


def fill_prefetch(service: Service, context: Mapping[str, Any], client: FhirClient) -> dict[str, Any]:
    """Run a service's prefetch templates against a FHIR server the way an EHR would (tests, bench, sandbox)."""
    out: dict[str, Any] = {}
    for key, template in service.prefetch().items():
        missing = False

        def sub(match: re.Match[str]) -> str:
            nonlocal missing
            name = match.group(1).strip().removeprefix("context.")
            value = context.get(name)
            if not isinstance(value, str) or not value:
                missing = True
                return ""
            return value

        query = _TOKEN.sub(sub, template)
        if missing:
            continue
        path, _, qs = query.partition("?")
        if "/" in path:
            rtype, _, rid = path.partition("/")
            try:
                out[key] = client.read(rtype, rid)
            except PtguardError:
                out[key] = None
            continue
        params = [tuple(p.split("=", 1)) for p in qs.split("&") if "=" in p]
        out[key] = client.search_bundle(path, [(k, v) for k, v in params])
    return out


def warm_up() -> float:
    """Load rules, tables, patterns and validation models once (a first call would otherwise pay ~300 ms); → ms."""
    from ptguard.rules.criteria_files import DEFAULT_CRITERIA_DIR

    started = time.monotonic()
    pat = {"resourceType": "Patient", "id": "warm"}
    enc = {
        "resourceType": "Encounter",
        "id": "warm",
        "status": "finished",
        "class": {"code": "AMB"},
        "subject": {"reference": "Patient/warm"},
        "period": {"start": "2026-01-05T09:00:00-05:00"},
    }
    proc = {
        "resourceType": "Procedure",
        "id": "warm",
        "status": "completed",
        "subject": {"reference": "Patient/warm"},
        "encounter": {"reference": "Encounter/warm"},
        "code": {"coding": [{"system": codes.CPT, "code": "97530"}]},
        "performedPeriod": {"start": "2026-01-05T09:00:00-05:00", "end": "2026-01-05T09:30:00-05:00"},
    }
    claim = {
        "resourceType": "Claim",
        "id": "warm",
        "status": "active",
        "use": "claim",
        "patient": {"reference": "Patient/warm"},
        "created": "2026-01-05",
        "provider": {"display": "warm"},
        "priority": {"coding": [{"code": "normal"}]},
        "type": {"coding": [{"code": "professional"}]},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "warm"}}],
        "item": [
            {
                "sequence": 1,
                "productOrService": {"coding": [{"system": codes.CPT, "code": "97530"}]},
                "quantity": {"value": 2},
                "encounter": [{"reference": "Encounter/warm"}],
            }
        ],
    }
    note = {
        "resourceType": "DocumentReference",
        "id": "warm",
        "status": "current",
        "subject": {"reference": "Patient/warm"},
        "context": {"encounter": [{"reference": "Encounter/warm"}]},
        "content": [{"attachment": {"contentType": "text/plain", "data": "V2FybSB1cC4="}}],
    }
    load = LoadResult(source="warm-up")
    for res in (pat, enc, proc, claim, note):
        load.add(res)
    builder = ChartBuilder(load)
    visit = builder.build(enc)
    for path in sorted(DEFAULT_CRITERIA_DIR.glob("*.yaml")):
        try:
            evaluate(visit, payer=path.stem)
        except PtguardError:
            continue
    return (time.monotonic() - started) * 1000
