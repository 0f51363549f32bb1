"""Helpers of the CDS Hooks tests: keys, issuers, schemas, request builders, the fake EHR prefetch."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import responses
import yaml
from fakefhir import FakeFhir
from joserfc.jwk import ECKey, RSAKey
from jsonschema import Draft202012Validator

from ptguard.cds import SERVICES, fill_prefetch
from ptguard.fhir.client import FhirClient

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
SCENARIOS: list[dict[str, Any]] = yaml.safe_load((ROOT / "fhir_fixtures" / "scenarios.yaml").read_text())["scenarios"]
EHR_ISS = "https://ehr.test/cds-client"
ES256_ISS = "https://es256-ehr.test"
RS_ISS = "https://rs384-ehr.test"
RS256_ISS = "https://rs256-day-ehr.test"
JKU_ISS = "https://jku-ehr.test"
JKU_URL = "https://jku-ehr.test/.well-known/jwks.json"
BASE = "http://localhost"
FHIR = "https://ehr.test/fhir"
LAUNCH = "https://ptguard.test/app/launch"


def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(orjson.loads((SCHEMAS / name).read_bytes()))


REQUEST_SCHEMA = _validator("cds-hooks-request.schema.json")
RESPONSE_SCHEMA = _validator("cds-hooks-response.schema.json")
DISCOVERY_SCHEMA = _validator("cds-hooks-discovery.schema.json")
REPORT_SCHEMA = _validator("feedback-report-output.schema.json")


def assert_valid_response(body: Any) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in RESPONSE_SCHEMA.iter_errors(body)]
    assert not errors, errors


class Keys:
    """One key per algorithm family, generated once per session."""

    def __init__(self) -> None:
        self.es384 = ECKey.generate_key("P-384", parameters={"kid": "es384-1"}, private=True)
        self.es256 = ECKey.generate_key("P-256", parameters={"kid": "es256-1"}, private=True)
        self.rs384 = RSAKey.generate_key(2048, parameters={"kid": "rs384-1"}, private=True)
        self.rs256 = RSAKey.generate_key(2048, parameters={"kid": "rs256-1"}, private=True)
        self.jku = ECKey.generate_key("P-384", parameters={"kid": "jku-1"}, private=True)
        self.stranger = ECKey.generate_key("P-384", parameters={"kid": "es384-1"}, private=True)

    @staticmethod
    def public(*keys: Any) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False) for k in keys]}


def issuers_config(keys: Keys) -> dict[str, Any]:
    return {
        EHR_ISS: {"jwks": Keys.public(keys.es384)},
        ES256_ISS: {"jwks": Keys.public(keys.es256), "algorithms": ["ES256"]},
        RS_ISS: {"jwks": Keys.public(keys.rs384), "algorithms": ["RS384"]},
        RS256_ISS: {"jwks": Keys.public(keys.rs256), "algorithms": ["RS256"], "max_lifetime_seconds": 90000},
        JKU_ISS: {"jku_allow": [JKU_URL], "algorithms": ["ES384"]},
    }


TokenFactory = Callable[..., str]


def scenario(ident: str) -> dict[str, Any]:
    return next(s for s in SCENARIOS if s["id"] == ident)


def fake_for(ident: str) -> FakeFhir:
    return FakeFhir.for_files(scenario(ident)["file"], base=FHIR)


def patient_of(fake: FakeFhir, encounter: str) -> str:
    enc = next(r for r in fake.resources if r["resourceType"] == "Encounter" and r["id"] == encounter)
    return str(enc["subject"]["reference"]).split("/")[-1]


def hook_request(
    service_id: str,
    *,
    patient: str,
    encounter: str | None,
    prefetch: dict[str, Any] | None = None,
    server: str | None = FHIR,
    token: str | None = "ehr-access-token",
    **context: Any,
) -> dict[str, Any]:
    service = SERVICES[service_id]
    ctx: dict[str, Any] = {"userId": "Practitioner/prac-okafor", "patientId": patient, **context}
    if encounter:
        ctx["encounterId"] = encounter
    body: dict[str, Any] = {"hook": service.hook, "hookInstance": str(uuid.uuid4()), "context": ctx}
    if server:
        body["fhirServer"] = server
        if token:
            body["fhirAuthorization"] = {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": "user/*.read",
                "subject": "ptguard",
            }
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def therapy_draft_orders(pid: str, code: str = "97530") -> dict[str, Any]:
    """An order-sign `draftOrders` Bundle holding one draft therapy ServiceRequest for the patient."""
    order = {
        "resourceType": "ServiceRequest",
        "id": "draft-poc",
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
    }
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]}


def full_prefetch(fake: FakeFhir, service_id: str, context: dict[str, Any]) -> dict[str, Any]:
    """What an EHR would prefetch for the service (its templates run against the fake server)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake.register(mock)
        with FhirClient(fake.base) as c:
            filled = fill_prefetch(SERVICES[service_id], context, c)
    fake.auth_seen.clear()
    fake.paths.clear()
    return filled


def post(client: Any, token: TokenFactory, service_id: str, body: Any, **kw: Any) -> Any:
    """POST a service call; a 200 answer is checked against the CDS Hooks response schema before it is returned.

    Feedback calls (`<service>/feedback`) are not checked: schemas/ has no schema for their (empty) answers.
    """
    path = f"/cds-services/{service_id}"
    data = body if isinstance(body, bytes | str) else orjson.dumps(body)
    response = client.post(
        path,
        data=data,
        headers={"Authorization": f"Bearer {token(path, **kw)}", "Content-Type": "application/json"},
    )
    if response.status_code == 200 and not service_id.endswith("/feedback"):
        assert response.mimetype == "application/json", response.mimetype
        assert_valid_response(orjson.loads(response.data))
    return response


def call_service(client: Any, token: TokenFactory, fake: FakeFhir | None, service_id: str, body: Any) -> Any:
    """POST a service call with `fake` (when given) answering the FHIR reads; a 200 is schema-checked."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        if fake is not None:
            fake.register(rsps)
        response = post(client, token, service_id, body)
    if response.status_code == 200:
        assert_valid_response(response.json)
    return response


def card_topics(response: Any) -> list[str]:
    """The sorted topic codes of a response's cards."""
    return sorted(c["source"]["topic"]["code"] for c in response.json["cards"])
