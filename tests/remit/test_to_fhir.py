"""Tests for the 835 → FHIR R4 mapping: exact expectations on our fixtures, R4B validation everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.claimresponse import ClaimResponse
from fhir.resources.R4B.paymentreconciliation import PaymentReconciliation

from ptguard.fhir.codes import C4BB_ADJUDICATION_DISCRIMINATOR, CARC, CPT, GROUP, HCPCS, RARC
from ptguard.remit.to_fhir import (
    CLAIM_CONTROL_NUMBER,
    EXT_GROUP,
    EXT_MODIFIER,
    EXT_PRODUCT,
    EXT_REMARK,
    EXT_SOURCE,
    EXT_UNITS_PAID,
    PAYER_CLAIM_CONTROL_NUMBER,
    remittance_to_fhir,
)
from ptguard.remit.x12 import X12Error, read_835
from tests.shared_data import PUBLIC_X12, require

FIXTURES = Path(__file__).parent / "fixtures"
PUBLIC = PUBLIC_X12


def _map(name: str) -> list[dict[str, Any]]:
    result = read_835((FIXTURES / name).read_bytes(), name)
    assert result.ok
    out: list[dict[str, Any]] = []
    for rem in result.remittances:
        out.extend(remittance_to_fhir(rem, raw_reference="DocumentReference/raw-835"))
    return out


def _validate(resource: dict[str, Any]) -> None:
    model = ClaimResponse if resource["resourceType"] == "ClaimResponse" else PaymentReconciliation
    model.model_validate(resource)


def _ext(node: dict[str, Any], url: str) -> list[Any]:
    return [e for e in node.get("extension", []) if e["url"] == url]


def _codes(concept: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in concept["coding"]]


def _cas(adjs: list[dict[str, Any]]) -> list[tuple[str, str, float, Any]]:
    """(group, CARC, amount, quantity) of the adjudications that carry a CARC."""
    out = []
    for a in adjs:
        if "reason" not in a:
            continue
        group = _ext(a, EXT_GROUP)[0]["valueCodeableConcept"]["coding"][0]
        assert group["system"] == GROUP
        reason = a["reason"]["coding"][0]
        assert reason["system"] == CARC
        out.append((group["code"], reason["code"], a["amount"]["value"], a.get("value")))
    return out


def _amount(adjs: list[dict[str, Any]], code: str) -> float:
    return next(a["amount"]["value"] for a in adjs if a["category"]["coding"][0]["code"] == code)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.835")))
def test_fixture_resources_validate(name: str) -> None:
    for res in _map(name):
        _validate(res)


def test_public_mapping_validates() -> None:
    require(PUBLIC)
    count = 0
    for path in sorted(PUBLIC.rglob("*")):
        if not path.is_file() or path.suffix == ".md":
            continue
        try:
            result = read_835(path.read_bytes(), path.name)
        except X12Error:
            continue
        for rem in result.remittances:
            for res in remittance_to_fhir(rem, raw_reference=None):
                _validate(res)
                count += 1
    assert count > 500


def test_aetna_01_co50_denial() -> None:
    cr, pr = _map("aetna-01.835")
    assert cr["resourceType"] == "ClaimResponse" and pr["resourceType"] == "PaymentReconciliation"
    assert (cr["status"], cr["use"], cr["outcome"], cr["disposition"]) == ("active", "claim", "complete", "Denied")
    assert cr["type"]["coding"][0]["code"] == "professional"
    assert cr["request"]["identifier"] == {"system": CLAIM_CONTROL_NUMBER, "value": "claim-aetna-01"}
    assert {"system": PAYER_CLAIM_CONTROL_NUMBER, "value": "AET26310000123"} in cr["identifier"]
    assert cr["patient"]["display"] == "GREGORY WHITFIELD"
    assert cr["patient"]["identifier"]["value"] == "W-TEST-4410291"
    assert cr["insurer"]["display"] == "AETNA LIFE INSURANCE COMPANY"
    assert cr["created"] == "2026-11-20"
    assert _ext(cr, EXT_SOURCE)[0]["valueReference"] == {"reference": "DocumentReference/raw-835"}
    (item,) = cr["item"]
    assert item["itemSequence"] == 1
    product = _ext(item, EXT_PRODUCT)[0]["valueCodeableConcept"]
    assert _codes(product) == [(CPT, "97530")] and product["text"] == "97530 GP"
    assert [_codes(m["valueCodeableConcept"]) for m in _ext(item, EXT_MODIFIER)] == [[(HCPCS, "GP")]]
    assert _ext(item, EXT_UNITS_PAID)[0]["valueQuantity"] == {"value": 3.0}
    assert _amount(item["adjudication"], "submitted") == 195.0
    assert _amount(item["adjudication"], "benefit") == 0.0
    assert _cas(item["adjudication"]) == [("CO", "50", 195.0, None)]
    denial = next(a for a in item["adjudication"] if "reason" in a)
    assert _codes(denial["category"]) == [(C4BB_ADJUDICATION_DISCRIMINATOR, "denialreason")]
    assert [_codes(e["valueCodeableConcept"]) for e in _ext(item, EXT_REMARK)] == [[(RARC, "N130")]]
    assert item["noteNumber"] == [1]
    assert cr["processNote"] == [{"number": 1, "type": "display", "text": "RARC N130 (LQ*HE on line 1, 97530)"}]
    assert [(t["category"]["coding"][0]["code"], t["amount"]["value"]) for t in cr["total"]] == [
        ("submitted", 195.0),
        ("benefit", 0.0),
    ]
    assert cr["payment"]["amount"]["value"] == 0.0 and cr["payment"]["date"] == "2026-11-20"
    assert pr["paymentAmount"] == {"value": 0.0, "currency": "USD"}
    assert pr["detail"][0]["response"] == {"reference": f"ClaimResponse/{cr['id']}"}


def test_bcbs_97_and_236_partial() -> None:
    cr1, cr2, _pr = _map("bcbs-97-236.835")
    assert cr1["outcome"] == "partial" and cr1["disposition"] == "Processed as primary"
    line1, line2 = cr1["item"]
    assert _cas(line1["adjudication"]) == [("CO", "45", 1.0, None), ("PR", "2", 23.8, None)]
    assert _amount(line1["adjudication"], "eligible") == 119.0
    assert [_codes(m["valueCodeableConcept"]) for m in _ext(line2, EXT_MODIFIER)] == [[(CPT, "59")], [(HCPCS, "GP")]]
    assert _cas(line2["adjudication"]) == [("CO", "97", 130.0, None)]
    assert [_codes(e["valueCodeableConcept"]) for e in _ext(line2, EXT_REMARK)] == [[(RARC, "M80")]]
    assert _cas(cr2["item"][1]["adjudication"]) == [("CO", "236", 130.0, None)]
    assert _codes(_ext(cr2["item"][0], EXT_PRODUCT)[0]["valueCodeableConcept"]) == [(CPT, "97110")]


def test_uhc_151_unit_reduction() -> None:
    cr, _pr = _map("uhc-151.835")
    line = cr["item"][0]
    assert _cas(line["adjudication"]) == [("CO", "151", 55.0, 1.0)]
    units = next(a for a in line["adjudication"] if a["category"]["coding"][0]["code"] == "allowedunits")
    assert units["value"] == 2.0
    assert cr["outcome"] == "partial"


def test_medicare_ma130_unprocessable() -> None:
    cr, _pr = _map("medicare-ma130.835")
    assert cr["outcome"] == "error" and cr["disposition"] == "Denied"
    assert _cas(cr["adjudication"]) == [("CO", "16", 170.0, None)]
    assert [_codes(e["valueCodeableConcept"]) for e in _ext(cr, EXT_REMARK)] == [[(RARC, "MA130")], [(RARC, "N290")]]
    assert [n["text"] for n in cr["processNote"]] == ["RARC MA130 (MOA, claim level)", "RARC N290 (MOA, claim level)"]
    mods = [_codes(m["valueCodeableConcept"]) for m in _ext(cr["item"][0], EXT_MODIFIER)]
    assert mods == [[(HCPCS, "GP")], [(HCPCS, "KX")]]


def test_reversal_correction_and_plb() -> None:
    rev, corr, pr = _map("cigna-reversal.835")
    assert (rev["disposition"], rev["outcome"]) == ("Reversal of previous payment", "complete")
    assert rev["total"][1]["amount"]["value"] == -160.0
    assert _cas(rev["item"][0]["adjudication"]) == [("CO", "45", -30.0, None), ("PR", "2", -15.0, None)]
    assert corr["request"] == rev["request"] and corr["id"] != rev["id"]
    assert pr["paymentAmount"]["value"] == 30.5
    assert pr["paymentIdentifier"]["value"] == "CIG26112500301"
    plb = [d for d in pr["detail"] if d["type"]["coding"][0]["code"] == "adjustment"]
    assert [(d["type"]["coding"][1]["code"], d["amount"]["value"]) for d in plb] == [("L6", 0.5), ("WO", -10.0)]
    assert [d["amount"]["value"] for d in pr["detail"]] == [-160.0, 200.0, 0.5, -10.0]
    assert sum(d["amount"]["value"] for d in pr["detail"]) == pytest.approx(30.5)


def test_ids_are_stable_across_reads() -> None:
    first = [r["id"] for r in _map("bcbs-97-236.835")]
    assert first == [r["id"] for r in _map("bcbs-97-236.835")]
    assert len(set(first)) == 3
