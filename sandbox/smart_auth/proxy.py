"""The protected FHIR base: checks the bearer token and its SMART scopes, then forwards to the sandbox FHIR server."""

from __future__ import annotations

import json
import re
from typing import Any

import requests
from flask import Request, Response

from sandbox.smart_auth.scopes import allowed, split_scopes
from sandbox.smart_auth.state import AuthState, TokenRecord

FORWARD_REQUEST_HEADERS = ("Content-Type", "Accept", "If-None-Exist", "If-Match", "If-None-Match", "Prefer")
FORWARD_RESPONSE_HEADERS = ("Content-Type", "Location", "Content-Location", "ETag", "Last-Modified")
PATIENT_REF_FIELDS = ("patient", "subject", "beneficiary", "for")
PATIENT_SEARCH_PARAMS = ("patient", "subject", "beneficiary")
_TYPE = re.compile(r"^[A-Z][A-Za-z]+$")
UPSTREAM_TIMEOUT = 30


class ProxyDeniedError(Exception):
    """A request the token may not make: status 401 or 403 and a message for the OperationOutcome."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def operation_outcome(status: int, message: str, code: str) -> Response:
    """An OperationOutcome response; 401 and 403 carry a Bearer WWW-Authenticate header."""
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": message}],
    }
    response = Response(json.dumps(body), status=status, content_type="application/fhir+json")
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="ptguard-sandbox", error="invalid_token"'
    elif status == 403:
        response.headers["WWW-Authenticate"] = 'Bearer realm="ptguard-sandbox", error="insufficient_scope"'
    return response


def bearer_record(state: AuthState, request: Request) -> TokenRecord:
    """The token record for the request's bearer token, or ProxyDeniedError(401)."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ProxyDeniedError(401, "A bearer access token is required.", "login")
    record = state.token_for(value.strip())
    if record is None:
        raise ProxyDeniedError(401, "The access token is unknown or has expired.", "login")
    return record


def interactions(method: str, parts: list[str]) -> list[tuple[str, str]]:
    """(resource type, op letter) pairs a REST call needs; [] for a root call (handled per entry)."""
    if not parts:
        return []
    resource_type = parts[0]
    if not _TYPE.match(resource_type):
        raise ProxyDeniedError(
            400 if method != "GET" else 404, f"Unknown path segment {resource_type!r}.", "not-supported"
        )
    rest = parts[1:]
    if not rest:
        return [(resource_type, {"GET": "s", "POST": "c"}.get(method, "?"))]
    if rest[0] == "_search":
        return [(resource_type, "s")]
    if rest[0] == "_history" or rest[0].startswith("$"):
        return [(resource_type, "r" if method == "GET" else "u")]
    op = {"GET": "r", "HEAD": "r", "PUT": "u", "PATCH": "u", "DELETE": "d", "POST": "u"}.get(method, "?")
    return [(resource_type, op)]


def _ref_patient_ids(value: Any) -> list[str]:
    """Patient ids named by a Reference (or a list of them)."""
    found: list[str] = []
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("reference"), str):
            ref = item["reference"]
            match = re.search(r"(?:^|/)Patient/([^/?#]+)(?:/_history/.*)?$", ref)
            if match:
                found.append(match.group(1))
    return found


def resource_patients(resource: dict[str, Any]) -> list[str]:
    """The patient ids a resource belongs to (its own id for a Patient)."""
    if resource.get("resourceType") == "Patient":
        return [str(resource.get("id"))]
    ids: list[str] = []
    for key in PATIENT_REF_FIELDS:
        ids.extend(_ref_patient_ids(resource.get(key)))
    return ids


def _param_patient(value: str) -> str:
    return value.rsplit("/", 1)[-1] if "Patient/" in value else value


class Decision:
    """What the scopes allow for one interaction: unrestricted, or limited to the token's patient."""

    def __init__(self, resource_type: str, op: str, patient: str | None) -> None:
        self.resource_type = resource_type
        self.op = op
        self.patient = patient  # None = unrestricted


def decide(state: AuthState, record: TokenRecord, resource_type: str, op: str) -> Decision:
    """Decide one interaction or raise ProxyDeniedError(403)."""
    if resource_type in state.switches.forbid_resource_types:
        raise ProxyDeniedError(403, f"Access to {resource_type} is not permitted for this application.", "forbidden")
    granted = allowed(split_scopes(record.scope), resource_type, op)
    if not granted:
        raise ProxyDeniedError(403, f"The access token has no scope permitting '{op}' on {resource_type}.", "forbidden")
    if any(p.context in ("user", "system") for p in granted):
        return Decision(resource_type, op, None)
    patient = record.context.get("patient")
    if not patient:
        raise ProxyDeniedError(403, "A patient/ scope needs a patient in the launch context.", "forbidden")
    return Decision(resource_type, op, str(patient))


