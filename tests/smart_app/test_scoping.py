"""Case views are scoped to the session's EHR (FHIR base) and, after a patient launch, to its patient; creating a
case and signing out take a POST with the CSRF token."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from ptguard.appeals import cases
from ptguard.appeals.model import AppealLetter
from ptguard.store.db import session_scope
from ptguard.store.models import AppealCase, AuditEvent, WorkItem
from smart_app import smart
from smart_app.sessions import TokenStore
from smart_app.smart import IdentityCheck, SmartConfiguration

EHR_A = "https://ehr-a.example/fhir"
EHR_B = "https://ehr-b.example/fhir"


def _ts(base: str, scope: str, patient: str | None) -> smart.TokenSet:
    token: dict[str, Any] = {"access_token": "t-" + base, "expires_in": 3600, "scope": scope}
    if patient:
        token["patient"] = patient
    cfg = smart.IssuerConfig(fhir_base=base, client_id="c")
    return smart.token_set(token, cfg, SmartConfiguration("a", "t"), ["launch"], IdentityCheck(False, None, None, ""))


def _letter(cr: str, patient: str) -> AppealLetter:
    return AppealLetter(
        claim_response=f"ClaimResponse/{cr}",
        claim=None,
        patient=f"Patient/{patient}",
        payer_id="aetna",
        payer_name="Aetna",
        category="medical-necessity",
        path="appeal",
        level="first-level",
        subject="Appeal",
    )


def _client(app: Flask, ts: smart.TokenSet) -> tuple[FlaskClient, str]:
    sid, csrf = TokenStore(app.config["DATABASE_URL"], "k").put(ts)
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["sid"] = sid
    return client, csrf


def _count(db: str, model: Any) -> int:
    with session_scope(db) as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_another_ehrs_cases_are_not_visible(app: Flask) -> None:
    db = app.config["DATABASE_URL"]
    case_a = cases.create_case(db, _letter("cr-1", "p1"), actor="a", fhir_server=EHR_A)
    case_a2 = cases.create_case(db, _letter("cr-2", "p2"), actor="a", fhir_server=EHR_A + "/")
    case_b = cases.create_case(db, _letter("shared", "p1"), actor="b", fhir_server=EHR_B)
    orphan = cases.create_case(db, _letter("cr-9", "p1"), actor="cli")  # no FHIR server recorded
    a, csrf = _client(app, _ts(EHR_A, "launch user/*.rs user/*.c", None))
    html = a.get("/app/").get_data(as_text=True)
    assert case_a in html and case_a2 in html and case_b not in html and orphan not in html
    assert a.get(f"/app/appeal/{case_a}").status_code == 200
    for cid in (case_b, orphan):
        assert a.get(f"/app/appeal/{cid}").status_code == 404
        assert a.get(f"/app/appeal/{cid}/packet.pdf").status_code == 404
        for action, form in (("edit", {}), ("status", {"status": "sent"}), ("writeback", {})):
            r = a.post(f"/app/appeal/{cid}/{action}", data={"csrf": csrf, **form})
            assert r.status_code == 404, (action, r.status_code)
    assert cases.get_case(db, case_b).status == "draft"  # the status change did not happen
    # the same ClaimResponse id on EHR B is another claim: EHR A's session is not sent to B's draft
    r = a.get("/app/claim/shared/appeal")
    assert r.status_code == 200 and "Build the appeal letter" in r.get_data(as_text=True)
    b, _ = _client(app, _ts(EHR_B, "launch user/*.rs", None))
    r = b.get("/app/claim/shared/appeal")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/app/appeal/{case_b}")
    html = b.get("/app/").get_data(as_text=True)
    assert case_b in html and case_a not in html


def test_a_patient_launch_sees_only_its_patient(app: Flask) -> None:
    db = app.config["DATABASE_URL"]
    mine = cases.create_case(db, _letter("cr-1", "p1"), actor="a", fhir_server=EHR_A)
    other = cases.create_case(db, _letter("cr-2", "p2"), actor="a", fhir_server=EHR_A)
    with session_scope(db) as s:
        for pid, name in (("p1", "Alice Mine"), ("p2", "Bob Other")):
            s.add(
                WorkItem(
                    dedupe_key=pid, source="835", patient_ref=f"Patient/{pid}", patient_display=name, status="open"
                )
            )
    client, _ = _client(app, _ts(EHR_A, "launch/patient patient/*.rs patient/Task.c", "p1"))
    html = client.get("/app/").get_data(as_text=True)
    assert mine in html and other not in html
    assert "Alice Mine" in html and "Bob Other" not in html
    assert client.get(f"/app/appeal/{mine}").status_code == 200
    assert client.get(f"/app/appeal/{other}").status_code == 404
    # a user-scoped session with a patient in context (a biller launched from one chart) still sees every patient
    biller, _ = _client(app, _ts(EHR_A, "launch user/*.rs", "p1"))
    html = biller.get("/app/").get_data(as_text=True)
    assert mine in html and other in html and "Bob Other" in html


def test_creating_a_case_and_signing_out_need_a_post_with_the_csrf_token(app: Flask) -> None:
    db = app.config["DATABASE_URL"]
    client, csrf = _client(app, _ts(EHR_A, "launch user/*.rs", None))
    before = (_count(db, AppealCase), _count(db, AuditEvent))
    r = client.get("/app/claim/cr-7/appeal")  # e.g. an <img src> on another site
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and "Build the appeal letter" in html and 'method="post"' in html and csrf in html
    assert client.post("/app/claim/cr-7/appeal", data={}).status_code == 400  # no CSRF token
    assert client.post("/app/claim/cr-7/appeal", data={"csrf": "forged"}).status_code == 400
    assert (_count(db, AppealCase), _count(db, AuditEvent)) == before
    assert client.get("/app/logout").status_code == 405
    assert client.post("/app/logout", data={"csrf": "forged"}).status_code == 400
    assert client.get("/app/").status_code == 200  # still signed in
    r = client.post("/app/logout", data={"csrf": csrf})
    assert r.status_code == 302
    assert client.get("/app/").status_code == 401


def test_ids_are_matched_in_full(app: Flask) -> None:
    from smart_app.views import valid_id

    for good in ("cr-aetna-01", "a.b", "A1", "x" * 64, "0f3a9c"):
        assert valid_id(good), good
    for bad in ("cr-1\n", "..", ".", "...", "", "x" * 65, "a/b", "a b", "é", "cr-1\r\n"):
        assert not valid_id(bad), repr(bad)
    client, _ = _client(app, _ts(EHR_A, "launch user/*.rs", None))
    for path in ("/app/claim/cr-1%0A", "/app/claim/..", "/app/check/%2E%2E", "/app/appeal/..", "/app/item/abc%0A"):
        r = client.get(path)
        assert r.status_code == 404, (path, r.status_code)
        assert "not a valid id" in r.get_data(as_text=True)


def test_a_non_ascii_csrf_value_is_a_stale_form_not_a_500(app: Flask) -> None:
    client, csrf = _client(app, _ts(EHR_A, "launch user/*.rs user/*.c", None))
    for bad in ("é", "\u2603" * 40, csrf + "é"):
        r = client.post("/app/logout", data={"csrf": bad})
        assert r.status_code == 400, (bad, r.status_code)
    assert client.post("/app/logout", data={"csrf": csrf}).status_code in (200, 302)
