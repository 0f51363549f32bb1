"""Hostile and unlucky inputs to the appeal editor and write-back: double submits, failed saves, huge text, markup."""

from __future__ import annotations

import io
import json
import re
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from flask import Flask
from flask.testing import FlaskClient
from pypdf import PdfReader

from ptguard.appeals import cases
from ptguard.appeals.assemble import assemble
from ptguard.appeals.gather import build_source, load_files
from ptguard.appeals.model import AppealLetter
from ptguard.appeals.writeback import PTGUARD_CASE
from ptguard.store.db import session_scope
from ptguard.store.models import WorkItem
from smart_app import smart
from smart_app.sessions import TokenStore
from smart_app.smart import IdentityCheck, SmartConfiguration

EHR = "https://ehr-a.example/fhir"
OTHER = "https://ehr-b.example/fhir"
FIXTURE = Path(__file__).resolve().parents[2] / "fhir_fixtures" / "patient-aetna-whitfield.json"


@pytest.fixture(scope="module")
def letter() -> AppealLetter:
    src = build_source(load_files([FIXTURE]), "cr-aetna-01")
    return assemble(src, today=date(2026, 12, 3))


def _signed_in(app: Flask, base: str = EHR) -> tuple[FlaskClient, str]:
    token: dict[str, Any] = {"access_token": "tok", "expires_in": 3600, "scope": "launch user/*.rs user/*.c"}
    cfg = smart.IssuerConfig(fhir_base=base, client_id="c")
    ts = smart.token_set(token, cfg, SmartConfiguration("a", "t"), ["launch"], IdentityCheck(False, None, None, ""))
    sid, csrf = TokenStore(app.config["DATABASE_URL"], "k").put(ts)
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["sid"] = sid
    return client, csrf


def _new_case(app: Flask, letter: AppealLetter) -> str:
    return cases.create_case(app.config["DATABASE_URL"], letter, actor="t", fhir_server=EHR)


def _created(resource_type: str, counter: list[str]) -> Any:
    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        counter.append(str(request.headers.get("If-None-Exist")))
        return 201, {}, json.dumps({"resourceType": resource_type, "id": f"{resource_type[:1].lower()}{len(counter)}"})

    return answer


def test_double_submit_of_writeback_creates_one_document_reference(app: Flask, letter: AppealLetter) -> None:
    case_id = _new_case(app, letter)
    client, csrf = _signed_in(app)
    docs: list[str] = []
    tasks: list[str] = []
    with responses.RequestsMock() as rm:
        rm.add_callback(responses.POST, EHR + "/DocumentReference", callback=_created("DocumentReference", docs))
        rm.add_callback(responses.POST, EHR + "/Task", callback=_created("Task", tasks))
        for _ in range(3):
            r = client.post(f"/app/appeal/{case_id}/writeback", data={"csrf": csrf})
            assert r.status_code == 302
    assert len(docs) == 1 and len(tasks) == 1
    # each create is conditional on the case identifier: a retried POST the server did carry out is not copied
    assert docs == [f"identifier={PTGUARD_CASE}|{case_id}"] and tasks == docs
    html = client.get(f"/app/appeal/{case_id}").get_data(as_text=True)
    assert "Already saved to the chart as DocumentReference/d1" in html and "nothing was created again" in html
    view = cases.get_case(app.config["DATABASE_URL"], case_id)
    assert (view.document_ref, view.task_ref) == ("DocumentReference/d1", "Task/t1")


def test_a_failed_writeback_retried_creates_only_what_is_missing(app: Flask, letter: AppealLetter) -> None:
    case_id = _new_case(app, letter)
    client, csrf = _signed_in(app)
    docs: list[str] = []
    with responses.RequestsMock() as rm:
        rm.add_callback(responses.POST, EHR + "/DocumentReference", callback=_created("DocumentReference", docs))
        rm.add(responses.POST, EHR + "/Task", body=requests.exceptions.ReadTimeout("slow"))
        assert client.post(f"/app/appeal/{case_id}/writeback", data={"csrf": csrf}).status_code == 302
    html = client.get(f"/app/appeal/{case_id}").get_data(as_text=True)
    assert "The FHIR server refused the Task" in html and "Traceback" not in html
    tasks: list[str] = []
    with responses.RequestsMock() as rm:  # the retry: the DocumentReference exists, only the Task is made
        rm.add_callback(responses.POST, EHR + "/Task", callback=_created("Task", tasks))
        assert client.post(f"/app/appeal/{case_id}/writeback", data={"csrf": csrf}).status_code == 302
        sent = json.loads(rm.calls[0].request.body or b"{}")
    assert len(docs) == 1 and len(tasks) == 1
    assert sent["input"][0]["valueReference"]["reference"] == "DocumentReference/d1"
    view = cases.get_case(app.config["DATABASE_URL"], case_id)
    assert (view.document_ref, view.task_ref) == ("DocumentReference/d1", "Task/t1")


