"""The sandbox SMART authorization server over real HTTP: launches, PKCE, refresh, private_key_jwt, proxy, switches."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from ptguard.fhir.client import FhirClient
from ptguard.fixtures_load import load_fixtures
from sandbox.smart_auth import SmartAuthServer

pytestmark = pytest.mark.integration

REDIRECT = "http://127.0.0.1:9/callback"
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 10
REQUIRED_CAPABILITIES = {
    "launch-ehr",
    "launch-standalone",
    "client-public",
    "client-confidential-asymmetric",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
    "permission-offline",
    "authorize-post",
}


# ------------------------------------------------------------------ helpers


def pkce() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def query(location: str) -> dict[str, str]:
    """The query parameters of a redirect Location."""
    return {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}


def get(url: str, **kwargs: Any) -> requests.Response:
    with requests.get(url, timeout=TIMEOUT, **kwargs) as response:
        response.content  # noqa: B018 - read the body before the connection closes
        return response


def post(url: str, **kwargs: Any) -> requests.Response:
    with requests.post(url, timeout=TIMEOUT, **kwargs) as response:
        response.content  # noqa: B018
        return response


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Flow:
    """One authorization code flow with PKCE, driven with plain requests."""

    def __init__(self, auth: SmartAuthServer, client_id: str, scope: str, **params: str) -> None:
        self.auth = auth
        self.client_id = client_id
        self.verifier, challenge = pkce()
        self.state = secrets.token_urlsafe(24)
        self.params: dict[str, str] = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "scope": scope,
            "state": self.state,
            "aud": auth.fhir_base,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **params,
        }

    def authorize(self, **overrides: str | None) -> requests.Response:
        params = {k: v for k, v in {**self.params, **overrides}.items() if v is not None}
        return get(self.auth.authorize_url, params=params, allow_redirects=False)

    def code(self, **overrides: str | None) -> str:
        response = self.authorize(**overrides)
        assert response.status_code == 302, response.text
        got = query(response.headers["Location"])
        assert got.get("state") == self.state
        assert "code" in got, got
        return got["code"]

    def exchange(self, code: str, **extra: str) -> requests.Response:
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": self.client_id,
            "code_verifier": self.verifier,
            **extra,
        }
        return post(self.auth.token_url, data=data)

    def token(self, **extra: str) -> dict[str, Any]:
        response = self.exchange(self.code(), **extra)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def refresh(auth: SmartAuthServer, client_id: str, refresh_token: str, **extra: str) -> requests.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id, **extra}
    return post(auth.token_url, data=data)


def assertion(
    key: RSAKey | ECKey,
    alg: str,
    client_id: str,
    audience: str,
    *,
    iat_offset: float | None = 0,
    lifetime: int = 240,
    jti: str | None = None,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": jti or secrets.token_urlsafe(16),
        "exp": now + int(iat_offset or 0) + lifetime,
    }
    if iat_offset is not None:
        claims["iat"] = now + int(iat_offset)
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])


def client_assertion_form(token: str) -> dict[str, str]:
    return {
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": token,
    }


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def clinic(fhir_server: str) -> dict[str, str]:
    """Two patients with claims and claim responses on the FHIR server, plus the repository fixtures."""
    with FhirClient(fhir_server, timeout=30.0) as client:
        report = load_fixtures(client, REPO / "fhir_fixtures")
        assert report.files, "fhir_fixtures/ loaded nothing"
        tag = uuid.uuid4().hex[:8]
        entries: list[dict[str, Any]] = []
        refs: dict[str, str] = {}

        def add(name: str, resource: dict[str, Any]) -> None:
            full_url = f"urn:uuid:{uuid.uuid4()}"
            refs[name] = full_url
            entries.append(
                {
                    "fullUrl": full_url,
                    "resource": resource,
                    "request": {"method": "POST", "url": resource["resourceType"]},
                }
            )

        add("practitioner", {"resourceType": "Practitioner", "name": [{"family": f"Auth{tag}", "given": ["Terry"]}]})
        for who in ("a", "b"):
            add(f"patient_{who}", {"resourceType": "Patient", "name": [{"family": f"Smart{who.upper()}{tag}"}]})
            patient = {"reference": refs[f"patient_{who}"]}
            add(
                f"encounter_{who}",
                {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "subject": patient},
            )
            add(
                f"claim_{who}",
                {
                    "resourceType": "Claim",
                    "status": "active",
                    "use": "claim",
                    "patient": patient,
                    "created": "2024-05-01",
                },
            )
            add(
                f"claimresponse_{who}",
                {
                    "resourceType": "ClaimResponse",
                    "status": "active",
                    "use": "claim",
                    "outcome": "complete",
                    "patient": patient,
                    "request": {"reference": refs[f"claim_{who}"]},
                    "created": "2024-05-20",
                },
            )
        result = client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    ids = {}
    for name, entry in zip(refs, result["entry"], strict=True):
        ids[name] = str(entry["resource"]["id"])
    return ids


@pytest.fixture
def public_client(smart_auth: SmartAuthServer) -> str:
    """A freshly registered public client (redirect URI REDIRECT, any scope)."""
    client_id = f"public-{uuid.uuid4().hex[:8]}"
    smart_auth.register_client(client_id=client_id, redirect_uris=[REDIRECT])
    return client_id


def ehr_launch(auth: SmartAuthServer, clinic: dict[str, str], **extra: Any) -> str:
    """A launch token for patient A, encounter A and the denied claim of patient A."""
    body = {
        "patient": clinic["patient_a"],
        "encounter": clinic["encounter_a"],
        "fhirContext": [
            {"reference": f"Claim/{clinic['claim_a']}"},
            {"reference": f"ClaimResponse/{clinic['claimresponse_a']}"},
        ],
        **extra,
    }
    response = post(f"{auth.url}/launch-token", json=body)
    assert response.status_code == 200, response.text
    launch: str = response.json()["launch"]
    return launch


def patient_token(auth: SmartAuthServer, client_id: str, clinic: dict[str, str], scope: str) -> dict[str, Any]:
    """A token from an EHR launch for patient A with the given resource scopes."""
    return Flow(auth, client_id, f"launch {scope}", launch=ehr_launch(auth, clinic)).token()


# ------------------------------------------------------------------ discovery


def test_discovery_documents(smart_auth: SmartAuthServer) -> None:
    at_base = get(f"{smart_auth.fhir_base}/.well-known/smart-configuration").json()
    at_root = get(f"{smart_auth.url}/.well-known/smart-configuration").json()
    assert at_base == at_root
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri", "issuer"):
        assert at_base[key].startswith("http://127.0.0.1:"), key
    assert at_base["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "refresh_token"} <= set(at_base["grant_types_supported"])
    assert set(at_base["capabilities"]) >= REQUIRED_CAPABILITIES
    oidc = get(f"{at_base['issuer']}/.well-known/openid-configuration").json()
    assert oidc["issuer"] == at_base["issuer"]
    assert oidc["jwks_uri"] == at_base["jwks_uri"]
    keys = get(at_base["jwks_uri"]).json()["keys"]
    assert {k["alg"] for k in keys} == {"RS256", "ES384"}
    assert all("d" not in k for k in keys)  # public parts only


def test_metadata_is_public_and_names_the_oauth_endpoints(smart_auth: SmartAuthServer) -> None:
    capability = get(f"{smart_auth.fhir_base}/metadata").json()
    assert capability["resourceType"] == "CapabilityStatement"
    oauth = capability["rest"][0]["security"]["extension"][0]["extension"]
    assert {e["url"]: e["valueUri"] for e in oauth} == {
        "authorize": smart_auth.authorize_url,
        "token": smart_auth.token_url,
    }


# ------------------------------------------------------------------ EHR launch


def test_ehr_launch_full_flow_with_requests(
    smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]
) -> None:
    launch = ehr_launch(
        smart_auth,
        clinic,
        intent="appeal",
        smart_style_url="http://127.0.0.1:9/style.json",
        tenant="clinic-1",
        need_patient_banner=True,
        user=f"Practitioner/{clinic['practitioner']}",
        appContext='{"view": "check", "encounter": "Encounter/x"}',
    )
    assert len(launch) > 100
    flow = Flow(
        smart_auth,
        public_client,
        "launch openid fhirUser online_access patient/Claim.rs patient/ClaimResponse.rs patient/Patient.rs",
        launch=launch,
        nonce="nonce-123",
    )
    code = flow.code()
    response = flow.exchange(code)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    token = response.json()
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 3600
    assert set(token["scope"].split()) == set(flow.params["scope"].split())
    assert token["patient"] == clinic["patient_a"]
    assert token["encounter"] == clinic["encounter_a"]
    assert token["fhirContext"] == [
        {"reference": f"Claim/{clinic['claim_a']}"},
        {"reference": f"ClaimResponse/{clinic['claimresponse_a']}"},
    ]
    assert token["intent"] == "appeal"
    assert token["smart_style_url"] == "http://127.0.0.1:9/style.json"
    assert token["tenant"] == "clinic-1"
    assert token["need_patient_banner"] is True
    assert token["appContext"] == '{"view": "check", "encounter": "Encounter/x"}'  # CDS card link → app
    assert token["refresh_token"]  # online_access

    jwks = KeySet.import_key_set(get(f"{smart_auth.url}/jwks").json())
    id_token = jwt.decode(token["id_token"], jwks, algorithms=["RS256"])
    assert id_token.header["alg"] == "RS256"
    assert id_token.claims["iss"] == smart_auth.url
    assert id_token.claims["aud"] == public_client
    assert id_token.claims["nonce"] == "nonce-123"
    assert id_token.claims["fhirUser"] == f"{smart_auth.fhir_base}/Practitioner/{clinic['practitioner']}"

    # the context resources can be read through the proxy with the token
    headers = bearer(token["access_token"])
    claim = get(f"{smart_auth.fhir_base}/Claim/{clinic['claim_a']}", headers=headers)
    assert claim.status_code == 200
    responses = get(
        f"{smart_auth.fhir_base}/ClaimResponse", params={"request": f"Claim/{clinic['claim_a']}"}, headers=headers
    ).json()
    assert [e["resource"]["id"] for e in responses["entry"]] == [clinic["claimresponse_a"]]
    assert responses["entry"][0]["fullUrl"].startswith(smart_auth.fhir_base)  # links point at the proxy

    # a code is single-use
    again = flow.exchange(code)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_ehr_launch_url_helper(smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]) -> None:
    response = get(
        f"{smart_auth.url}/ehr-launch-url",
        params={
            "app": "http://127.0.0.1:9/launch",
            "patient": clinic["patient_a"],
            "fhirContext": f"Claim/{clinic['claim_a']},ClaimResponse/{clinic['claimresponse_a']}",
        },
    )
    assert response.status_code == 200
    url = response.json()["url"]
    assert url.startswith("http://127.0.0.1:9/launch?")
    params = query(url)
    assert params["iss"] == smart_auth.fhir_base
    token = Flow(smart_auth, public_client, "launch patient/*.rs", launch=params["launch"]).token()
    assert token["patient"] == clinic["patient_a"]
    assert [c["reference"] for c in token["fhirContext"]] == [
        f"Claim/{clinic['claim_a']}",
        f"ClaimResponse/{clinic['claimresponse_a']}",
    ]
    redirected = get(
        f"{smart_auth.url}/ehr-launch-url",
        params={"app": "http://127.0.0.1:9/launch", "patient": clinic["patient_a"], "redirect": "1"},
        allow_redirects=False,
    )
    assert redirected.status_code == 302
    assert redirected.headers["Location"].startswith("http://127.0.0.1:9/launch?iss=")
    assert get(f"{smart_auth.url}/ehr-launch-url").status_code == 400


def test_ehr_launch_with_authlib_oauth2session(
    smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]
) -> None:
    launch = ehr_launch(smart_auth, clinic)
    verifier = secrets.token_urlsafe(48)
    with OAuth2Session(
        client_id=public_client,
        scope="launch openid fhirUser patient/*.rs",
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    ) as session:
        url, _state = session.create_authorization_url(
            smart_auth.authorize_url, code_verifier=verifier, launch=launch, aud=smart_auth.fhir_base
        )
        response = get(url, allow_redirects=False)
        assert response.status_code == 302, response.text
        token = session.fetch_token(
            smart_auth.token_url, authorization_response=response.headers["Location"], code_verifier=verifier
        )
        assert token["patient"] == clinic["patient_a"]
        claim = session.get(f"{smart_auth.fhir_base}/Claim/{clinic['claim_a']}", timeout=TIMEOUT)
        assert claim.status_code == 200
        assert claim.json()["id"] == clinic["claim_a"]
        claim.close()


def test_launch_token_errors(smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]) -> None:
    assert post(f"{smart_auth.url}/launch-token", json={"patient": 5}).status_code == 400
    assert post(f"{smart_auth.url}/launch-token", json={"fhirContext": ["Claim/1"]}).status_code == 400
    assert post(f"{smart_auth.url}/launch-token", json={"colour": "red"}).status_code == 400
    flow = Flow(smart_auth, public_client, "launch patient/*.rs", launch="not-a-launch-token")
    got = query(flow.authorize().headers["Location"])
    assert got["error"] == "invalid_request"
    # the launch parameter without the launch scope
    flow = Flow(smart_auth, public_client, "patient/*.rs", launch=ehr_launch(smart_auth, clinic))
    assert query(flow.authorize().headers["Location"])["error"] == "invalid_scope"
    # the launch scope without a launch parameter
    flow = Flow(smart_auth, public_client, "launch patient/*.rs")
    assert query(flow.authorize().headers["Location"])["error"] == "invalid_request"


# ------------------------------------------------------------------ standalone launch


def test_standalone_launch_with_patient_picker(
    smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]
) -> None:
    flow = Flow(smart_auth, public_client, "launch/patient openid fhirUser patient/*.rs")
    picker = flow.authorize()
    assert picker.status_code == 200
    assert "text/html" in picker.headers["Content-Type"]
    assert f'value="{clinic["patient_b"]}"' in picker.text
    assert "SmartB" in picker.text
    # choosing a patient posts the original request back (authorize-post)
    form = {**flow.params, "patient_pick": clinic["patient_b"]}
    chosen = post(smart_auth.authorize_url, data=form, allow_redirects=False)
    assert chosen.status_code == 302, chosen.text
    code = query(chosen.headers["Location"])["code"]
    token = flow.exchange(code).json()
    assert token["patient"] == clinic["patient_b"]
    assert token["need_patient_banner"] is True
    assert "refresh_token" not in token  # neither offline_access nor online_access asked


def test_standalone_launch_auto_patient(
    smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]
) -> None:
    flow = Flow(smart_auth, public_client, "launch/patient patient/*.rs", auto_patient=clinic["patient_a"])
    token = flow.token()
    assert token["patient"] == clinic["patient_a"]
    patient = get(f"{smart_auth.fhir_base}/Patient/{clinic['patient_a']}", headers=bearer(token["access_token"]))
    assert patient.status_code == 200


# ------------------------------------------------------------------ refresh


def test_refresh_replaces_the_refresh_token(
    smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]
) -> None:
    token = patient_token(smart_auth, public_client, clinic, "offline_access patient/*.rs")
    first_refresh = token["refresh_token"]
    response = refresh(smart_auth, public_client, first_refresh)
    assert response.status_code == 200, response.text
    renewed = response.json()
    assert renewed["access_token"] != token["access_token"]
    assert renewed["refresh_token"] != first_refresh
    assert renewed["patient"] == clinic["patient_a"]
    assert renewed["scope"] == token["scope"]
    # the old refresh token is refused from now on; the new one works
    old = refresh(smart_auth, public_client, first_refresh)
    assert old.status_code == 400
    assert old.json()["error"] == "invalid_grant"
    claim = get(f"{smart_auth.fhir_base}/Claim/{clinic['claim_a']}", headers=bearer(renewed["access_token"]))
    assert claim.status_code == 200
    assert refresh(smart_auth, public_client, renewed["refresh_token"]).status_code == 200
    # another client cannot use it
    other = f"other-{uuid.uuid4().hex[:6]}"
    smart_auth.register_client(client_id=other, redirect_uris=[REDIRECT])
    assert refresh(smart_auth, other, renewed["refresh_token"]).status_code == 400


# ------------------------------------------------------------------ private_key_jwt


def confidential_client(auth: SmartAuthServer, alg: str, *, pin_alg: bool = True) -> tuple[str, RSAKey | ECKey]:
    """Register a private_key_jwt client with a fresh key for `alg`; returns (client_id, private key)."""
    kid = f"{alg.lower()}-{uuid.uuid4().hex[:6]}"
    parameters = {"kid": kid, "alg": alg} if pin_alg else {"kid": kid}
    key: RSAKey | ECKey
    if alg.startswith("RS"):
        key = RSAKey.generate_key(2048, parameters=parameters)
    else:
        key = ECKey.generate_key("P-384", parameters=parameters)
    client_id = f"confidential-{kid}"
    response = post(
        f"{auth.url}/register",
        json={
            "client_id": client_id,
            "redirect_uris": [REDIRECT],
            "scope": "launch launch/patient openid fhirUser offline_access patient/*.cruds user/*.cruds",
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [key.as_dict(private=False)]},
        },
    )
    assert response.status_code == 201, response.text
    return client_id, key


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_private_key_jwt_client(smart_auth: SmartAuthServer, clinic: dict[str, str], alg: str) -> None:
    client_id, key = confidential_client(smart_auth, alg)
    flow = Flow(smart_auth, client_id, "launch offline_access patient/*.rs", launch=ehr_launch(smart_auth, clinic))
    code = flow.code()
    # no assertion: refused
    assert flow.exchange(code).json()["error"] == "invalid_client"
    response = flow.exchange(code, **client_assertion_form(assertion(key, alg, client_id, smart_auth.token_url)))
    assert response.status_code == 200, response.text
    token = response.json()
    assert token["patient"] == clinic["patient_a"]
    # confidential clients authenticate on refresh too
    assert refresh(smart_auth, client_id, token["refresh_token"]).json()["error"] == "invalid_client"
    renewed = refresh(
        smart_auth,
        client_id,
        token["refresh_token"],
        **client_assertion_form(assertion(key, alg, client_id, smart_auth.token_url)),
    )
    assert renewed.status_code == 200, renewed.text


def _assertion_status(auth: SmartAuthServer, clinic: dict[str, str], client_id: str, token: str) -> requests.Response:
    flow = Flow(auth, client_id, "launch patient/*.rs", launch=ehr_launch(auth, clinic))
    return flow.exchange(flow.code(), **client_assertion_form(token))


def test_private_key_jwt_reused_jti_is_refused(smart_auth: SmartAuthServer, clinic: dict[str, str]) -> None:
    client_id, key = confidential_client(smart_auth, "ES384")
    jti = secrets.token_urlsafe(12)
    first = _assertion_status(
        smart_auth, clinic, client_id, assertion(key, "ES384", client_id, smart_auth.token_url, jti=jti)
    )
    assert first.status_code == 200, first.text
    again = _assertion_status(
        smart_auth, clinic, client_id, assertion(key, "ES384", client_id, smart_auth.token_url, jti=jti)
    )
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_client"


def test_private_key_jwt_lifetime_over_300s_is_refused(smart_auth: SmartAuthServer, clinic: dict[str, str]) -> None:
    client_id, key = confidential_client(smart_auth, "RS384")
    long_lived = assertion(key, "RS384", client_id, smart_auth.token_url, lifetime=3600)  # authlib's default
    response = _assertion_status(smart_auth, clinic, client_id, long_lived)
    assert response.status_code == 400
    assert "300" in response.json()["error_description"]
    ok = assertion(key, "RS384", client_id, smart_auth.token_url, lifetime=300)
    assert _assertion_status(smart_auth, clinic, client_id, ok).status_code == 200


def test_private_key_jwt_wrong_algorithm_audience_or_key_is_refused(
    smart_auth: SmartAuthServer, clinic: dict[str, str]
) -> None:
    client_id, key = confidential_client(smart_auth, "RS384", pin_alg=False)
    rs256 = jwt.encode(
        {"alg": "RS256", "kid": key.kid},
        {"iss": client_id, "sub": client_id, "aud": smart_auth.token_url, "exp": int(time.time()) + 200, "jti": "x1"},
        key,
        algorithms=["RS256"],
    )
    assert _assertion_status(smart_auth, clinic, client_id, rs256).json()["error"] == "invalid_client"
    wrong_aud = assertion(key, "RS384", client_id, smart_auth.fhir_base)
    assert _assertion_status(smart_auth, clinic, client_id, wrong_aud).json()["error"] == "invalid_client"
    stranger = RSAKey.generate_key(2048, parameters={"kid": key.kid, "alg": "RS384"})
    forged = assertion(stranger, "RS384", client_id, smart_auth.token_url)
    assert _assertion_status(smart_auth, clinic, client_id, forged).json()["error"] == "invalid_client"


def test_private_key_jwt_client_with_jwks_uri(smart_auth: SmartAuthServer, clinic: dict[str, str]) -> None:
    from flask import Flask
    from werkzeug.serving import make_server

    key = ECKey.generate_key("P-384", parameters={"kid": "uri-key", "alg": "ES384"})
    keys_app = Flask("jwks")
    keys_app.add_url_rule("/jwks.json", "jwks", lambda: {"keys": [key.as_dict(private=False)]})
    server = make_server("127.0.0.1", 0, keys_app, threaded=True)
    import threading

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client_id = f"jwks-uri-{uuid.uuid4().hex[:6]}"
        smart_auth.register_client(
            client_id=client_id,
            redirect_uris=[REDIRECT],
            token_endpoint_auth_method="private_key_jwt",
            jwks_uri=f"http://127.0.0.1:{server.server_port}/jwks.json",
        )
        token = assertion(key, "ES384", client_id, smart_auth.token_url)
        assert _assertion_status(smart_auth, clinic, client_id, token).status_code == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ------------------------------------------------------------------ PKCE, aud, redirect_uri, client


def test_pkce_missing_or_plain_is_refused(
    smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]
) -> None:
    flow = Flow(smart_auth, public_client, "launch patient/*.rs", launch=ehr_launch(smart_auth, clinic))
    for overrides in (
        {"code_challenge": None, "code_challenge_method": None},
        {"code_challenge_method": None},
        {"code_challenge_method": "plain", "code_challenge": flow.verifier},
    ):
        response = flow.authorize(**overrides)
        assert response.status_code == 302
        got = query(response.headers["Location"])
        assert got["error"] == "invalid_request", overrides
        assert got["state"] == flow.state
        assert "code" not in got
    # a wrong or missing verifier at the token endpoint
    code = flow.code()
    assert flow.exchange(code, code_verifier="x" * 50).json()["error"] == "invalid_grant"
    code = flow.code()
    response = post(
        smart_auth.token_url,
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": public_client},
    )
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "aud",
    [None, "{root}", "{root}/fhir", "http://localhost:1/fhir/R4", "{base}/Patient"],
    ids=["missing", "root", "no-R4", "other-host", "deeper"],
)
def test_wrong_aud_is_refused(
    smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str], aud: str | None
) -> None:
    flow = Flow(smart_auth, public_client, "launch patient/*.rs", launch=ehr_launch(smart_auth, clinic))
    value = aud.format(root=smart_auth.url, base=smart_auth.fhir_base) if aud else None
    response = flow.authorize(aud=value)
    assert response.status_code == 302
    got = query(response.headers["Location"])
    assert got["error"] == "invalid_request"
    assert "aud" in got["error_description"]
    assert got["state"] == flow.state


def test_aud_with_trailing_slash_is_accepted(
    smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]
) -> None:
    flow = Flow(smart_auth, public_client, "launch patient/*.rs", launch=ehr_launch(smart_auth, clinic))
    assert flow.code(aud=smart_auth.fhir_base + "/")


def test_wrong_redirect_uri_is_refused(smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]) -> None:
    flow = Flow(smart_auth, public_client, "launch patient/*.rs", launch=ehr_launch(smart_auth, clinic))
    for uri in (REDIRECT + "/extra", REDIRECT.upper(), "http://127.0.0.1:9/callback?x=1", "https://evil.example/cb"):
        response = flow.authorize(redirect_uri=uri)
        assert response.status_code == 400, uri  # an error page, never a redirect to an unregistered URI
        assert "Location" not in response.headers
        assert "invalid_request" in response.text
    # the token request must repeat the authorize redirect_uri exactly
    code = flow.code()
    response = flow.exchange(code, redirect_uri=REDIRECT + "/other")
    assert response.json()["error"] == "invalid_grant"


def test_unknown_client_and_missing_state_are_refused(
    smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]
) -> None:
    flow = Flow(smart_auth, public_client, "launch patient/*.rs", launch=ehr_launch(smart_auth, clinic))
    unknown = flow.authorize(client_id="nobody")
    assert unknown.status_code == 400
    assert "invalid_client" in unknown.text
    no_state = flow.authorize(state=None)
    assert query(no_state.headers["Location"])["error"] == "invalid_request"


def test_register_validation(smart_auth: SmartAuthServer) -> None:
    bad = [
        {"redirect_uris": [REDIRECT]},
        {"client_id": "x", "redirect_uris": []},
        {"client_id": "x", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic"},
        {"client_id": "x", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt"},
        {
            "client_id": "x",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [{"kty": "nope"}]},
        },
    ]
    for body in bad:
        response = post(f"{smart_auth.url}/register", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"] == "invalid_client_metadata"


def test_registered_scopes_limit_the_grant(smart_auth: SmartAuthServer, clinic: dict[str, str]) -> None:
    client_id = f"limited-{uuid.uuid4().hex[:6]}"
    smart_auth.register_client(client_id=client_id, redirect_uris=[REDIRECT], scope="launch patient/Claim.rs")
    token = Flow(
        smart_auth,
        client_id,
        "launch patient/Claim.r patient/Encounter.rs user/*.cruds",
        launch=ehr_launch(smart_auth, clinic),
    ).token()
    assert token["scope"].split() == ["launch", "patient/Claim.r"]


def test_clients_file(tmp_path: Path, fhir_server: str) -> None:
    import yaml

    path = tmp_path / "clients.yaml"
    path.write_text(
        yaml.safe_dump({"clients": [{"client_id": "ptguard-app", "redirect_uris": [REDIRECT], "scope": "launch"}]}),
        encoding="utf-8",
    )
    with SmartAuthServer(fhir_url=fhir_server, clients_file=path) as server:
        assert server.state.query_client("ptguard-app") is not None
        assert server.state.query_client("ptguard-app").redirect_uris == [REDIRECT]  # type: ignore[union-attr]


# ------------------------------------------------------------------ the FHIR proxy: tokens and scopes


def test_proxy_refuses_missing_garbage_and_expired_tokens(
    smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]
) -> None:
    url = f"{smart_auth.fhir_base}/Claim/{clinic['claim_a']}"
    for headers in ({}, bearer("garbage"), {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}):
        response = get(url, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["resourceType"] == "OperationOutcome"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    smart_auth.set_switches(token_lifetime=1)
    token = patient_token(smart_auth, public_client, clinic, "patient/*.rs")
    assert token["expires_in"] == 1
    assert get(url, headers=bearer(token["access_token"])).status_code == 200
    time.sleep(1.2)
    expired = get(url, headers=bearer(token["access_token"]))
    assert expired.status_code == 401
    assert "expired" in expired.json()["issue"][0]["diagnostics"]
    # the sandbox helper expires a client's tokens at once (for apps testing their refresh path)
    smart_auth.reset_switches()
    token = patient_token(smart_auth, public_client, clinic, "patient/*.rs")
    other = patient_token(smart_auth, public_client, clinic, "patient/*.rs")
    expire = post(f"{smart_auth.url}/_expire-tokens", json={"access_token": token["access_token"]})
    assert expire.json()["expired"] == 1
    assert get(url, headers=bearer(token["access_token"])).status_code == 401
    assert get(url, headers=bearer(other["access_token"])).status_code == 200
    assert post(f"{smart_auth.url}/_expire-tokens", json={"client_id": public_client}).json()["expired"] >= 2
    assert get(url, headers=bearer(other["access_token"])).status_code == 401


def test_proxy_enforces_v2_scopes(smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]) -> None:
    token = patient_token(smart_auth, public_client, clinic, "patient/Claim.rs patient/ClaimResponse.r")
    headers = bearer(token["access_token"])
    base = smart_auth.fhir_base
    assert get(f"{base}/Claim/{clinic['claim_a']}", headers=headers).status_code == 200
    assert get(f"{base}/Claim", headers=headers).status_code == 200
    assert get(f"{base}/ClaimResponse/{clinic['claimresponse_a']}", headers=headers).status_code == 200
    forbidden = get(f"{base}/ClaimResponse", params={"request": f"Claim/{clinic['claim_a']}"}, headers=headers)
    assert forbidden.status_code == 403  # .r without .s: no search
    outcome = forbidden.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "forbidden"
    assert get(f"{base}/Encounter/{clinic['encounter_a']}", headers=headers).status_code == 403
    task = {
        "resourceType": "Task",
        "status": "draft",
        "intent": "order",
        "for": {"reference": f"Patient/{clinic['patient_a']}"},
    }
    assert post(f"{base}/Task", json=task, headers=headers).status_code == 403


def test_proxy_enforces_v1_scopes(smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]) -> None:
    token = patient_token(
        smart_auth, public_client, clinic, "patient/Claim.read patient/Task.write patient/Encounter.*"
    )
    headers = bearer(token["access_token"])
    base = smart_auth.fhir_base
    assert get(f"{base}/Claim/{clinic['claim_a']}", headers=headers).status_code == 200  # read → rs
    assert get(f"{base}/Claim", headers=headers).status_code == 200
    claim = {
        "resourceType": "Claim",
        "status": "draft",
        "use": "claim",
        "patient": {"reference": f"Patient/{clinic['patient_a']}"},
    }
    assert post(f"{base}/Claim", json=claim, headers=headers).status_code == 403  # read has no c
    task = {
        "resourceType": "Task",
        "status": "draft",
        "intent": "order",
        "for": {"reference": f"Patient/{clinic['patient_a']}"},
    }
    created = post(f"{base}/Task", json=task, headers=headers)  # write → cud
    assert created.status_code == 201, created.text
    assert created.headers["Location"].startswith(base)
    assert get(f"{base}/Task/{created.json()['id']}", headers=headers).status_code == 403  # write has no r
    assert get(f"{base}/Encounter/{clinic['encounter_a']}", headers=headers).status_code == 200  # * → cruds


def test_proxy_limits_patient_scopes_to_the_launch_patient(
    smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]
) -> None:
    token = patient_token(smart_auth, public_client, clinic, "patient/*.cruds")
    headers = bearer(token["access_token"])
    base = smart_auth.fhir_base
    assert get(f"{base}/Patient/{clinic['patient_a']}", headers=headers).status_code == 200
    assert get(f"{base}/Patient/{clinic['patient_b']}", headers=headers).status_code == 403
    assert get(f"{base}/Claim/{clinic['claim_b']}", headers=headers).status_code == 403
    assert get(f"{base}/ClaimResponse/{clinic['claimresponse_b']}", headers=headers).status_code == 403
    assert (
        get(f"{base}/Claim", params={"patient": f"Patient/{clinic['patient_b']}"}, headers=headers).status_code == 403
    )
    own = get(f"{base}/Claim", headers=headers).json()  # no patient parameter: limited to the launch patient
    assert [e["resource"]["id"] for e in own["entry"]] == [clinic["claim_a"]]
    patients = get(f"{base}/Patient", headers=headers).json()
    assert [e["resource"]["id"] for e in patients["entry"]] == [clinic["patient_a"]]
    other_task = {
        "resourceType": "Task",
        "status": "draft",
        "intent": "order",
        "for": {"reference": f"Patient/{clinic['patient_b']}"},
    }
    assert post(f"{base}/Task", json=other_task, headers=headers).status_code == 403
    # a user/ scope is not limited to one patient
    user_token = patient_token(smart_auth, public_client, clinic, "user/*.cruds")
    assert get(f"{base}/Claim/{clinic['claim_b']}", headers=bearer(user_token["access_token"])).status_code == 200


def test_proxy_checks_each_transaction_entry(
    smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Task",
                    "status": "draft",
                    "intent": "order",
                    "for": {"reference": f"Patient/{clinic['patient_a']}"},
                },
                "request": {"method": "POST", "url": "Task"},
            }
        ],
    }
    read_only = patient_token(smart_auth, public_client, clinic, "patient/*.rs")
    assert post(smart_auth.fhir_base, json=bundle, headers=bearer(read_only["access_token"])).status_code == 403
    writer = patient_token(smart_auth, public_client, clinic, "user/Task.c")
    response = post(smart_auth.fhir_base, json=bundle, headers=bearer(writer["access_token"]))
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "transaction-response"


# ------------------------------------------------------------------ real-world behaviour switches


def test_switch_omit_patient(smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]) -> None:
    smart_auth.set_switches(omit_patient=True)
    token = patient_token(smart_auth, public_client, clinic, "offline_access patient/*.rs")
    assert "patient" not in token
    assert token["fhirContext"][1] == {"reference": f"ClaimResponse/{clinic['claimresponse_a']}"}  # the fallback
    # the token is still bound to the launch patient
    headers = bearer(token["access_token"])
    assert get(f"{smart_auth.fhir_base}/Claim/{clinic['claim_b']}", headers=headers).status_code == 403
    assert "patient" not in refresh(smart_auth, public_client, token["refresh_token"]).json()


def test_switch_narrow_scopes_drops_v1_read(
    smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]
) -> None:
    smart_auth.set_switches(narrow_scopes=True)
    token = patient_token(smart_auth, public_client, clinic, "patient/Claim.read patient/ClaimResponse.rs")
    assert set(token["scope"].split()) == {"launch", "patient/ClaimResponse.rs"}
    headers = bearer(token["access_token"])
    assert get(f"{smart_auth.fhir_base}/Claim/{clinic['claim_a']}", headers=headers).status_code == 403
    assert get(f"{smart_auth.fhir_base}/ClaimResponse/{clinic['claimresponse_a']}", headers=headers).status_code == 200


def test_switch_narrow_scopes_list(smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]) -> None:
    smart_auth.set_switches(narrow_scopes=["patient/Coverage.rs", "openid"])
    token = patient_token(smart_auth, public_client, clinic, "openid patient/Coverage.rs patient/Claim.rs")
    assert set(token["scope"].split()) == {"launch", "patient/Claim.rs"}
    assert "id_token" not in token


def test_switch_no_refresh_token(smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]) -> None:
    smart_auth.set_switches(no_refresh_token=True)
    token = patient_token(smart_auth, public_client, clinic, "offline_access patient/*.rs")
    assert "offline_access" in token["scope"].split()
    assert "refresh_token" not in token


def test_switch_omit_offline_access_from_scope(
    smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]
) -> None:
    smart_auth.set_switches(omit_offline_access_from_scope=True)
    token = patient_token(smart_auth, public_client, clinic, "offline_access patient/*.rs")
    assert "offline_access" not in token["scope"].split()
    assert token["refresh_token"]  # granted all the same
    renewed = refresh(smart_auth, public_client, token["refresh_token"])
    assert renewed.status_code == 200
    assert "offline_access" not in renewed.json()["scope"].split()


def test_switch_token_lifetime(smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]) -> None:
    smart_auth.set_switches(token_lifetime=60)
    token = patient_token(smart_auth, public_client, clinic, "offline_access patient/*.rs")
    assert token["expires_in"] == 60
    assert refresh(smart_auth, public_client, token["refresh_token"]).json()["expires_in"] == 60


def test_switch_smart_config_only_at_root(smart_auth: SmartAuthServer) -> None:
    response = post(f"{smart_auth.url}/_switches", json={"smart_config_only_at_root": True})
    assert response.status_code == 200
    assert response.json()["smart_config_only_at_root"] is True
    assert get(f"{smart_auth.fhir_base}/.well-known/smart-configuration").status_code == 404
    assert get(f"{smart_auth.url}/.well-known/smart-configuration").status_code == 200
    assert post(f"{smart_auth.url}/_switches", json={"reset": True}).json()["smart_config_only_at_root"] is False
    assert get(f"{smart_auth.fhir_base}/.well-known/smart-configuration").status_code == 200


def test_switches_endpoint_refuses_unknown_names(smart_auth: SmartAuthServer) -> None:
    assert post(f"{smart_auth.url}/_switches", json={"no_such_switch": True}).status_code == 400
    assert post(f"{smart_auth.url}/_switches", json={"token_lifetime": 0}).status_code == 400
    assert post(f"{smart_auth.url}/_switches", json={"id_token_alg": "HS256"}).status_code == 400
    with requests.delete(f"{smart_auth.url}/_switches", timeout=TIMEOUT) as response:
        assert response.json()["token_lifetime"] == 3600


def test_switch_reject_iat_in_future(smart_auth: SmartAuthServer, clinic: dict[str, str]) -> None:
    client_id, key = confidential_client(smart_auth, "ES384")
    ahead = assertion(key, "ES384", client_id, smart_auth.token_url, iat_offset=5, lifetime=200)
    assert _assertion_status(smart_auth, clinic, client_id, ahead).status_code == 200  # default: 60 s leeway
    smart_auth.set_switches(reject_iat_in_future=True)
    ahead = assertion(key, "ES384", client_id, smart_auth.token_url, iat_offset=5, lifetime=200)
    response = _assertion_status(smart_auth, clinic, client_id, ahead)
    assert response.status_code == 400
    assert "future" in response.json()["error_description"]


def test_switch_require_iat(smart_auth: SmartAuthServer, clinic: dict[str, str]) -> None:
    client_id, key = confidential_client(smart_auth, "RS384")
    no_iat = assertion(key, "RS384", client_id, smart_auth.token_url, iat_offset=None, lifetime=300)
    assert _assertion_status(smart_auth, clinic, client_id, no_iat).status_code == 200
    smart_auth.set_switches(require_iat=True)
    no_iat = assertion(key, "RS384", client_id, smart_auth.token_url, iat_offset=None, lifetime=300)
    response = _assertion_status(smart_auth, clinic, client_id, no_iat)
    assert response.status_code == 400
    assert "iat" in response.json()["error_description"]


def test_switch_cap_assertion_exp(smart_auth: SmartAuthServer, clinic: dict[str, str]) -> None:
    client_id, key = confidential_client(smart_auth, "ES384")
    four_minutes = assertion(key, "ES384", client_id, smart_auth.token_url, lifetime=240)
    assert _assertion_status(smart_auth, clinic, client_id, four_minutes).status_code == 200
    smart_auth.set_switches(cap_assertion_exp=60)
    four_minutes = assertion(key, "ES384", client_id, smart_auth.token_url, lifetime=240)
    assert _assertion_status(smart_auth, clinic, client_id, four_minutes).status_code == 400
    one_minute = assertion(key, "ES384", client_id, smart_auth.token_url, lifetime=55)
    assert _assertion_status(smart_auth, clinic, client_id, one_minute).status_code == 200


@pytest.mark.parametrize("alg", ["ES384", "RS256"])
def test_switch_id_token_alg(smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str], alg: str) -> None:
    smart_auth.set_switches(id_token_alg=alg)
    token = patient_token(smart_auth, public_client, clinic, "openid fhirUser patient/*.rs")
    jwks = KeySet.import_key_set(get(f"{smart_auth.url}/jwks").json())
    decoded = jwt.decode(token["id_token"], jwks, algorithms=[alg])
    assert decoded.header["alg"] == alg
    assert decoded.claims["fhirUser"].startswith(f"{smart_auth.fhir_base}/Practitioner/")


def test_switch_fhir_user_relative(smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]) -> None:
    smart_auth.set_switches(fhir_user_relative=True)
    launch = ehr_launch(smart_auth, clinic, user=clinic["practitioner"])
    token = Flow(smart_auth, public_client, "launch openid fhirUser patient/*.rs", launch=launch).token()
    claims = jwt.decode(
        token["id_token"], KeySet.import_key_set(get(f"{smart_auth.url}/jwks").json()), algorithms=["RS256"]
    ).claims
    assert claims["fhirUser"] == f"Practitioner/{clinic['practitioner']}"


def test_switch_forbid_resource_types(smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]) -> None:
    smart_auth.set_switches(forbid_resource_types=["ClaimResponse"])
    token = patient_token(smart_auth, public_client, clinic, "patient/*.rs")
    headers = bearer(token["access_token"])
    denied = get(f"{smart_auth.fhir_base}/ClaimResponse/{clinic['claimresponse_a']}", headers=headers)
    assert denied.status_code == 403
    assert denied.json()["resourceType"] == "OperationOutcome"
    assert get(f"{smart_auth.fhir_base}/Claim/{clinic['claim_a']}", headers=headers).status_code == 200


def test_switch_patient_only_on_refresh(
    smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]
) -> None:
    smart_auth.set_switches(patient_only_on_refresh=True)
    token = patient_token(smart_auth, public_client, clinic, "offline_access patient/*.rs")
    assert "patient" not in token
    renewed = refresh(smart_auth, public_client, token["refresh_token"]).json()
    assert renewed["patient"] == clinic["patient_a"]


def test_switch_auto_select_patient(smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str]) -> None:
    smart_auth.set_switches(auto_select_patient=clinic["patient_b"])
    token = Flow(smart_auth, public_client, "launch/patient patient/*.rs").token()
    assert token["patient"] == clinic["patient_b"]
    smart_auth.set_switches(auto_select_patient=True)
    assert Flow(smart_auth, public_client, "launch/patient patient/*.rs").token()["patient"]


# ------------------------------------------------------------------ hygiene: logs, lifecycle, CLI


def test_no_codes_launches_or_tokens_in_logs(
    smart_auth: SmartAuthServer, public_client: str, clinic: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    launch = ehr_launch(smart_auth, clinic)
    flow = Flow(smart_auth, public_client, "launch offline_access patient/*.rs", launch=launch)
    code = flow.code()
    token = flow.exchange(code).json()
    get(f"{smart_auth.fhir_base}/Claim/{clinic['claim_a']}", headers=bearer(token["access_token"]))
    get(f"{smart_auth.fhir_base}/Claim/{clinic['claim_a']}", headers=bearer("garbage-token-value"))
    refresh(smart_auth, public_client, token["refresh_token"])
    time.sleep(0.1)
    # the server side: our request log, authlib, Flask, werkzeug (urllib3 is the test's own client)
    text = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("urllib3"))
    assert "GET /authorize 302" in text
    assert "POST /token 200" in text
    for secret in (launch, code, token["access_token"], token["refresh_token"], "garbage-token-value", flow.verifier):
        assert secret not in text


def test_runner_starts_and_stops_cleanly(fhir_server: str) -> None:
    server = SmartAuthServer(fhir_url=fhir_server)
    with server:
        port = server.port
        assert get(f"{server.url}/healthz").json() == {"ok": True}
        assert get(f"{server.fhir_base}/.well-known/smart-configuration").json()["issuer"] == server.url
    with pytest.raises(RuntimeError):
        _ = server.url
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
    server.stop()  # twice is fine


def test_cli_sandbox_auth_runs_in_the_foreground(fhir_server: str) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ptguard.cli",
            "sandbox",
            "auth",
            "--port",
            "0",
            "--fhir",
            fhir_server,
            "--switch",
            "token_lifetime=60",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())
            assert ready["ready"] is True
            assert ready["fhir_base"].endswith("/fhir/R4")
            assert get(f"{ready['url']}/_switches").json()["token_lifetime"] == 60
            assert get(f"{ready['fhir_base']}/metadata").status_code == 200
        finally:
            proc.terminate()
            proc.wait(timeout=10)
