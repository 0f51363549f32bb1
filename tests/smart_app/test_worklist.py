"""The worklist shows reason codes as billers write them, and an 835 denial not matched to a chart claim opens a
page decoded from the stored remittance (never a 404)."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any

from flask import Flask

from ptguard.store.db import session_scope
from ptguard.store.models import WorkItem
from smart_app import smart
from smart_app.sessions import TokenStore
from smart_app.smart import IdentityCheck, SmartConfiguration
from webapp import create_app

CARC = "https://x12.org/codes/claim-adjustment-reason-codes"
CR: dict[str, Any] = {
    "resourceType": "ClaimResponse",
    "id": "835-unmatched-1",
    "status": "active",
    "outcome": "complete",
    "created": "2026-11-20",
    "insurer": {"display": "Aetna"},
    "item": [
        {
            "itemSequence": 1,
            "adjudication": [
                {"category": {"coding": [{"code": "submitted"}]}, "amount": {"value": 150, "currency": "USD"}},
                {"category": {"coding": [{"code": "benefit"}]}, "amount": {"value": 0, "currency": "USD"}},
                {
                    "category": {"coding": [{"system": CARC, "code": "50"}]},
                    "reason": {"coding": [{"system": CARC, "code": "50"}]},
                },
            ],
        }
    ],
}
CODES = [{"kind": "CARC", "group": "CO", "code": "50"}, {"kind": "RARC", "code": "N130"}]


def _app(tmp_path: Path) -> tuple[Flask, Any]:
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'w.sqlite3'}",
            "SECRET_KEY": "k",
            "SESSION_COOKIE_SECURE": False,
        }
    )
    ts = smart.token_set(
        {"access_token": "a", "expires_in": 3600, "scope": "launch user/*.rs"},
        smart.IssuerConfig(fhir_base="https://ehr.example/fhir", client_id="c"),
        SmartConfiguration("a", "t"),
        ["launch"],
        IdentityCheck(False, None, None, ""),
    )
    sid, _ = TokenStore(app.config["DATABASE_URL"], "k").put(ts)
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["sid"] = sid
    return app, client


def test_codes_column_and_unmatched_denial_page(tmp_path: Path) -> None:
    app, client = _app(tmp_path)
    with session_scope(app.config["DATABASE_URL"]) as s:
        item = WorkItem(
            dedupe_key="835|x|unmatched",
            source="835",
            patient_display="DOE, JANE",
            claim_control_number="PCN-7788",
            claim_response_ref="ClaimResponse/835-unmatched-1",
            claim_response=CR,
            payer_id="aetna",
            payer_name="Aetna",
            lines=[],
            codes=CODES,
            category="unmatched",
            path="none",
            status="unmatched",
            matched=False,
            due_date=date(2027, 5, 19),
            deadline_rule="180 days from the notice",
        )
        s.add(item)
        s.flush()
        item_id = item.id
    html = client.get("/app/").get_data(as_text=True)
    assert "CO-50 · N130" in html
    assert "{" not in re.sub(r"<(script|style)[^>]*>.*?</\1>", "", html, flags=re.S)  # no dict repr
    assert "/app/claim/835-unmatched-1" not in html  # no link to a ClaimResponse the chart does not hold
    link = re.search(r'href="(/app/item/[^"]+)"', html)
    assert link and link.group(1) == f"/app/item/{item_id}"
    page = client.get(link.group(1))
    text = page.get_data(as_text=True)
    assert page.status_code == 200, text[:400]
    assert "Not matched to a claim in the chart" in text and "claim control number" in text and "PCN-7788" in text
    assert "medically necessary" in text and "CO-50 · N130" in text and "2027-05-19" in text
    assert "$150.00" in text
    assert client.get("/app/item/nope").status_code == 404
