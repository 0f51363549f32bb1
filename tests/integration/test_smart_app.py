"""The SMART app end to end: the sandbox SMART server + FHIR server, EHR and standalone launches, every real-world EHR
behaviour from the domain notes, the denied-claim view, the appeal letter, the PDF, write-back and the case record."""

from __future__ import annotations

import html as html_lib
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from pypdf import PdfReader
from sqlalchemy import select

from ptguard.fhir.client import FhirClient
from ptguard.fixtures_load import load_fixtures
from ptguard.store.db import session_scope
from ptguard.store.models import AppealCase, AuditEvent
from sandbox.smart_auth import SmartAuthServer, ptguard_app_client
from smart_app import smart
from smart_app.sessions import TokenStore
from webapp import create_app

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parents[2] / "fhir_fixtures"
REDIRECT = "http://localhost/app/callback"
FIXTURE_ID = "https://ptguard.dev/fixture-id"


@pytest.fixture(scope="module")
def ids(fhir_server: str) -> dict[str, str]:
    """Server ids of the fixture resources the tests use (the server assigns its own ids)."""
    with FhirClient(fhir_server) as client:
        load_fixtures(client, FIXTURES)
        out = {}
        for rtype, slug in (
            ("ClaimResponse", "cr-aetna-01"),
            ("Claim", "claim-aetna-01"),
            ("Patient", "pat-whitfield"),
            ("Encounter", "enc-aetna-01"),
            ("ClaimResponse", "cr-bcbs-01"),
            ("Encounter", "enc-uhc-01"),
        ):
            found = client.search(rtype, {"identifier": f"{FIXTURE_ID}|{slug}"})
            out[slug] = str(found[0]["id"])
    return out


def make_app(tmp_path: Path, issuers: list[dict[str, Any]]) -> Flask:
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'app.sqlite3'}",
            "PTGUARD_SMART_ISSUERS": json.dumps({"issuers": issuers}),
            "SMART_REDIRECT_URI": REDIRECT,
            "SESSION_COOKIE_SECURE": False,
        }
    )
    return app


@pytest.fixture
def public_app(smart_auth: SmartAuthServer, tmp_path: Path) -> Iterator[Flask]:
    smart_auth.register_client(**ptguard_app_client(REDIRECT))
    yield make_app(tmp_path, [{"fhir_base": smart_auth.fhir_base, "client_id": "ptguard-app"}])


def authorize(auth_url: str) -> str:
    """Follow the authorization server to its redirect back to us; returns the callback path with its query."""
    with requests.get(auth_url, allow_redirects=False, timeout=10) as r:
        assert r.status_code in (302, 303), r.text[:300]
        location = r.headers["Location"]
    assert location.startswith(REDIRECT), location
    parts = urlsplit(location)
    return f"{parts.path}?{parts.query}"


def launch(client: FlaskClient, smart_auth: SmartAuthServer, **context: Any) -> Any:
    """EHR launch with the given context; returns the callback response."""
    url = smart_auth.ehr_launch_url("http://localhost/app/launch", **context)
    parts = urlsplit(url)
    r = client.get(f"{parts.path}?{parts.query}")
    assert r.status_code == 302, r.get_data(as_text=True)[:500]
    return client.get(authorize(r.headers["Location"]))


