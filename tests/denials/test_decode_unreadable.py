"""Unreadable ClaimResponse items, adjudications and sequences are data-quality notes, never a silent "No denial"."""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ptguard.appeals.assemble import assemble
from ptguard.appeals.gather import build_source
from ptguard.denials.decode import LINES_UNREADABLE, carc_table, decode
from ptguard.errors import InputError
from ptguard.fhir.load import load_json_value, load_path
from ptguard.remit.denial_output import describe_file
from tests.remit.remit_util import validate

ROOT = Path(__file__).resolve().parents[2]

AETNA = ROOT / "fhir_fixtures" / "patient-aetna-whitfield.json"
TODAY = date(2026, 12, 3)


def _bundle() -> dict[str, Any]:
    return dict(json.loads(AETNA.read_text()))


def _cr(bundle: dict[str, Any]) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ClaimResponse")


def _write(tmp_path: Path, cr: dict[str, Any]) -> Path:
    p = tmp_path / "cr.json"
    p.write_text(json.dumps(cr))
    return p


def test_the_untouched_fixture_is_a_readable_denial() -> None:
    d = decode(_cr(_bundle()))
    assert d.denied and not d.lines_unreadable and d.data_quality == []
    assert d.to_dict()["data_quality"] == []


@pytest.mark.parametrize(
    ("field", "value", "expect"),
    [
        ("item", "x", 'ClaimResponse.item is a string "x", not a list'),
        ("item", [None, 5, "x"], "ClaimResponse.item[0] is null, not an object"),
        ("item", {"itemSequence": 1}, 'ClaimResponse.item is an object {"itemSequence":1}, not a list'),
        ("item", [True, 2.5, [1]], "ClaimResponse.item[0] is true/false true, not an object"),
    ],
)
def test_unreadable_items_on_a_denied_claim_are_not_no_denial(
    tmp_path: Path, field: str, value: Any, expect: str
) -> None:
    cr = copy.deepcopy(_cr(_bundle()))
    cr[field] = value
    (d,) = describe_file(_write(tmp_path, cr), today=TODAY)
    validate(d, "denial-output")
    assert d["denied"] is True and d["lines_unreadable"] is True
    assert d["category"] != "none" and d["category_label"] != "No denial"
    assert ": nothing to appeal" not in d["why"]
    assert "could not be read" in d["why"] and expect in d["why"]
    assert "disposition" in d["why"]  # the signal that says it is a denial
    assert any(expect in f["message"] for f in d["data_quality"])
    assert all(f["id"] == "data-quality.unreadable-adjudication" for f in d["data_quality"])
    if isinstance(value, list):
        assert len(d["data_quality"]) == 3


def test_item_adjudication_not_a_list(tmp_path: Path) -> None:
    cr = copy.deepcopy(_cr(_bundle()))
    cr["item"][0]["adjudication"] = "x"
    (d,) = describe_file(_write(tmp_path, cr), today=TODAY)
    validate(d, "denial-output")
    assert d["denied"] and d["lines_unreadable"]
    assert 'ClaimResponse.item[0].adjudication is a string "x"' in d["data_quality"][0]["message"]
    assert ": nothing to appeal" not in d["why"]


def test_claim_level_adjudication_not_a_list_is_noted(tmp_path: Path) -> None:
    cr = copy.deepcopy(_cr(_bundle()))
    cr["adjudication"] = "x"
    (d,) = describe_file(_write(tmp_path, cr), today=TODAY)
    validate(d, "denial-output")
    assert d["denied"] and d["category"] == "medical-necessity"  # the lines are still read
    assert [f["message"] for f in d["data_quality"]] == ['ClaimResponse.adjudication is a string "x", not a list; '
                                                         "none of it could be read"]


