"""Huge CDS input: the body size is capped (413), and a huge note is cut before the rules scan it."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import orjson
from cdshelpers import SCENARIOS, Keys, TokenFactory, fake_for, full_prefetch, hook_request, issuers_config, patient_of

from ptguard.cds import SERVICES, parse_request, run_check

SIGN = "ptguard-97530-signing"
PATH = f"/cds-services/{SIGN}"


def _cigna() -> tuple[dict[str, Any], str, str]:
    s = next(x for x in SCENARIOS if x["id"] == "cigna-01")
    fake = fake_for("cigna-01")
    pid, enc = patient_of(fake, s["encounter"]), s["encounter"]
    ctx = {"userId": "Practitioner/prac-okafor", "patientId": pid, "encounterId": enc}
    return full_prefetch(fake, SIGN, ctx), pid, enc


def _with_big_note(chars: int) -> dict[str, Any]:
    prefetch, pid, enc = _cigna()
    sentence = "Patient lifted a 15 lb crate floor to waist 10 reps with cues for hip hinge, tolerated well. "
    text = (sentence * (chars // len(sentence) + 1))[:chars]
    data = base64.b64encode(text.encode()).decode()
    for entry in prefetch["notes"]["entry"]:
        for content in entry["resource"]["content"]:
            content["attachment"] = {"contentType": "text/plain", "data": data}
    return hook_request(SIGN, patient=pid, encounter=enc, prefetch=prefetch, server=None)


def test_body_over_the_cds_limit_is_413(client: Any, token: TokenFactory) -> None:
    body = orjson.dumps({"hook": "encounter-discharge", "pad": "x" * (11 * 1024 * 1024)})
    response = client.post(
        PATH, data=body, headers={"Authorization": f"Bearer {token(PATH)}", "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json["resourceType"] == "OperationOutcome"
    assert response.json["issue"][0]["code"] == "too-long"
    assert response.headers["Access-Control-Allow-Origin"]


def test_body_limit_is_configurable(tmp_path: Path, keys: Keys, token: TokenFactory) -> None:
    from webapp import create_app

    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'b.sqlite3'}",
            "CDS_ISSUERS": issuers_config(keys),
            "PUBLIC_BASE_URL": None,
            "CDS_MAX_BODY_BYTES": 1000,
        }
    )
    body = orjson.dumps(_with_big_note(2000))
    response = app.test_client().post(
        PATH, data=body, headers={"Authorization": f"Bearer {token(PATH)}", "Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_huge_note_is_truncated_before_the_rules_scan_it() -> None:
    body = _with_big_note(6_000_000)
    assert len(orjson.dumps(body)) < 10 * 1024 * 1024  # under the body limit: the chart reader must cope
    started = time.monotonic()
    result = run_check(SERVICES[SIGN], parse_request(body, SERVICES[SIGN]), budget_ms=400)
    elapsed = time.monotonic() - started
    assert result.evaluation is not None
    truncated = [f for f in result.evaluation.findings if f.id == "data-quality.note-truncated"]
    assert truncated and truncated[0].message == "note truncated to 100000 characters for checking"
    assert all(len(n.text) <= 100_000 for n in result.evaluation.visit.notes)
    assert elapsed < 2.0, f"{elapsed:.1f} s"