def test_ehr_launch_to_packet_and_writeback(
    public_app: Flask, smart_auth: SmartAuthServer, ids: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = public_app.test_client()
    cr = ids["cr-aetna-01"]
    r = launch(
        client,
        smart_auth,
        patient=ids["pat-whitfield"],
        fhirContext=[{"reference": f"Claim/{ids['claim-aetna-01']}"}, {"reference": f"ClaimResponse/{cr}"}],
        need_patient_banner=True,
    )
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/app/claim/{cr}")
    page = client.get(f"/app/claim/{cr}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200, html[:1000]
    assert "CARC" in html and "medically necessary" in html
    assert "Medical necessity" in html and "appeal" in html
    assert "2027-05-19" in html and "29 CFR 2560.503-1" in html
    assert "Gregory Whitfield" in html  # the patient banner
    # The native denial opened from the EHR is on the worklist now (once, however often it is opened).
    from ptguard.remit.worklist import list_work_items

    client.get(f"/app/claim/{cr}")
    listed = [i for i in list_work_items(public_app.config["DATABASE_URL"], today=date(2026, 12, 3))
              if i["claim_response"] == f"ClaimResponse/{cr}"]
    assert len(listed) == 1 and listed[0]["payer"]["id"] == "aetna" and listed[0]["due_date"] == "2027-05-19"
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    assert csrf
    r = client.post(f"/app/claim/{cr}/appeal", data={"csrf": csrf.group(1)})
    assert r.status_code == 302
    case_url = r.headers["Location"]
    page = client.get(case_url)
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "CPB 0325" in html and "20 lb on 2 November 2026" in html
    pdf = client.get(case_url + "/packet.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    reader = PdfReader(io.BytesIO(pdf.data))
    assert len(reader.pages) >= 5
    outline = [o.title for o in reader.outline if not isinstance(o, list)]
    assert len(outline) >= 4 and outline[1].startswith("Exhibit A")
    text = " ".join(" ".join(p.extract_text() for p in reader.pages).split())
    assert "20 lb" in text and "CPB 0325" in text and "19 May 2027" in text and "29 CFR 2560.503-1" in text
    assert "2 November 2026" in text  # date of service
    r = client.post(case_url + "/writeback", data={"csrf": csrf.group(1)})
    assert r.status_code == 302
    case_id = case_url.rsplit("/", 1)[-1]
    with session_scope(public_app.config["DATABASE_URL"]) as s:
        case = s.get(AppealCase, case_id)
        assert case is not None and case.document_ref and case.task_ref
        doc_ref, task_ref = case.document_ref, case.task_ref
        actions = [a.action for a in s.scalars(select(AuditEvent).where(AuditEvent.case_id == case_id)).all()]
    assert actions == ["case.created", "packet.downloaded", "writeback"]
    with FhirClient(smart_auth.state.fhir_url) as fhir:
        doc = fhir.read("DocumentReference", doc_ref.split("/")[1])
        task = fhir.read("Task", task_ref.split("/")[1])
    assert doc["content"][0]["attachment"]["contentType"] == "application/pdf"
    assert doc["context"]["related"][0]["reference"] == f"ClaimResponse/{cr}"
    assert task["focus"]["reference"] == f"ClaimResponse/{cr}"
    assert task["restriction"]["period"]["end"] == "2027-05-19"
    # no token, JWT or PHI in any log line
    ts = _only_session(public_app)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (ts.access_token, ts.refresh_token or "@@", "Whitfield", "warehouse", "eyJ"):
        assert secret not in logged


# ------------------------------------------------------------------ real-world EHR behaviours


def _tokens(app: Flask) -> TokenStore:
    return TokenStore(app.config["DATABASE_URL"], app.config["SECRET_KEY"])


def _only_session(app: Flask) -> smart.TokenSet:
    ts = _tokens(app).latest()
    assert ts is not None
    return ts


def _expire_latest_session(app: Flask) -> None:
    """Make the newest session's access token expired (as if its lifetime had passed)."""
    from smart_app.sessions import SmartSession

    store = _tokens(app)
    with session_scope(app.config["DATABASE_URL"]) as s:
        row = s.query(SmartSession).order_by(SmartSession.created_at.desc()).first()
        assert row is not None
        found = store._open(row.blob)
        assert found is not None
        found[0].expires_at = 0.0
        row.blob = store._seal(*found)


def test_aud_is_the_configured_base_even_when_iss_differs_by_case_and_slash(
    public_app: Flask, smart_auth: SmartAuthServer, ids: dict[str, str]
) -> None:
    """Behaviours 1 and 3: `iss` normalised against the allow-list; `aud` sent exactly as configured."""
    client = public_app.test_client()
    base = smart_auth.fhir_base
    odd = base.replace("http://127.0.0.1", "HTTP://127.0.0.1").replace("/fhir/R4", "/FHIR/r4") + "/"
    launch_token = smart_auth.launch(fhirContext=[{"reference": f"ClaimResponse/{ids['cr-aetna-01']}"}])
    r = client.get("/app/launch", query_string={"iss": odd, "launch": launch_token})
    assert r.status_code == 302
    q = parse_qs(urlsplit(r.headers["Location"]).query)
    assert q["aud"] == [base]
    assert q["code_challenge_method"] == ["S256"] and len(q["state"][0]) >= 43  # 256 bits
    r = client.get(authorize(r.headers["Location"]))
    assert r.headers["Location"].endswith(f"/app/claim/{ids['cr-aetna-01']}")
    r = client.get("/app/launch", query_string={"iss": "https://evil.example/fhir", "launch": "x"})
    assert r.status_code == 400 and "Unknown EHR" in r.get_data(as_text=True)
    assert "Traceback" not in r.get_data(as_text=True)


def test_smart_configuration_only_at_the_root(
    public_app: Flask, smart_auth: SmartAuthServer, ids: dict[str, str]
) -> None:
    """Behaviour 2: discovery falls back from {iss}/.well-known to the server root."""
    smart_auth.set_switches(smart_config_only_at_root=True)
    assert requests.get(smart_auth.fhir_base + "/.well-known/smart-configuration", timeout=5).status_code == 404
    r = launch(public_app.test_client(), smart_auth, fhirContext=[{"reference": f"ClaimResponse/{ids['cr-aetna-01']}"}])
    assert r.status_code == 302 and "/app/claim/" in r.headers["Location"]
    assert _only_session(public_app).smart["source"] == smart_auth.url + "/.well-known/smart-configuration"


def test_no_patient_in_token(public_app: Flask, smart_auth: SmartAuthServer, ids: dict[str, str]) -> None:
    """Behaviour 4: no `patient` → fhirContext, the ClaimResponse's patient, or a picker; never a crash."""
    smart_auth.set_switches(omit_patient=True)
    client = public_app.test_client()
    cr = ids["cr-aetna-01"]
    r = launch(client, smart_auth, patient=ids["pat-whitfield"], fhirContext=[{"reference": f"ClaimResponse/{cr}"}])
    assert r.headers["Location"].endswith(f"/app/claim/{cr}")
    assert _only_session(public_app).context.patient is None
    page = client.get(f"/app/claim/{cr}")
    assert page.status_code == 200 and "medically necessary" in page.get_data(as_text=True)
    other = public_app.test_client()
    r = launch(other, smart_auth, patient=ids["pat-whitfield"])
    assert "picker=1" in r.headers["Location"]
    page = other.get(r.headers["Location"])
    assert page.status_code == 200 and "did not say which patient" in page.get_data(as_text=True)


def test_patient_only_on_refresh(public_app: Flask, smart_auth: SmartAuthServer, ids: dict[str, str]) -> None:
    """Behaviour 4 (one payer API): the patient arrives only with a refreshed token."""
    smart_auth.set_switches(patient_only_on_refresh=True, token_lifetime=30)
    client = public_app.test_client()
    launch(
        client,
        smart_auth,
        patient=ids["pat-whitfield"],
        fhirContext=[{"reference": f"ClaimResponse/{ids['cr-aetna-01']}"}],
    )
    ts = _only_session(public_app)
    assert ts.context.patient is None and ts.refresh_token
    old_refresh = ts.refresh_token
    page = client.get(f"/app/claim/{ids['cr-aetna-01']}")  # 30 s < refresh margin → refreshed first
    assert page.status_code == 200
    ts = _only_session(public_app)  # the refreshed record, as stored
    assert ts.context.patient == ids["pat-whitfield"]
    assert ts.refresh_token != old_refresh  # the new refresh token replaced the old


def test_v1_scopes_dropped_gives_403_handled(smart_auth: SmartAuthServer, tmp_path: Path, ids: dict[str, str]) -> None:
    """Behaviour 5: an EHR drops v1 `.read` scopes → every read is 403 → a clear page and the reason, per type."""
    smart_auth.register_client(**ptguard_app_client(REDIRECT))
    app = make_app(tmp_path, [{"fhir_base": smart_auth.fhir_base, "client_id": "ptguard-app", "scope_version": "v1"}])
    smart_auth.set_switches(narrow_scopes=True)
    client = app.test_client()
    cr = ids["cr-aetna-01"]
    launch(client, smart_auth, fhirContext=[{"reference": f"ClaimResponse/{cr}"}])
    ts = _only_session(app)
    assert not any(s.endswith(".read") for s in ts.scope.split())
    page = client.get(f"/app/claim/{cr}")
    html = page.get_data(as_text=True)
    assert page.status_code == 403 and "The EHR refused access" in html
    assert "granted none of the read scopes" in html  # the features box says why
    assert "Traceback" not in html


def test_403_on_one_resource_type_degrades(public_app: Flask, smart_auth: SmartAuthServer, ids: dict[str, str]) -> None:
    """Behaviour 5: 403 on Claim reads → the denial still decodes, the page says what is missing and what to do;
    403 on Observation → the letter shows a gap instead of measures."""
    cr = ids["cr-aetna-01"]
    smart_auth.set_switches(forbid_resource_types=["Claim"])
    client = public_app.test_client()
    launch(client, smart_auth, fhirContext=[{"reference": f"ClaimResponse/{cr}"}])
    page = client.get(f"/app/claim/{cr}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200, html[:500]
    assert "CARC" in html and "refused access (403)" in html and "Claim" in html
    assert "Build the appeal letter" not in html
    smart_auth.set_switches(forbid_resource_types=["Observation"])
    client = public_app.test_client()
    launch(client, smart_auth, fhirContext=[{"reference": f"ClaimResponse/{cr}"}])
    page = client.get(f"/app/claim/{cr}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "observations" in html
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    assert csrf
    r = client.post(f"/app/claim/{cr}/appeal", data={"csrf": csrf.group(1)})
    html = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "[GAP: objective measures" in html


def test_no_refresh_token_and_short_tokens(public_app: Flask, smart_auth: SmartAuthServer, ids: dict[str, str]) -> None:
    """Behaviour 6: no refresh token, offline_access left out, 30-second tokens → say so; on expiry re-launch cleanly."""
    smart_auth.set_switches(no_refresh_token=True, omit_offline_access_from_scope=True, token_lifetime=30)
    client = public_app.test_client()
    cr = ids["cr-aetna-01"]
    launch(client, smart_auth, fhirContext=[{"reference": f"ClaimResponse/{cr}"}])
    ts = _only_session(public_app)
    assert ts.refresh_token is None and "online_access" not in ts.scope
    html = client.get(f"/app/claim/{cr}").get_data(as_text=True)
    assert "no refresh token (offline_access not granted)" in html
    _expire_latest_session(public_app)
    page = client.get(f"/app/claim/{cr}")
    assert page.status_code == 400 and "Session expired" in page.get_data(as_text=True)
    assert "Launch the app again" in page.get_data(as_text=True)
    # the EHR revoking the token early: a 401 from FHIR is also a clean re-launch page
    smart_auth.reset_switches()
    client = public_app.test_client()
    launch(client, smart_auth, fhirContext=[{"reference": f"ClaimResponse/{cr}"}])
    smart_auth.state.expire_tokens(access_token=_only_session(public_app).access_token)
    page = client.get(f"/app/claim/{cr}")
    assert page.status_code == 401 and "Session expired" in page.get_data(as_text=True)


def test_cookie_lost_between_launch_and_callback(
    public_app: Flask, smart_auth: SmartAuthServer, ids: dict[str, str]
) -> None:
    """Behaviour 7: the callback works in a browser context without the launch's cookie (state kept server-side)."""
    url = smart_auth.ehr_launch_url(
        "http://localhost/app/launch", fhirContext=[{"reference": f"ClaimResponse/{ids['cr-aetna-01']}"}]
    )
    parts = urlsplit(url)
    r = public_app.test_client().get(f"{parts.path}?{parts.query}")
    fresh = public_app.test_client()  # no cookies at all
    r = fresh.get(authorize(r.headers["Location"]))
    assert r.status_code == 302 and "/app/claim/" in r.headers["Location"]
    page = fresh.get(r.headers["Location"])
    assert page.status_code == 200, page.get_data(as_text=True)[-1500:]


def test_missing_expired_or_reused_state(public_app: Flask, smart_auth: SmartAuthServer, ids: dict[str, str]) -> None:
    """Behaviour 9: missing, unknown, reused or expired state → a clear page, never a stack trace."""
    client = public_app.test_client()
    r = client.get("/app/callback?code=abc")
    assert r.status_code == 400 and "carried no state" in r.get_data(as_text=True)
    r = client.get("/app/callback?code=abc&state=nope")
    assert r.status_code == 400 and "No launch is waiting" in r.get_data(as_text=True)
    url = smart_auth.ehr_launch_url(
        "http://localhost/app/launch", fhirContext=[{"reference": f"ClaimResponse/{ids['cr-aetna-01']}"}]
    )
    parts = urlsplit(url)
    r = client.get(f"{parts.path}?{parts.query}")
    callback = authorize(r.headers["Location"])
    state = parse_qs(urlsplit(callback).query)["state"][0]
    from datetime import UTC, datetime, timedelta

    from ptguard.store.models import OAuthState

    with session_scope(public_app.config["DATABASE_URL"]) as s:
        row = s.get(OAuthState, state)
        assert row is not None and "verifier" in row.data
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    r = client.get(callback)
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and "expired" in html and "Traceback" not in html
    r = client.get(callback)  # single use
    assert r.status_code == 400 and "No launch is waiting" in r.get_data(as_text=True)
    r = client.get("/app/callback?state=x&error=access_denied&error_description=user+said+no")
    assert r.status_code == 400


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_confidential_client_assertions(
    smart_auth: SmartAuthServer, tmp_path: Path, ids: dict[str, str], alg: str
) -> None:
    """Behaviour 8 and private_key_jwt: ES384/RS384, iat never in the future, exp ≤ 300 s (capped), fresh jti."""
    key = (
        ECKey.generate_key("P-384", parameters={"kid": f"k-{alg}"})
        if alg == "ES384"
        else RSAKey.generate_key(2048, parameters={"kid": f"k-{alg}"})
    )
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(key.as_dict(private=True)))
    smart_auth.register_client(**ptguard_app_client(REDIRECT, jwks={"keys": [key.as_dict(private=False)]}))
    smart_auth.set_switches(
        reject_iat_in_future=True, require_iat=True, cap_assertion_exp=300, token_lifetime=30, id_token_alg="ES384"
    )
    app = make_app(
        tmp_path,
        [
            {
                "fhir_base": smart_auth.fhir_base,
                "client_id": "ptguard-app",
                "auth_method": "private_key_jwt",
                "private_key_path": str(key_file),
            }
        ],
    )
    client = app.test_client()
    cr = ids["cr-aetna-01"]
    r = launch(client, smart_auth, fhirContext=[{"reference": f"ClaimResponse/{cr}"}])
    assert r.status_code == 302, r.get_data(as_text=True)[:400]
    ts = _only_session(app)
    assert ts.fhir_user and ts.fhir_user.startswith("Practitioner/") and ts.identity_note == "verified"
    assert client.get(f"/app/claim/{cr}").status_code == 200  # refreshed with a second, different assertion
    cfg = smart.IssuerConfig(
        fhir_base=smart_auth.fhir_base,
        client_id="ptguard-app",
        auth_method="private_key_jwt",
        private_key_path=str(key_file),
    )
    a, b = (jwt.decode(smart.client_assertion(cfg, smart_auth.token_url), key, algorithms=[alg]) for _ in range(2))
    assert a.header["alg"] == alg and a.header["typ"] == "JWT" and a.header["kid"] == f"k-{alg}"
    assert a.claims["jti"] != b.claims["jti"]
    assert a.claims["exp"] - a.claims["iat"] <= 300 and a.claims["iss"] == a.claims["sub"] == "ptguard-app"


def test_standalone_launch_opens_the_worklist(
    public_app: Flask, smart_auth: SmartAuthServer, ids: dict[str, str]
) -> None:
    """Standalone launch (launch/patient; the server picks) → the biller's worklist; documentation check reachable."""
    smart_auth.set_switches(auto_select_patient=ids["pat-whitfield"], fhir_user_relative=True)
    client = public_app.test_client()
    r = client.get("/app/launch")  # one configured EHR: iss may be omitted
    q = parse_qs(urlsplit(r.headers["Location"]).query)
    assert "launch/patient" in q["scope"][0] and "offline_access" in q["scope"][0] and "launch" not in q
    assert "user/ClaimResponse.rs" in q["scope"][0]  # v2 advertised → v2 asked
    r = client.get(authorize(r.headers["Location"]))
    assert r.headers["Location"].endswith("/app/")
    page = client.get("/app/")
    assert page.status_code == 200 and "Denial worklist" in page.get_data(as_text=True)
    ts = _only_session(public_app)
    assert ts.context.patient == ids["pat-whitfield"] and ts.fhir_user and ts.fhir_user.startswith("Practitioner/")
    check = client.get(f"/app/check/{ids['enc-uhc-01']}")
    html = check.get_data(as_text=True)
    assert check.status_code == 200, html[:400]
    assert "Documentation check" in html and "squats" in html


def test_refused_code_or_refresh_token_is_a_clear_page(
    public_app: Flask, smart_auth: SmartAuthServer, ids: dict[str, str]
) -> None:
    """The token endpoint refusing a forged code or a revoked refresh token (authlib's OAuthError) → a clear
    page, not a 500."""
    cr = ids["cr-aetna-01"]
    client = public_app.test_client()
    url = smart_auth.ehr_launch_url("http://localhost/app/launch", fhirContext=[{"reference": f"ClaimResponse/{cr}"}])
    parts = urlsplit(url)
    r = client.get(f"{parts.path}?{parts.query}")
    callback = authorize(r.headers["Location"])
    q = parse_qs(urlsplit(callback).query)
    r = client.get("/app/callback", query_string={"state": q["state"][0], "code": "forged-" + q["code"][0]})
    html = r.get_data(as_text=True)
    assert r.status_code == 400, html[:500]
    assert "Sign-in not completed" in html and "invalid_grant" in html and "Something went wrong" not in html
    # a revoked refresh token when the access token is about to expire → "Session expired, launch again"
    smart_auth.set_switches(token_lifetime=30)
    client = public_app.test_client()
    launch(client, smart_auth, fhirContext=[{"reference": f"ClaimResponse/{cr}"}])
    ts = _only_session(public_app)
    assert ts.refresh_token
    with smart_auth.state.lock:
        smart_auth.state.refresh_tokens[ts.refresh_token].refresh_revoked = True
    page = client.get(f"/app/claim/{cr}")
    html = page.get_data(as_text=True)
    assert page.status_code == 400, html[:500]
    assert "Session expired, launch again" in html and "invalid_grant" in html and "Traceback" not in html


# ------------------------------------------------------------------ a ClaimResponse whose Claim is gone


def _orphan_claim_response(fhir_url: str) -> str:
    """A CARC 50 denial of one 97530 line whose `request` names a Claim the server does not have; returns its id.
    Its own patient, so no other test's searches see it."""
    cat = "http://terminology.hl7.org/CodeSystem/adjudication"
    with FhirClient(fhir_url) as fhir:
        patient = fhir.create(
            {"resourceType": "Patient", "name": [{"family": "Orphan", "given": ["Olive"]}], "birthDate": "1970-01-01"}
        )
        cr = fhir.create(
            {
                "resourceType": "ClaimResponse",
                "status": "active",
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]
                },
                "use": "claim",
                "patient": {"reference": f"Patient/{patient['id']}"},
                "created": "2026-11-20T08:15:00-05:00",
                "insurer": {"display": "Aetna Life Insurance Company"},
                "request": {"reference": "Claim/does-not-exist"},
                "outcome": "complete",
                "disposition": "Claim denied: not medically necessary.",
                "item": [
                    {
                        "itemSequence": 1,
                        "extension": [
                            {
                                "url": "https://ptguard.dev/fhir/StructureDefinition/product-or-service",
                                "valueCodeableConcept": {
                                    "coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97530"}]
                                },
                            }
                        ],
                        "adjudication": [
                            {
                                "category": {"coding": [{"system": cat, "code": "submitted"}]},
                                "amount": {"value": 195.0, "currency": "USD"},
                            },
                            {
                                "category": {"coding": [{"system": cat, "code": "benefit"}]},
                                "amount": {"value": 0.0, "currency": "USD"},
                            },
                            {
                                "category": {
                                    "coding": [
                                        {
                                            "system": "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudicationDiscriminator",
                                            "code": "denialreason",
                                        }
                                    ]
                                },
                                "reason": {
                                    "coding": [
                                        {"system": "https://x12.org/codes/claim-adjustment-reason-codes", "code": "50"}
                                    ]
                                },
                                "amount": {"value": 195.0, "currency": "USD"},
                            },
                        ],
                    }
                ],
            }
        )
    return str(cr["id"])


