"""Data problems that stop a billing check (units, claim lines, minutes) become a warning card, never silence."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import responses
from cdshelpers import SCENARIOS, TokenFactory, assert_valid_response, fake_for, full_prefetch, hook_request, patient_of
from cdshelpers import post as _post

SIGN = "ptguard-97530-signing"
SUMMARY = "97530: billed units could not be checked"


def _cigna() -> tuple[dict[str, Any], str, str]:
    s = next(x for x in SCENARIOS if x["id"] == "cigna-01")
    fake = fake_for("cigna-01")
    pid, enc = patient_of(fake, s["encounter"]), s["encounter"]
    ctx = {"userId": "Practitioner/prac-okafor", "patientId": pid, "encounterId": enc}
    return full_prefetch(fake, SIGN, ctx), pid, enc


def _97530_items(prefetch: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for entry in prefetch["claims"]["entry"]:
        for item in entry["resource"].get("item") or []:
            if any(c.get("code") == "97530" for c in item["productOrService"]["coding"]):
                out.append(item)
    assert out
    return out


def _call(client: Any, token: TokenFactory, prefetch: dict[str, Any], pid: str, enc: str) -> list[dict[str, Any]]:
    with responses.RequestsMock(assert_all_requests_are_fired=False):
        response = _post(client, token, SIGN, hook_request(SIGN, patient=pid, encounter=enc, prefetch=prefetch))
    assert response.status_code == 200
    assert_valid_response(response.json)
    cards: list[dict[str, Any]] = response.json["cards"]
    return cards


def test_baseline_has_the_units_card_and_no_blocker(client: Any, token: TokenFactory) -> None:
    prefetch, pid, enc = _cigna()
    cards = _call(client, token, prefetch, pid, enc)
    assert not [c for c in cards if c["summary"].startswith(SUMMARY)]


@pytest.mark.parametrize("quantity", [{"value": 300}, {"value": -5}, {"value": "3"}, "3"])
def test_unusable_billed_quantity_gives_a_warning_card(client: Any, token: TokenFactory, quantity: Any) -> None:
    prefetch, pid, enc = _cigna()
    for item in _97530_items(prefetch):
        item["quantity"] = copy.deepcopy(quantity)
    cards = _call(client, token, prefetch, pid, enc)
    blockers = [c for c in cards if c["summary"].startswith(SUMMARY)]
    assert len(blockers) == 1, [c["summary"] for c in cards]
    card = blockers[0]
    assert card["indicator"] == "warning"
    assert card["summary"] == f"{SUMMARY} — the claim line's quantity is not a usable number of units"
    assert card["source"]["topic"]["code"] == "data-quality.bad-units"
    assert "300" not in card["detail"] and "-5" not in card["detail"]


def test_unreadable_claim_items_give_a_warning_card(client: Any, token: TokenFactory) -> None:
    prefetch, pid, enc = _cigna()
    prefetch["claims"]["entry"][0]["resource"]["item"] = {"not": "a list"}
    cards = _call(client, token, prefetch, pid, enc)
    blockers = [c for c in cards if c["source"]["topic"]["code"] == "data-quality.bad-claim-items"]
    assert len(blockers) == 1
    assert blockers[0]["summary"].startswith(SUMMARY)


def test_implausible_minutes_on_the_billed_code(client: Any, token: TokenFactory) -> None:
    prefetch, pid, enc = _cigna()
    changed = 0
    for entry in prefetch["procedures"]["entry"]:
        proc = entry["resource"]
        if any(c.get("code") == "97530" for c in proc["code"]["coding"]):
            proc.pop("extension", None)
            proc["performedPeriod"] = {"start": "2026-01-05T09:00:00-05:00", "end": "2026-01-07T09:00:00-05:00"}
            changed += 1
    assert changed
    cards = _call(client, token, prefetch, pid, enc)
    codes = {c["source"]["topic"]["code"] for c in cards if c["summary"].startswith(SUMMARY)}
    assert codes & {"data-quality.implausible-minutes", "data-quality.no-minutes"}, [c["summary"] for c in cards]
