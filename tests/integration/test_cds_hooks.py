"""CDS Hooks over HTTP with signed ES384 JWTs, against the real FHIR server loaded with the fixture clinic."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
import yaml
from joserfc import jwt
from joserfc.jwk import ECKey
from jsonschema import Draft202012Validator
from werkzeug.serving import BaseWSGIServer, make_server

from ptguard.cds import SERVICES, fill_prefetch
from ptguard.fhir.client import FhirClient
from ptguard.fixtures_load import load_fixtures
from sandbox.fhir_server import FhirServerProcess

# `import cds_hooks` must find the package, not tests/cds_hooks (tests/ is on sys.path)
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fhir_fixtures"
SCENARIOS: list[dict[str, Any]] = yaml.safe_load((FIXTURES / "scenarios.yaml").read_text())["scenarios"]
RESPONSE_SCHEMA = Draft202012Validator(orjson.loads((ROOT / "schemas" / "cds-hooks-response.schema.json").read_bytes()))
ISS = "https://ehr.integration.test"
SIGN = "ptguard-97530-signing"
TOKEN = "fhir-secret-token"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="module")
def guarded_fhir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second sandbox FHIR server that answers only with the bearer token, loaded with the fixtures."""
    server = FhirServerProcess(log_path=tmp_path_factory.mktemp("guarded") / "fhir.log", require_token=TOKEN)
    base = server.start()
    try:
        with FhirClient(base, token=TOKEN) as client:
            load_fixtures(client, FIXTURES)
        yield base
    finally:
        server.stop()


@pytest.fixture(scope="module")
def key() -> ECKey:
    return ECKey.generate_key("P-384", parameters={"kid": "int-1"}, private=True)


class Service:
    """The Flask app served over real HTTP (werkzeug, threaded) on a free port."""

    def __init__(self, app: Any) -> None:
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.session = requests.Session()

    def __enter__(self) -> Service:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _app(key: ECKey, database_url: str, budget_ms: int) -> Any:
    from webapp import create_app

    return create_app(
        {
            "TESTING": True,
            "DATABASE_URL": database_url,
            "CDS_ISSUERS": {ISS: {"jwks": {"keys": [key.as_dict(private=False)]}, "algorithms": ["ES384"]}},
            "CDS_TIME_BUDGET_MS": budget_ms,
            "CDS_WARM_UP": True,  # as in production: rules, models and the store are loaded at start-up
        }
    )


@pytest.fixture
def service(key: ECKey, tmp_path: Path) -> Iterator[Service]:
    with Service(_app(key, f"sqlite:///{tmp_path / 'cds.sqlite3'}", 3000)) as svc:
        yield svc


def _jwt(key: ECKey, url: str) -> str:
    now = int(time.time())
    claims = {"iss": ISS, "aud": url, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4()), "sub": "epic-like"}
    return jwt.encode({"alg": "ES384", "typ": "JWT", "kid": key.kid}, claims, key, algorithms=["ES384"])


def _post(svc: Service, key: ECKey, path: str, body: Any) -> requests.Response:
    url = svc.base + path
    response = svc.session.post(
        url, data=orjson.dumps(body), headers={"Authorization": f"Bearer {_jwt(key, url)}"}, timeout=30
    )
    if response.status_code == 200 and path.count("/") == 2:
        errors = list(RESPONSE_SCHEMA.iter_errors(response.json()))
        assert not errors, errors
    return response


def _ids(base: str, slug: str) -> tuple[str, str]:
    """Server ids of a scenario's encounter and its patient."""
    with FhirClient(base, token=TOKEN) as client:
        (enc,) = client.search("Encounter", {"identifier": f"https://ptguard.dev/fixture-id|{slug}"})
    return str(enc["id"]), str(enc["subject"]["reference"]).split("/")[-1]