def test_a_writeback_under_way_is_not_started_twice(app: Flask, letter: AppealLetter) -> None:
    db = app.config["DATABASE_URL"]
    case_id = _new_case(app, letter)
    now = time.time()
    first = cases.begin_writeback(db, case_id, now=now)
    assert first.state == "claimed"
    assert cases.begin_writeback(db, case_id, now=now + 1).state == "busy"  # the double click, other worker
    view = cases.get_case(db, case_id)
    assert view.document_ref is None and view.task_ref is None  # the claim marker is never shown as a reference
    client, csrf = _signed_in(app)
    with responses.RequestsMock():  # nothing may be sent to the EHR while the first one runs
        r = client.post(f"/app/appeal/{case_id}/writeback", data={"csrf": csrf})
    assert r.status_code == 302
    assert "being saved to the chart by another request" in client.get(f"/app/appeal/{case_id}").get_data(as_text=True)
    # a claim whose worker died is stale after the hold time; a failed request drops its claim at once
    taken_over = cases.begin_writeback(db, case_id, now=now + cases.WRITEBACK_HOLD + 1)
    assert taken_over.state == "claimed"
    # the first request, finishing late, must not clear the claim of the one that took over
    cases.end_writeback(db, case_id, first.token)
    assert cases.begin_writeback(db, case_id, now=now + cases.WRITEBACK_HOLD + 2).state == "busy"
    cases.end_writeback(db, case_id, taken_over.token)
    assert cases.begin_writeback(db, case_id).state == "claimed"


def _textarea(html: str, sentence_id: str) -> str:
    import html as html_lib

    m = re.search(rf'<textarea id="text-{re.escape(sentence_id)}"[^>]*>(.*?)</textarea>', html, re.S)
    assert m, sentence_id
    return html_lib.unescape(m.group(1))


def test_an_edit_that_cannot_be_saved_keeps_the_text(app: Flask, letter: AppealLetter) -> None:
    db = app.config["DATABASE_URL"]
    case_id = _new_case(app, letter)
    client, csrf = _signed_in(app)
    first, second = (s.id for s in letter.sentences()[:2])
    # too long (a megabyte of words would take the PDF renderer about a minute): refused, nothing saved, text kept
    huge = "word " * 200_000
    r = client.post(
        f"/app/appeal/{case_id}/edit", data={"csrf": csrf, f"text-{first}": "Mine.", f"text-{second}": huge}
    )
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and "Your edits were not saved" in html and "5,000 characters" in html
    assert _textarea(html, first) == "Mine." and _textarea(html, second) == huge
    assert not any(s.edited for s in cases.get_case(db, case_id).letter.sentences())
    # the case was marked sent (in another tab) before the edit was posted: 409, the text is still on the page
    cases.set_status(db, case_id, "sent", actor="t")
    r = client.post(f"/app/appeal/{case_id}/edit", data={"csrf": csrf, f"text-{first}": "My careful words."})
    html = r.get_data(as_text=True)
    assert r.status_code == 409 and "only a draft letter can be edited" in html
    assert _textarea(html, first) == "My careful words." and "Traceback" not in html


def test_markup_and_odd_characters_in_a_sentence_are_text_in_page_and_pdf(app: Flask, letter: AppealLetter) -> None:
    case_id = _new_case(app, letter)
    client, csrf = _signed_in(app)
    sid = letter.sentences()[0].id
    text = '<script>alert(1)</script> <img src=x onerror=alert(2)> R\u202eTL zero\u200bwidth nul\x00 &amp; "q"'
    assert client.post(f"/app/appeal/{case_id}/edit", data={"csrf": csrf, f"text-{sid}": text}).status_code == 302
    html = client.get(f"/app/appeal/{case_id}").get_data(as_text=True)
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    pdf = client.get(f"/app/appeal/{case_id}/packet.pdf")
    assert pdf.status_code == 200
    words = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.data)).pages)
    assert "<script>alert(1)</script>" in words and "<img src=x onerror=alert(2)>" in words  # printed, not obeyed


def test_another_ehrs_worklist_items_are_not_shown(app: Flask) -> None:
    db = app.config["DATABASE_URL"]
    with session_scope(db) as s:
        for key, server, name in (("a", EHR + "/", "Alice Ours"), ("b", OTHER, "Bob Theirs"), ("c", None, "Cy 835")):
            s.add(
                WorkItem(
                    dedupe_key=key,
                    source="835",
                    fhir_server=server,
                    patient_ref=f"Patient/{key}",
                    patient_display=name,
                    status="open",
                )
            )
    with session_scope(db) as s:
        theirs = s.query(WorkItem).filter_by(dedupe_key="b").one().id
    client, _ = _signed_in(app)
    html = client.get("/app/").get_data(as_text=True)
    assert "Alice Ours" in html and "Cy 835" in html and "Bob Theirs" not in html
    assert client.get(f"/app/item/{theirs}").status_code == 404
    other, _ = _signed_in(app, OTHER)
    assert other.get(f"/app/item/{theirs}").status_code == 200


def test_a_very_long_worklist_is_cut_to_the_soonest(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    from smart_app import views

    monkeypatch.setattr(views, "WORKLIST_LIMIT", 5)
    with session_scope(app.config["DATABASE_URL"]) as s:
        for i in range(12):
            s.add(WorkItem(dedupe_key=f"k{i}", source="835", patient_display=f"Patient {i:02}", status="open"))
    client, _ = _signed_in(app)
    r = client.get("/app/")
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and "7 more open denial(s) are not listed here" in html
    assert sum(f"Patient {i:02}" in html for i in range(12)) == 5
