"""Small hardening: strict ids, bare 401s, 405 as OperationOutcome, strict feedback, a quiet dev server log."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from cdshelpers import SCENARIOS, TokenFactory, fake_for, hook_request, patient_of, post

from ptguard.cds import SERVICES, CdsRequestError, parse_request
from ptguard.errors import InputError
from ptguard.fhir.client import FhirClient
from webapp.serve import quiet_handler

SIGN = "ptguard-97530-signing"


@pytest.mark.parametrize("bad", ["p1\n", "..", ".", "Patient/..", "p1 ", "a/b", "x" * 65, "p\n1"])
def test_context_ids_must_be_whole_fhir_ids(bad: str) -> None:
    body = hook_request(SIGN, patient=bad, encounter="e1", server=None)
    with pytest.raises(CdsRequestError, match="not a FHIR id"):
        parse_request(body, SERVICES[SIGN])
    body = hook_request(SIGN, patient="p1", encounter=bad, server=None)
    with pytest.raises(CdsRequestError, match="not a FHIR id"):
        parse_request(body, SERVICES[SIGN])


def test_good_ids_still_pass() -> None:
    body = hook_request(SIGN, patient="Patient/p-1.a", encounter="e.1", server=None)
    assert parse_request(body, SERVICES[SIGN]).patient_id == "p-1.a"


@pytest.mark.parametrize("bad", ["..", ".", "p1\n", "a b"])
def test_fhir_client_refuses_dot_only_and_newline_ids(bad: str) -> None:
    with FhirClient("https://fhir.example.test") as client, pytest.raises(InputError):
        client.read("Patient", bad)
    with FhirClient("https://fhir.example.test") as client, pytest.raises(InputError):
        client.read("Patient\n", "p1")


def test_401_is_empty_with_www_authenticate(client: Any) -> None:
    for response in (client.get("/cds-services"), client.post(f"/cds-services/{SIGN}", json={})):
        assert response.status_code == 401
        assert response.data == b""
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "text/html" not in (response.headers.get("Content-Type") or "")
        assert response.headers["Access-Control-Allow-Origin"]


@pytest.mark.parametrize(("method", "path"), [("PUT", "/cds-services"), ("DELETE", f"/cds-services/{SIGN}")])
def test_405_is_an_operation_outcome_with_cors(client: Any, method: str, path: str) -> None:
    response = client.open(path, method=method, headers={"Origin": "https://ehr.example"})
    assert response.status_code == 405
    assert response.json["resourceType"] == "OperationOutcome"
    assert response.headers["Access-Control-Allow-Origin"] == "https://ehr.example"
    assert "GET" in response.headers["Allow"] or "POST" in response.headers["Allow"]


def _feedback(client: Any, token: TokenFactory, items: list[dict[str, Any]]) -> Any:
    path = f"/cds-services/{SIGN}/feedback"
    return client.post(path, data=orjson.dumps({"feedback": items}), headers={"Authorization": f"Bearer {token(path)}"})


def _a_card(client: Any, token: TokenFactory) -> str:
    s = next(x for x in SCENARIOS if x["id"] == "cigna-01")
    fake = fake_for("cigna-01")
    import responses

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.register(rsps)
        body = hook_request(SIGN, patient=patient_of(fake, s["encounter"]), encounter=s["encounter"])
        response = post(client, token, SIGN, body)
    return str(response.json["cards"][0]["uuid"])


@pytest.mark.parametrize(
    "ts", ["t", "2026-12-03", "2026-12-03T16:00:00", "2026-13-03T16:00:00Z", "2026-12-03T25:00:00Z"]
)
def test_feedback_with_a_bad_timestamp_is_400_naming_the_item(client: Any, token: TokenFactory, ts: str) -> None:
    card = _a_card(client, token)
    good = {"card": card, "outcome": "accepted", "outcomeTimestamp": "2026-12-03T16:00:00Z"}
    response = _feedback(client, token, [good, {**good, "outcomeTimestamp": ts}])
    assert response.status_code == 400
    assert response.json["issue"][0]["expression"] == ["feedback[1].outcomeTimestamp"]


def test_feedback_on_an_unknown_card_is_400_naming_the_item(client: Any, token: TokenFactory) -> None:
    card = _a_card(client, token)
    good = {"card": card, "outcome": "accepted", "outcomeTimestamp": "2026-12-03T16:00:00.123+01:00"}
    assert _feedback(client, token, [good]).status_code == 200
    response = _feedback(client, token, [good, {**good, "card": "not-ours"}])
    assert response.status_code == 400
    assert response.json["resourceType"] == "OperationOutcome"
    assert response.json["issue"][0]["expression"] == ["feedback[1].card"]


def test_dev_server_request_log_has_no_query_string(caplog: pytest.LogCaptureFixture) -> None:
    handler_class = quiet_handler()
    handler = handler_class.__new__(handler_class)
    handler.path = "/cds-services/x?patient=Patient/secret-123&name=Jane"
    handler.command = "GET"
    handler.requestline = "GET /cds-services/x?patient=Patient/secret-123&name=Jane HTTP/1.1"
    handler.client_address = ("127.0.0.1", 5000)
    handler.request_version = "HTTP/1.1"
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        handler.log_request(200, 10)
    assert "/cds-services/x" in caplog.text
    assert "secret-123" not in caplog.text and "Jane" not in caplog.text