def restrict_search(decision: Decision, args: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Search parameters limited to the token's patient (checked, or added)."""
    pid = decision.patient
    if pid is None:
        return args
    if decision.resource_type == "Patient":
        ids = [v for k, v in args if k == "_id"]
        if any(i != pid for value in ids for i in value.split(",")):
            raise ProxyDeniedError(403, "This token may only read its own patient.", "forbidden")
        return args if ids else [*args, ("_id", pid)]
    named = [v for k, v in args if k.split(":")[0] in PATIENT_SEARCH_PARAMS]
    if any(_param_patient(v) != pid for value in named for v in value.split(",")):
        raise ProxyDeniedError(403, "This token may only search its own patient's records.", "forbidden")
    return args if named else [*args, ("patient", f"Patient/{pid}")]


def check_body(decision: Decision, body: bytes) -> None:
    """A create or update under a patient scope must belong to the token's patient."""
    if decision.patient is None or not body:
        return
    try:
        resource = json.loads(body)
    except ValueError:
        return  # the FHIR server answers 400
    if isinstance(resource, dict):
        check_resource(decision, resource)


def check_resource(decision: Decision, resource: dict[str, Any]) -> None:
    """Refuse a resource that belongs to another patient."""
    if decision.patient is None:
        return
    owners = resource_patients(resource)
    if owners and decision.patient not in owners:
        raise ProxyDeniedError(403, "This resource belongs to another patient.", "forbidden")


def forward(
    state: AuthState,
    request: Request,
    subpath: str,
    args: list[tuple[str, str]],
    body: bytes | None = None,
) -> requests.Response:
    """Send the call to the upstream FHIR server."""
    headers = {h: request.headers[h] for h in FORWARD_REQUEST_HEADERS if h in request.headers}
    url = f"{state.fhir_url}/{subpath}" if subpath else state.fhir_url
    return requests.request(
        request.method,
        url,
        params=args,
        data=body if body is not None else request.get_data(),
        headers=headers,
        timeout=UPSTREAM_TIMEOUT,
    )


def relay(state: AuthState, upstream: requests.Response) -> Response:
    """The upstream answer with its URLs rewritten to point at the proxy."""
    content = upstream.content.replace(state.fhir_url.encode(), state.fhir_base().encode())
    response = Response(content, status=upstream.status_code)
    for name in FORWARD_RESPONSE_HEADERS:
        if name in upstream.headers:
            response.headers[name] = upstream.headers[name].replace(state.fhir_url, state.fhir_base())
    return response


def handle(state: AuthState, request: Request, subpath: str) -> Response:
    """Check and forward one FHIR call."""
    parts = [p for p in subpath.split("/") if p]
    try:
        if parts == ["metadata"] and request.method == "GET":
            return metadata(state, request)
        record = bearer_record(state, request)
        args = list(request.args.items(multi=True))
        if not parts:
            return root_call(state, request, record, args)
        needed = interactions(request.method, parts)
        decisions = [decide(state, record, t, op) for t, op in needed]
        decision = decisions[0]
        if decision.op == "s":
            if request.method == "POST":  # _search with a form body
                form = list(request.form.items(multi=True))
                restricted = restrict_search(decision, form)
                with forward(state, request, f"{parts[0]}/_search", args, body=_urlencode(restricted)) as up:
                    return relay(state, up)
            args = restrict_search(decision, args)
        elif decision.op == "r" and decision.patient is not None and parts[0] == "Patient" and len(parts) > 1:
            if parts[1] != decision.patient:
                raise ProxyDeniedError(403, "This token may only read its own patient.", "forbidden")
        elif decision.op in ("c", "u"):
            check_body(decision, request.get_data())
        with forward(state, request, "/".join(parts), args) as upstream:
            if decision.op == "r" and decision.patient is not None and upstream.status_code == 200:
                try:
                    resource = upstream.json()
                except ValueError:
                    resource = None
                if isinstance(resource, dict):
                    check_resource(decision, resource)
            return relay(state, upstream)
    except ProxyDeniedError as denied:
        return operation_outcome(denied.status, denied.message, denied.code)
    except requests.RequestException:
        return operation_outcome(502, "The FHIR server behind this proxy did not answer.", "transient")


def _urlencode(items: list[tuple[str, str]]) -> bytes:
    from urllib.parse import urlencode

    return urlencode(items).encode()


def root_call(state: AuthState, request: Request, record: TokenRecord, args: list[tuple[str, str]]) -> Response:
    """A transaction/batch Bundle (POST) or a system search with _type (GET): every entry/type is checked."""
    if request.method == "GET":
        types = [t for value in (v for k, v in args if k == "_type") for t in value.split(",") if t]
        if not types:
            raise ProxyDeniedError(403, "A system-level search needs _type and a scope for each type.", "forbidden")
        for resource_type in types:
            if decide(state, record, resource_type, "s").patient is not None:
                raise ProxyDeniedError(403, "A patient/ scope does not allow a system-level search.", "forbidden")
        with forward(state, request, "", args) as upstream:
            return relay(state, upstream)
    if request.method != "POST":
        raise ProxyDeniedError(405, "Only POST (transaction or batch) and GET with _type at the base.", "not-supported")
    try:
        bundle = json.loads(request.get_data() or b"{}")
    except ValueError:
        bundle = None
    if isinstance(bundle, dict):
        for entry in bundle.get("entry", []) or []:
            req = entry.get("request") or {}
            method = str(req.get("method", "GET")).upper()
            path = str(req.get("url", "")).split("?")[0]
            for resource_type, op in interactions(method, [p for p in path.split("/") if p]):
                decision = decide(state, record, resource_type, op)
                if isinstance(entry.get("resource"), dict):
                    check_resource(decision, entry["resource"])
    with forward(state, request, "", args) as upstream:
        return relay(state, upstream)


def metadata(state: AuthState, request: Request) -> Response:
    """The upstream CapabilityStatement (no token needed), with the SMART OAuth URIs added."""
    with forward(state, request, "metadata", list(request.args.items(multi=True))) as upstream:
        if upstream.status_code != 200:
            return relay(state, upstream)
        capability = upstream.json()
    rest = capability.setdefault("rest", [{"mode": "server"}]) or [{"mode": "server"}]
    rest[0]["security"] = {
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": "authorize", "valueUri": state.authorize_url()},
                    {"url": "token", "valueUri": state.token_url()},
                ],
            }
        ],
    }
    capability["rest"] = rest
    text = json.dumps(capability).replace(state.fhir_url, state.fhir_base())
    return Response(text, status=200, content_type="application/fhir+json")