def _request(
    service_id: str, base: str, pid: str, enc: str | None, prefetch: dict[str, Any] | None, token: str = TOKEN
) -> dict[str, Any]:
    ctx: dict[str, Any] = {"userId": "Practitioner/x", "patientId": pid}
    if enc:
        ctx["encounterId"] = enc
    body: dict[str, Any] = {
        "hook": SERVICES[service_id].hook,
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": base,
        "fhirAuthorization": {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/*.read",
            "subject": "ptguard",
        },
        "context": ctx,
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def _prefetch(base: str, service_id: str, pid: str, enc: str | None) -> dict[str, Any]:
    with FhirClient(base, token=TOKEN) as client:
        return fill_prefetch(SERVICES[service_id], {"patientId": pid, "encounterId": enc or ""}, client)


def _topics(response: requests.Response) -> list[str]:
    return sorted(c["source"]["topic"]["code"] for c in response.json()["cards"])


def test_cigna_without_prefetch_fetches_with_the_bearer_token(guarded_fhir: str, key: ECKey, tmp_path: Path) -> None:
    enc, pid = _ids(guarded_fhir, "enc-cigna-01")
    # The sandbox server reads a whole chart in about 230 ms when warm (more when cold): give it 2 s here.
    with Service(_app(key, f"sqlite:///{tmp_path / 'a.sqlite3'}", 2000)) as svc:
        response = _post(svc, key, f"/cds-services/{SIGN}", _request(SIGN, guarded_fhir, pid, enc, None))
        assert response.status_code == 200
        cards = response.json()["cards"]
        assert cards[0]["summary"] == "97530: 31 timed minutes support 2 units, 3 billed"
        assert cards[0]["indicator"] == "critical"
        assert _topics(response) == ["units.billed-vs-supported"]
        # a wrong bearer token: the server refuses every read, so the encounter cannot be had
        bad = _post(svc, key, f"/cds-services/{SIGN}", _request(SIGN, guarded_fhir, pid, enc, None, token="wrong"))
        assert bad.status_code == 412 and bad.json()["resourceType"] == "OperationOutcome"
    # At the default 400 ms budget the answer comes in time and never reports unread data as missing.
    with Service(_app(key, f"sqlite:///{tmp_path / 'b.sqlite3'}", 400)) as svc:
        started = time.monotonic()
        response = _post(svc, key, f"/cds-services/{SIGN}", _request(SIGN, guarded_fhir, pid, enc, None))
        elapsed = (time.monotonic() - started) * 1000
    assert response.status_code in (200, 412) and elapsed < 500, elapsed
    if response.status_code == 200:
        assert set(_topics(response)) <= {"units.billed-vs-supported", "data-quality"}


@pytest.mark.parametrize("mode", ["full", "partial", "none"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["id"] for s in SCENARIOS])
def test_every_scenario_over_http(
    guarded_fhir: str, key: ECKey, service: Service, scenario: dict[str, Any], mode: str
) -> None:
    enc, pid = _ids(guarded_fhir, scenario["encounter"])
    prefetch: dict[str, Any] | None = None
    if mode != "none":
        prefetch = _prefetch(guarded_fhir, SIGN, pid, enc)
        if mode == "partial":
            prefetch = {k: v for k, v in prefetch.items() if k in {"patient", "encounter", "procedures", "notes"}}
    response = _post(service, key, f"/cds-services/{SIGN}", _request(SIGN, guarded_fhir, pid, enc, prefetch))
    assert response.status_code == 200
    assert _topics(response) == sorted(scenario["intended_problems"])


def test_goal_card_for_a_note_without_a_goal_link(guarded_fhir: str, key: ECKey, service: Service) -> None:
    enc, pid = _ids(guarded_fhir, "enc-uhc-01")
    response = _post(service, key, f"/cds-services/{SIGN}", _request(SIGN, guarded_fhir, pid, enc, None))
    goal = next(c for c in response.json()["cards"] if c["source"]["topic"]["code"] == "note.functional-goal")
    assert goal["summary"].startswith("UnitedHealthcare: activity not tied to a functional goal — add which")


def test_denials_card_from_the_server(guarded_fhir: str, key: ECKey, service: Service) -> None:
    _enc, pid = _ids(guarded_fhir, "enc-uhc-01")
    response = _post(
        service, key, "/cds-services/ptguard-denials", _request("ptguard-denials", guarded_fhir, pid, None, None)
    )
    (card,) = response.json()["cards"]
    assert "97530 denied by UnitedHealthcare" in card["summary"] and "appeal due" in card["summary"]
    assert orjson.loads(card["links"][0]["appContext"])["view"] == "appeal"


def test_slow_fhir_server_answer_within_budget(
    guarded_fhir: str, key: ECKey, tmp_path: Path, silent_server: str
) -> None:
    enc, pid = _ids(guarded_fhir, "enc-cigna-01")
    prefetch = _prefetch(guarded_fhir, SIGN, pid, enc)
    partial = {k: v for k, v in prefetch.items() if k in {"patient", "encounter", "procedures", "claims", "coverage"}}
    with Service(_app(key, f"sqlite:///{tmp_path / 's.sqlite3'}", 400)) as svc:
        body = _request(SIGN, silent_server, pid, enc, partial)
        started = time.monotonic()
        response = _post(svc, key, f"/cds-services/{SIGN}", body)
        elapsed = (time.monotonic() - started) * 1000
    assert response.status_code == 200 and elapsed < 400 + 100, elapsed
    topics = _topics(response)
    assert "units.billed-vs-supported" in topics and "data-quality" in topics


def test_cards_and_feedback_in_postgresql(guarded_fhir: str, key: ECKey, pg_url: str) -> None:
    from ptguard.cds_feedback import feedback_report

    enc, pid = _ids(guarded_fhir, "enc-cigna-01")
    with Service(_app(key, pg_url, 3000)) as svc:
        response = _post(svc, key, f"/cds-services/{SIGN}", _request(SIGN, guarded_fhir, pid, enc, None))
        card = response.json()["cards"][0]
        item = {
            "card": card["uuid"],
            "outcome": "overridden",
            "overrideReason": {"reason": card["overrideReasons"][2]},
            "outcomeTimestamp": "2026-12-03T16:00:00Z",
        }
        for _ in range(2):
            assert _post(svc, key, f"/cds-services/{SIGN}/feedback", {"feedback": [item]}).status_code == 200
    report = feedback_report(pg_url)
    (row,) = [r for r in report["criteria"] if r["criterion"] == "units.billed-vs-supported"]
    assert row["cards_issued"] == 1 and row["overridden"] == 1 and row["feedback"] == 1
    assert row["override_reasons"] == [{"reason": "Will correct before billing", "count": 1}]