def test_claim_response_whose_claim_is_missing(public_app: Flask, smart_auth: SmartAuthServer) -> None:
    """`request` → Claim/does-not-exist: the denial still decodes; the page says the Claim is missing and what to
    do, offers no "Build" action that would fail, and a forced POST is a clear 404, never a traceback."""
    cr = _orphan_claim_response(smart_auth.state.fhir_url)
    client = public_app.test_client()
    r = launch(client, smart_auth, fhirContext=[{"reference": f"ClaimResponse/{cr}"}])
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/app/claim/{cr}")
    page = client.get(f"/app/claim/{cr}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200, html[:800]
    assert "97530" in html and "CARC" in html and "medically necessary" in html  # the denial itself decoded
    assert "Claim/does-not-exist" in html and "not available" in html  # what happened
    assert "Load the Claim (or ask for Claim read access) and try again" in html  # what to do
    assert "Build the appeal letter" not in html and "Build the corrected-claim note" not in html
    assert f'action="/app/claim/{cr}/appeal"' not in html  # no form posting to the appeal builder
    assert "Traceback" not in html and "Something went wrong" not in html
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    assert csrf
    forced = client.post(f"/app/claim/{cr}/appeal", data={"csrf": csrf.group(1)})
    text = forced.get_data(as_text=True)
    assert forced.status_code == 404, text[:800]
    assert "Claim/does-not-exist" in text and "Traceback" not in text and "Something went wrong" not in text


# ------------------------------------------------------------------ editing the letter in the browser


def _letter_form(html: str) -> dict[str, str]:
    """What a browser posts from the appeal page's letter form as rendered: every textarea, every checked box."""
    form = re.search(r'<form method="post" action="[^"]*/edit" class="letter-form">(.*?)</form>', html, re.S)
    assert form, "no letter form on the appeal page"
    body = form.group(1)
    data = {m.group(1): m.group(2) for m in re.finditer(r'<input type="hidden" name="(csrf)" value="([^"]*)">', body)}
    for m in re.finditer(r'<textarea id="[^"]*" name="(text-[^"]+)"[^>]*>(.*?)</textarea>', body, re.S):
        data[m.group(1)] = html_lib.unescape(m.group(2))
    for m in re.finditer(r'<input type="checkbox" name="(keep-[^"]+)" value="1" checked>', body):
        data[m.group(1)] = "1"
    return data


def test_edit_letter_through_the_browser_route(
    public_app: Flask, smart_auth: SmartAuthServer, ids: dict[str, str]
) -> None:
    """POST the letter form (CSRF token, every sentence as rendered, one sentence changed) → the view shows the new
    words, the audit trail has `letter.edited` naming that sentence only, and the PDF carries the edited text."""
    client = public_app.test_client()
    cr = ids["cr-aetna-01"]
    launch(client, smart_auth, fhirContext=[{"reference": f"ClaimResponse/{cr}"}])
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get(f"/app/claim/{cr}").get_data(as_text=True))
    assert csrf
    r = client.post(f"/app/claim/{cr}/appeal", data={"csrf": csrf.group(1)})
    assert r.status_code == 302
    case_url = r.headers["Location"]
    case_id = case_url.rsplit("/", 1)[-1]
    html = client.get(case_url).get_data(as_text=True)
    form = _letter_form(html)
    assert form["csrf"] == csrf.group(1) and sum(k.startswith("text-") for k in form) >= 5
    # the form posted back untouched (as a browser sends it: every textarea, every tie kept) changes nothing
    r = client.post(case_url + "/edit", data=form)
    assert r.status_code == 302 and r.headers["Location"].endswith(case_url)
    assert "No changes to save" in client.get(case_url).get_data(as_text=True)
    # a stale or missing token is refused and saves nothing
    new_text = (
        "The billing office confirms that every session was goal-directed functional training (edited in the browser)."
    )
    target = next(k for k, v in form.items() if k.startswith("text-") and "CPB 0325" in v)
    sid = target.removeprefix("text-")
    assert client.post(case_url + "/edit", data={**form, "csrf": "stale", target: new_text}).status_code == 400
    r = client.post(case_url + "/edit", data={**form, target: new_text})
    assert r.status_code == 302
    page = client.get(case_url)
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Saved 1 edited sentence(s)." in html
    assert _letter_form(html)[target] == new_text  # the new words, in the sentence's own textarea
    assert re.search(rf'<div class="sentence [a-z]+ edited"[^>]*>\s*<label for="{re.escape(target)}"', html)
    assert "<td>letter.edited</td>" in html  # the audit trail on the page
    with session_scope(public_app.config["DATABASE_URL"]) as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.case_id == case_id).order_by(AuditEvent.id)).all()
        trail = [(e.action, e.detail) for e in events]
    assert [a for a, _ in trail] == ["case.created", "letter.edited"]  # the no-op and the stale post left no entry
    assert trail[1][1] == {"sentences": [sid], "sources_dropped": []}  # the tie was kept (box left checked)
    pdf = client.get(case_url + "/packet.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    text = " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.data)).pages).split())
    assert new_text in text
    assert "20 lb" in text and "19 May 2027" in text  # the rest of the letter is still there


