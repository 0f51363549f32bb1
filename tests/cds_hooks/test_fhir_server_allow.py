"""What a CDS caller can make ptguard fetch: the per-issuer fhirServer allow-list, and failure texts that are no oracle."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from cdshelpers import (
    EHR_ISS,
    FHIR,
    SCENARIOS,
    Keys,
    TokenFactory,
    fake_for,
    full_prefetch,
    hook_request,
    issuers_config,
    patient_of,
    post,
)

from cds_hooks.jwt import parse_issuers
from ptguard.cds import fhir_server_allowed
from ptguard.errors import ConfigError

SIGN = "ptguard-97530-signing"


def _app(tmp_path: Path, keys: Keys, servers: list[str] | None) -> Any:
    from webapp import create_app

    issuers = issuers_config(keys)
    if servers is not None:
        issuers[EHR_ISS] = {**issuers[EHR_ISS], "fhir_servers": servers}
    return create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'a.sqlite3'}",
            "CDS_ISSUERS": issuers,
            "PUBLIC_BASE_URL": None,
            "CDS_TIME_BUDGET_MS": 2000,
        }
    )


def _body(server: str, keep: set[str]) -> dict[str, Any]:
    s = next(x for x in SCENARIOS if x["id"] == "cigna-01")
    fake = fake_for("cigna-01")
    pid, enc = patient_of(fake, s["encounter"]), s["encounter"]
    ctx = {"userId": "Practitioner/prac-okafor", "patientId": pid, "encounterId": enc}
    prefetch = {k: v for k, v in full_prefetch(fake, SIGN, ctx).items() if k in keep}
    return hook_request(SIGN, patient=pid, encounter=enc, prefetch=prefetch, server=server)


def _dq(response: Any) -> str:
    cards = [c for c in response.json["cards"] if c["source"]["topic"]["code"] == "data-quality"]
    assert cards, response.json
    return str(cards[0]["detail"])


KEEP = {"patient", "encounter", "procedures", "claims", "coverage"}


def test_fhir_server_not_on_the_issuers_list_is_never_fetched(tmp_path: Path, keys: Keys, token: TokenFactory) -> None:
    client = _app(tmp_path, keys, [FHIR]).test_client()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        response = post(client, token, SIGN, _body("http://10.0.0.7:22/fhir", KEEP))
        assert len(rsps.calls) == 0, "no request may go to a fhirServer the issuer is not allowed"
    assert response.status_code == 200
    assert "fhirServer not allowed for this issuer" in _dq(response)
    assert "10.0.0.7" not in response.get_data(as_text=True)


@pytest.mark.parametrize("server", [FHIR + "/../admin", FHIR + "/%2e%2e/x", FHIR + "x", "https://ehr.test.evil/fhir"])
def test_lookalike_servers_are_not_allowed(server: str) -> None:
    assert not fhir_server_allowed(server, [FHIR])


def test_allowed_fhir_server_is_fetched(tmp_path: Path, keys: Keys, token: TokenFactory) -> None:
    assert fhir_server_allowed(FHIR, [FHIR]) and fhir_server_allowed(FHIR + "/", [FHIR + "/"])
    assert fhir_server_allowed("HTTPS://EHR.test/fhir/r4", [FHIR])
    client = _app(tmp_path, keys, [FHIR]).test_client()
    fake = fake_for("cigna-01")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.register(rsps)
        response = post(client, token, SIGN, _body(FHIR, KEEP))
    assert response.status_code == 200
    assert any(p.startswith("DocumentReference?") for p in fake.paths)
    assert "not allowed" not in response.get_data(as_text=True)


def test_bad_fhir_servers_config_is_refused() -> None:
    with pytest.raises(ConfigError):
        parse_issuers({EHR_ISS: {"jwks": {"keys": []}, "fhir_servers": "https://x"}})
    with pytest.raises(ConfigError):
        parse_issuers({EHR_ISS: {"jwks": {"keys": []}, "fhir_servers": ["ftp://x"]}})


def _failing(kind: str, rsps: responses.RequestsMock) -> None:
    url = re.compile(r"https://probe\.test/.*")
    if kind == "refused":
        rsps.add(responses.GET, url, body=requests.exceptions.ConnectionError("Connection refused"))
    elif kind == "timeout":
        rsps.add(responses.GET, url, body=requests.exceptions.ConnectTimeout("timed out"))
    elif kind == "diagnostics":
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "diagnostics": "SSH-2.0-OpenSSH"}],
        }
        rsps.add(responses.GET, url, json=outcome, status=500)
    else:
        rsps.add(responses.GET, url, json={"resourceType": "OperationOutcome", "issue": []}, status=int(kind))


def test_connection_failures_read_the_same_to_the_caller(
    client: Any, token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    details: set[tuple[str, ...]] = set()
    for kind in ("refused", "timeout", "diagnostics", "403", "404", "302"):
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            _failing(kind, rsps)
            response = post(client, token, SIGN, _body("https://probe.test/fhir", KEEP))
        assert response.status_code == 200
        text = response.get_data(as_text=True).lower()
        for leak in ("refused", "timed out", "timeout", "openssh", "probe.test", "connect", "forbidden", "redirect"):
            assert leak not in text, (kind, leak)
        detail = _dq(response)
        assert not re.search(r"\b(403|404|302|500)\b", detail), detail
        details.add(tuple(sorted(detail.splitlines())))  # the queries fail in parallel, in any order
    assert len(details) == 1, details
    assert "ehr-access-token" not in caplog.text
