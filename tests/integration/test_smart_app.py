"""The SMART app end to end: the sandbox SMART server + FHIR server, EHR and standalone launches, every real-world EHR
behaviour from the domain notes, the denied-claim view, the appeal letter, the PDF, write-back and the case record."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
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


def test_ehr_launch_to_packet_and_writeback(public_app: Flask, smart_auth: SmartAuthServer, ids: dict[str, str]) -> None:
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