def test_unreadable_items_without_any_denial_signal_do_not_promise_nothing_to_appeal() -> None:
    cr = {"resourceType": "ClaimResponse", "id": "q", "outcome": "complete", "disposition": "Processed", "item": "x"}
    d = decode(cr)
    assert not d.denied and not d.lines_unreadable and d.path == "none"
    assert ": nothing to appeal" not in d.why and "could not be read" in d.why
    assert "before concluding" in d.why
    assert len(d.data_quality) == 1


@pytest.mark.parametrize(
    ("extra", "signal"),
    [
        ({"outcome": "partial"}, "outcome 'partial'"),
        ({"total": [
            {"category": {"coding": [{"code": "submitted"}]}, "amount": {"value": 100}},
            {"category": {"coding": [{"code": "benefit"}]}, "amount": {"value": 0}},
        ]}, "0 paid of 100 submitted"),
        ({"adjudication": [{"category": {"coding": [{"code": "denialreason"}]}, "reason": {"coding": [
            {"system": "https://x12.org/codes/claim-adjustment-reason-codes", "code": "50"}]}}]}, "CARC 50"),
    ],
)
def test_other_denial_signals(extra: dict[str, Any], signal: str) -> None:
    cr = {"resourceType": "ClaimResponse", "id": "q", "outcome": "complete", "item": [None], **extra}
    d = decode(cr)
    assert d.denied and d.lines_unreadable, d.why
    assert signal in d.why


def test_non_numeric_sequence_shows_its_raw_value(tmp_path: Path) -> None:
    cr = copy.deepcopy(_cr(_bundle()))
    cr["item"][0]["itemSequence"] = "abc"
    (d,) = describe_file(_write(tmp_path, cr), today=TODAY)
    validate(d, "denial-output")
    assert d["lines"][0]["sequence"] == "abc"
    assert "abc" in d["data_quality"][0]["message"]
    assert d["denied"] and not d["lines_unreadable"]  # the line itself (CO-50) is still read


def test_a_line_without_any_sequence_shows_a_question_mark() -> None:
    cr = copy.deepcopy(_cr(_bundle()))
    del cr["item"][0]["itemSequence"]
    d = decode(cr)
    assert d.lines[0].sequence is None
    assert d.to_dict()["lines"][0]["sequence"] == "?"


def test_appeal_refuses_lines_it_cannot_read() -> None:
    bundle = _bundle()
    _cr(bundle)["item"] = "x"
    src = build_source(load_json_value(bundle, "aetna.json"))
    with pytest.raises(InputError, match="lines could not be read"):
        assemble(src, today=TODAY)


def test_fixtures_still_decode_without_notes() -> None:
    for path in sorted((ROOT / "fhir_fixtures").glob("patient-*.json")):
        for res in load_path(path).resources:
            if res["resourceType"] in {"ClaimResponse", "ExplanationOfBenefit"}:
                assert decode(res).data_quality == [], path.name


def test_lines_unreadable_is_a_category_of_carc_yaml() -> None:
    cr = {"resourceType": "ClaimResponse", "id": "q", "outcome": "partial", "item": [None]}
    d = decode(cr)
    assert d.category == LINES_UNREADABLE and d.path == "appeal"
    (entry,) = [c for c in carc_table()["categories"] if c["id"] == LINES_UNREADABLE]
    assert d.category_label == entry["label"] == "Lines could not be read"


@pytest.mark.parametrize(
    ("paid", "denied"),
    [
        ([("paidtoprovider", 40)], True),
        ([("paidtopatient", 100)], False),  # the payer paid the patient in full
        ([("benefit", 100), ("paidtopatient", 0)], False),  # the benefit says; paid to the patient only when alone
    ],
)
def test_totals_read_the_paid_categories_in_order(paid: list[tuple[str, int]], denied: bool) -> None:
    totals = [{"category": {"coding": [{"code": "submitted"}]}, "amount": {"value": 100}}]
    totals += [{"category": {"coding": [{"code": c}]}, "amount": {"value": v}} for c, v in paid]
    cr = {"resourceType": "ClaimResponse", "id": "q", "outcome": "complete", "item": [None], "total": totals}
    assert decode(cr).lines_unreadable is denied
