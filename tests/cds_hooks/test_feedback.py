"""Feedback: stored once however often it arrives, tied to the criterion of its card, reported per criterion."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest
import responses
from cdshelpers import REPORT_SCHEMA, SCENARIOS, TokenFactory, fake_for, hook_request, patient_of, post
from sqlalchemy import func, select

from ptguard.cli import main
from ptguard.store.db import session_scope
from ptguard.store.models import CdsFeedback

SIGN = "ptguard-97530-signing"


def _cards(client: Any, token: TokenFactory, ident: str) -> list[dict[str, Any]]:
    s = next(x for x in SCENARIOS if x["id"] == ident)
    fake = fake_for(ident)
    pid = patient_of(fake, s["encounter"])
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.register(rsps)
        response = post(client, token, SIGN, hook_request(SIGN, patient=pid, encounter=s["encounter"]))
    cards: list[dict[str, Any]] = response.json["cards"]
    return cards


def _feedback(client: Any, token: TokenFactory, body: Any, service: str = SIGN) -> Any:
    path = f"/cds-services/{service}/feedback"
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(path, data=data, headers={"Authorization": f"Bearer {token(path)}"})


def test_feedback_is_stored_once_and_reported(client: Any, token: TokenFactory) -> None:
    uhc = _cards(client, token, "uhc-01")
    cigna = _cards(client, token, "cigna-01")
    units = cigna[0]
    goal = next(c for c in uhc if c["source"]["topic"]["code"] == "note.functional-goal")
    skilled = next(c for c in uhc if c["source"]["topic"]["code"] == "note.skilled-need")
    accepted = {
        "card": units["uuid"],
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": units["suggestions"][0]["uuid"]}],
        "outcomeTimestamp": "2026-12-03T16:00:00Z",
    }
    overridden = {
        "card": goal["uuid"],
        "outcome": "overridden",
        "overrideReason": {"reason": goal["overrideReasons"][0], "userComment": "goal is in the evaluation note"},
        "outcomeTimestamp": "2026-12-03T16:01:00Z",
    }
    overridden2 = {
        "card": skilled["uuid"],
        "outcome": "overridden",
        "overrideReason": {"reason": skilled["overrideReasons"][1]},
        "outcomeTimestamp": "2026-12-03T16:02:00Z",
    }
    body = {"feedback": [accepted, overridden, overridden2]}
    for _ in range(3):  # the same feedback may arrive more than once
        response = _feedback(client, token, body)
        assert response.status_code == 200 and response.data == b""
    url = client.application.config["DATABASE_URL"]
    with session_scope(url) as s:
        assert s.scalar(select(func.count()).select_from(CdsFeedback)) == 3
        row = s.scalar(select(CdsFeedback).where(CdsFeedback.card_uuid == goal["uuid"]))
        assert row is not None and row.override_display == "Documented in a linked note not sent"
        assert row.user_comment == "goal is in the evaluation note"

    out = io.StringIO()
    assert main(["feedback-report", "--format", "json", "--database", url], out=out) == 0
    report = orjson.loads(out.getvalue())
    assert not list(REPORT_SCHEMA.iter_errors(report))
    rows = {r["criterion"]: r for r in report["criteria"]}
    assert rows["units.billed-vs-supported"]["accept_rate"] == 1.0
    assert rows["note.functional-goal"]["override_rate"] == 1.0
    assert rows["note.functional-goal"]["override_reasons"] == [
        {"reason": "Documented in a linked note not sent", "count": 1}
    ]
    assert rows["note.modifications"]["feedback"] == 0 and rows["note.modifications"]["accept_rate"] is None
    assert report["totals"] == {"cards_issued": len(uhc) + len(cigna), "feedback": 3, "accepted": 1, "overridden": 2}

    text = io.StringIO()
    assert main(["feedback-report", "--database", url], out=text) == 0
    assert "note.functional-goal" in text.getvalue() and "overridden: Payer contract differs ×1" in text.getvalue()


def test_feedback_on_an_unknown_card_is_refused(client: Any, token: TokenFactory) -> None:
    item = {"card": "not-ours", "outcome": "accepted", "outcomeTimestamp": "2026-12-03T16:00:00Z"}
    response = _feedback(client, token, {"feedback": [item]})
    assert response.status_code == 400 and response.json["issue"][0]["expression"] == ["feedback[0].card"]


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        {"feedback": []},
        {"feedback": [{"outcome": "accepted", "outcomeTimestamp": "t"}]},
        {"feedback": [{"card": "x", "outcome": "ignored", "outcomeTimestamp": "t"}]},
        {"feedback": [{"card": "x", "outcome": "accepted"}]},
        {"feedback": [{"card": "x", "outcome": "accepted", "outcomeTimestamp": "t", "acceptedSuggestions": ["a"]}]},
        {"feedback": [{"card": "x", "outcome": "overridden", "outcomeTimestamp": "t", "overrideReason": "x"}]},
    ],
)
def test_malformed_feedback_is_400(client: Any, token: TokenFactory, body: Any) -> None:
    response = _feedback(client, token, body)
    assert response.status_code == 400 and response.json["resourceType"] == "OperationOutcome"


def test_feedback_needs_a_valid_token_and_a_known_service(client: Any, token: TokenFactory) -> None:
    item = {"feedback": [{"card": "x", "outcome": "accepted", "outcomeTimestamp": "t"}]}
    path = f"/cds-services/{SIGN}/feedback"
    assert client.post(path, json=item).status_code == 401
    assert _feedback(client, token, item, service="nope").status_code == 404
