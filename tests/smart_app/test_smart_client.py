"""SMART client units: issuer allow-list, discovery fallbacks, scopes, assertions, id_token, launch context, landing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from flask import Flask
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from ptguard.errors import ConfigError
from smart_app import smart
from smart_app.sessions import TokenStore, new_state
from smart_app.smart import IdentityCheck, IssuerConfig, LaunchContext, SmartConfiguration, SmartError
from webapp import create_app

BASE = "https://ehr.example.test/fhir/r4"
ROOT = "https://ehr.example.test"


def cfg(**kw: Any) -> IssuerConfig:
    return IssuerConfig(fhir_base=BASE, client_id="ptguard-app", **kw)


def test_normalise_and_allow_list(tmp_path: Path) -> None:
    assert smart.normalise_base("HTTPS://EHR.example.test:443/fhir/r4/") == "https://ehr.example.test/fhir/r4"
    assert smart.issuer_key("https://ehr.example.test/FHIR/R4//") == smart.issuer_key(BASE)
    f = tmp_path / "issuers.yaml"
    f.write_text(
        f"issuers:\n  - fhir_base: {BASE}\n    client_id: ptguard-app\n    aliases: [https://ehr.example.test/api]\n"
    )
    issuers = smart.load_issuers(str(f))
    assert smart.find_issuer(issuers, "https://EHR.example.test/fhir/R4/").fhir_base == BASE
    # one EHR documented its base without /fhir: an alias maps it to the real base, which is what `aud` carries
    assert smart.find_issuer(issuers, "https://ehr.example.test/api").fhir_base == BASE
    with pytest.raises(SmartError, match="not on ptguard's list"):
        smart.find_issuer(issuers, "https://other.example/fhir")
    with pytest.raises(ConfigError):
        smart.load_issuers('[{"fhir_base": "x"}]')
    with pytest.raises(ConfigError):
        smart.load_issuers('[{"fhir_base": "x", "client_id": "y", "auth_method": "client_secret_basic"}]')
    assert smart.load_issuers(None) == {}


@responses.activate
def test_discovery_order_and_metadata_fallback() -> None:
    responses.get(f"{BASE}/.well-known/smart-configuration", status=404)
    responses.get(f"{ROOT}/.well-known/smart-configuration", status=404)
    responses.get(
        f"{BASE}/metadata",
        json={
            "resourceType": "CapabilityStatement",
            "rest": [
                {
                    "security": {
                        "extension": [
                            {
                                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                                "extension": [
                                    {"url": "authorize", "valueUri": f"{ROOT}/auth"},
                                    {"url": "token", "valueUri": f"{ROOT}/token"},
                                ],
                            }
                        ]
                    }
                }
            ],
        },
    )
    found = smart.discover(BASE)
    assert (found.authorization_endpoint, found.token_endpoint, found.source) == (
        f"{ROOT}/auth",
        f"{ROOT}/token",
        f"{BASE}/metadata",
    )
    assert [c.request.url for c in responses.calls] == [
        f"{BASE}/.well-known/smart-configuration",
        f"{ROOT}/.well-known/smart-configuration",
        f"{BASE}/metadata",
    ]


@responses.activate
def test_discovery_at_root_and_failure() -> None:
    responses.get(f"{BASE}/.well-known/smart-configuration", status=404)
    responses.get(
        f"{ROOT}/.well-known/smart-configuration",
        json={"authorization_endpoint": f"{ROOT}/a", "token_endpoint": f"{ROOT}/t", "capabilities": ["permission-v2"]},
    )
    found = smart.discover(BASE + "/")
    assert found.source == f"{ROOT}/.well-known/smart-configuration" and found.supports_v2
    responses.replace(responses.GET, f"{ROOT}/.well-known/smart-configuration", body=requests.ConnectionError())
    responses.get(f"{BASE}/metadata", status=404)
    with pytest.raises(SmartError, match="not found"):
        smart.discover(BASE)


def test_scopes_v2_v1_and_context() -> None:
    v2 = SmartConfiguration("a", "t", capabilities=["permission-v2"])
    v1 = SmartConfiguration("a", "t", scopes_supported=["patient/*.read"])
    ehr = smart.requested_scopes(cfg(), v2, ehr_launch=True)
    assert (
        ehr[0] == "launch" and "user/Claim.rs" in ehr and "user/DocumentReference.c" in ehr and "online_access" in ehr
    )
    alone = smart.requested_scopes(cfg(scope_context="patient"), v1, ehr_launch=False)
    assert alone[0] == "launch/patient" and "patient/Claim.read" in alone and "patient/Task.write" in alone
    assert "offline_access" in alone and "launch" not in alone
    assert smart.requested_scopes(cfg(scopes="patient/*.rs openid"), v2, ehr_launch=True) == [
        "launch",
        "patient/*.rs",
        "openid",
        "online_access",
    ]


def test_authorize_url_pkce_aud_and_state() -> None:
    conf = SmartConfiguration(f"{ROOT}/authorize", f"{ROOT}/token", code_challenge_methods_supported=["S256"])
    state = new_state()
    assert len(state) >= 43
    url = smart.authorize_url(
        cfg(),
        conf,
        redirect_uri="https://app/cb",
        scopes=["launch", "openid"],
        state=state,
        verifier="v" * 64,
        launch="L" * 900,
    )
    from urllib.parse import parse_qs, urlsplit

    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert q["aud"] == BASE and q["state"] == state and q["launch"] == "L" * 900
    assert q["code_challenge_method"] == "S256" and q["code_challenge"] and q["response_type"] == "code"
    with pytest.raises(SmartError, match="PKCE"):
        smart.authorize_url(
            cfg(),
            SmartConfiguration("a", "t", code_challenge_methods_supported=["plain"]),
            redirect_uri="x",
            scopes=[],
            state="s",
            verifier="v",
            launch=None,
        )


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_client_assertion_times_and_jti(tmp_path: Path, kind: str) -> None:
    key = ECKey.generate_key("P-384") if kind == "ec" else RSAKey.generate_key(2048)
    c = cfg(auth_method="private_key_jwt", private_key=key.as_dict(private=True))
    now = time.time()
    seen = set()
    for _ in range(3):
        tok = jwt.decode(smart.client_assertion(c, f"{ROOT}/token"), key, algorithms=["ES384", "RS384"])
        claims = tok.claims
        assert (
            tok.header["alg"] == ("ES384" if kind == "ec" else "RS384")
            and tok.header["typ"] == "JWT"
            and tok.header["kid"]
        )
        assert claims["iat"] <= now  # never ahead of our clock (one server rejects that)
        assert claims["exp"] - now <= 300 and claims["exp"] - claims["iat"] <= 300
        assert claims["aud"] == f"{ROOT}/token" and claims["iss"] == claims["sub"] == "ptguard-app"
        seen.add(claims["jti"])
    assert len(seen) == 3
    with pytest.raises(ConfigError):
        cfg(auth_method="private_key_jwt", alg="RS256", private_key=key.as_dict(private=True)).algorithm()
    with pytest.raises(ConfigError):
        cfg(auth_method="private_key_jwt", private_key_path=str(tmp_path / "missing.json")).key()


@responses.activate
def test_id_token_checks() -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    conf = SmartConfiguration("a", "t", issuer=ROOT, jwks_uri=f"{ROOT}/jwks")
    responses.get(f"{ROOT}/jwks", json={"keys": [key.as_dict(private=False)]})
    now = int(time.time())

    def token(**over: Any) -> str:
        claims = {
            "iss": ROOT,
            "aud": "ptguard-app",
            "sub": "u1",
            "iat": now,
            "exp": now + 300,
            "fhirUser": f"{BASE}/Practitioner/p1",
        }
        claims.update(over)
        return jwt.encode({"alg": "RS256", "kid": "k1"}, {k: v for k, v in claims.items() if v is not None}, key)

    ok = smart.check_id_token(token(), cfg(), conf)
    assert ok.verified and ok.fhir_user == "Practitioner/p1"
    assert smart.check_id_token(token(fhirUser="Practitioner/p2"), cfg(), conf).fhir_user == "Practitioner/p2"
    for bad in (
        token(aud="someone-else"),
        token(iss="https://evil"),
        token(exp=now - 3600),
        token(fhirUser=f"{BASE}/Device/d1"),
    ):
        with pytest.raises(SmartError):
            smart.check_id_token(bad, cfg(), conf)
    other = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    forged = jwt.encode({"alg": "RS256", "kid": "k1"}, {"iss": ROOT, "aud": "ptguard-app", "exp": now + 60}, other)
    with pytest.raises(SmartError, match="did not verify"):
        smart.check_id_token(forged, cfg(), conf)
    # no jwks_uri anywhere: the id_token is not used, and nothing crashes
    responses.get(f"{ROOT}/.well-known/openid-configuration", status=404)
    none = smart.check_id_token(token(), cfg(), SmartConfiguration("a", "t", issuer=ROOT))
    assert not none.verified and "jwks_uri" in none.note
    assert smart.check_id_token(None, cfg(), conf).note == "no id_token in the token response"


def _ts(**token: Any) -> smart.TokenSet:
    base = {"access_token": "a", "expires_in": 3600, "scope": "launch user/*.rs"}
    base.update(token)
    return smart.token_set(
        base,
        cfg(),
        SmartConfiguration("a", "t"),
        ["launch", "user/Claim.read", "user/DocumentReference.c"],
        IdentityCheck(False, None, None, ""),
    )


def test_launch_context_and_landing(tmp_path: Path) -> None:
    ctx = LaunchContext.from_token(
        {
            "fhirContext": [{"reference": "Claim/9"}, {"reference": "https://x/fhir/ClaimResponse/7"}],
            "need_patient_banner": True,
            "intent": "reconcile",
            "tenant": "t1",
            "smart_style_url": "https://s",
        }
    )
    assert (
        ctx.reference("ClaimResponse") == "7" and ctx.reference("Claim") == "9" and ctx.reference("Encounter") is None
    )
    assert ctx.need_patient_banner and ctx.intent == "reconcile" and ctx.tenant == "t1"
    app: Flask = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}", "SECRET_KEY": "k"})
    from smart_app.views import _landing

    with app.test_request_context("/app/callback"):
        assert (
            _landing(_ts(appContext=json.dumps({"view": "check", "encounter": "Encounter/e1"})), {}) == "/app/check/e1"
        )
        assert (
            _landing(_ts(appContext={"view": "appeal", "claimResponse": "ClaimResponse/c1"}), {})
            == "/app/claim/c1/appeal"
        )
        assert _landing(_ts(fhirContext=[{"reference": "ClaimResponse/c2"}]), {}) == "/app/claim/c2"
        assert _landing(_ts(fhirContext=[{"reference": "Claim/k1"}]), {}) == "/app/claim-for/k1"
        assert _landing(_ts(encounter="e9"), {}) == "/app/check/e9"
        assert _landing(_ts(), {"ehr_launch": True}) == "/app/?picker=1"
        assert _landing(_ts(patient="p"), {"ehr_launch": False}) == "/app/"


def test_patient_from_a_verified_patient_fhir_user_only() -> None:
    base = {"access_token": "a", "expires_in": 3600, "scope": "launch/patient patient/*.rs openid fhirUser"}
    requested = ["launch/patient", "patient/ClaimResponse.rs"]

    def ts(identity: IdentityCheck, **token: Any) -> smart.TokenSet:
        return smart.token_set({**base, **token}, cfg(), SmartConfiguration("a", "t"), requested, identity)

    # No `patient` in the token response, identity only via fhirUser: the verified Patient is the context.
    assert ts(IdentityCheck(True, "Patient/p7", "s", "verified")).context.patient == "p7"
    # The token's own patient wins; a Practitioner fhirUser or an unverified id_token sets nothing.
    assert ts(IdentityCheck(True, "Patient/p7", "s", "verified"), patient="p1").context.patient == "p1"
    assert ts(IdentityCheck(True, "Practitioner/d1", "s", "verified")).context.patient is None
    assert ts(IdentityCheck(False, "Patient/p7", None, "not verified")).context.patient is None


def test_features_degrade_per_scope() -> None:
    full = {
        f.name: f
        for f in smart.features(
            _ts(scope="user/*.rs user/DocumentReference.c user/Task.c online_access", refresh_token="r")
        )
    }
    assert all(f.enabled for f in full.values())
    thin = {f.name: f for f in smart.features(_ts(scope="user/ClaimResponse.rs", expires_in=240))}
    assert not thin["read the claim"].enabled and "Claim" in thin["read the claim"].why
    assert (
        not thin["save the packet to the chart"].enabled
        and "DocumentReference.c" in thin["save the packet to the chart"].why
    )
    assert not thin["stay signed in"].enabled and "offline_access not granted" in thin["stay signed in"].why
    dropped = {f.name: f for f in smart.features(_ts(scope="launch user/DocumentReference.write"))}
    assert not dropped["resource access"].enabled


def test_token_refresh_rules_and_store(tmp_path: Path) -> None:
    ts = _ts(expires_in=30, refresh_token="r1")
    assert ts.needs_refresh() and ts.can_refresh()
    ts.update({"access_token": "b", "expires_in": 600, "patient": "p9"})
    assert ts.refresh_token == "r1" and ts.context.patient == "p9" and not ts.needs_refresh()
    ts.update({"access_token": "c", "expires_in": 600, "refresh_token": "r2", "scope": "user/*.rs"})
    assert ts.refresh_token == "r2" and ts.scope == "user/*.rs"
    store = TokenStore(f"sqlite:///{tmp_path / 's.sqlite3'}", "k")
    sid, csrf = store.put(ts)
    got = store.get(sid)
    assert got is not None and got[0] == ts and got[1] == csrf
    store.drop(sid)
    assert store.get(sid) is None and store.get(None) is None


def test_pages_without_a_session_are_clear(tmp_path: Path) -> None:
    app: Flask = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}", "SECRET_KEY": "k"})
    client = app.test_client()
    for path in ("/app/", "/app/claim/abc", "/app/check/e1", "/app/appeal/nope"):
        r = client.get(path)
        html = r.get_data(as_text=True)
        assert r.status_code == 401 and "Please launch the app" in html and "Traceback" not in html
    r = client.get("/app/launch")
    assert r.status_code == 400 and "no `iss`" in r.get_data(as_text=True)
    r = client.post("/app/appeal/x/edit", data={})
    assert r.status_code == 401