def test_writeback_twice_makes_one_document_reference_on_the_server(
    public_app: Flask, smart_auth: SmartAuthServer, ids: dict[str, str]
) -> None:
    """A double submit creates nothing the second time; and even when ptguard lost what it had recorded (a POST
    that timed out after the server stored it), If-None-Exist on the case identifier gives back the same
    DocumentReference and Task instead of a second copy."""
    client = public_app.test_client()
    cr = ids["cr-aetna-01"]
    launch(client, smart_auth, fhirContext=[{"reference": f"ClaimResponse/{cr}"}])
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get(f"/app/claim/{cr}").get_data(as_text=True))
    assert csrf
    r = client.post(f"/app/claim/{cr}/appeal", data={"csrf": csrf.group(1)})
    case_url = r.headers["Location"]
    case_id = case_url.rsplit("/", 1)[-1]
    for _ in range(2):
        assert client.post(case_url + "/writeback", data={"csrf": csrf.group(1)}).status_code == 302
    assert "nothing was created again" in client.get(case_url).get_data(as_text=True)
    db = public_app.config["DATABASE_URL"]
    with session_scope(db) as s:
        case = s.get(AppealCase, case_id)
        assert case is not None and case.document_ref and case.task_ref
        first = (case.document_ref, case.task_ref)
        case.document_ref = case.task_ref = None  # as if the answers had been lost
    assert client.post(case_url + "/writeback", data={"csrf": csrf.group(1)}).status_code == 302
    with session_scope(db) as s:
        case = s.get(AppealCase, case_id)
        assert case is not None and (case.document_ref, case.task_ref) == first
    with FhirClient(smart_auth.state.fhir_url) as fhir:
        system = "https://ptguard.dev/appeal-case"
        assert len(fhir.search("DocumentReference", {"identifier": f"{system}|{case_id}"})) == 1
        assert len(fhir.search("Task", {"identifier": f"{system}|{case_id}"})) == 1
