"""Denial decoding on our fixtures and the public ClaimResponse/EOB examples, and deadline arithmetic."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from ptguard.check import load_inputs
from ptguard.denials.deadlines import compute_deadline, next_level, payer_type
from ptguard.denials.decode import decode
from ptguard.errors import InputError, NotFoundError
from ptguard.fhir import codes
from ptguard.fhir.load import load_path
from ptguard.fhir.refs import ResourceIndex
from tests.shared_data import PUBLIC_FHIR, require

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = PUBLIC_FHIR


@pytest.fixture(scope="module")
def clinic() -> ResourceIndex:
    return ResourceIndex.from_load(load_inputs([ROOT / "fhir_fixtures"]))


def test_carc_50_is_a_medical_necessity_appeal(clinic: ResourceIndex) -> None:
    d = decode(clinic.get("ClaimResponse", "cr-aetna-01") or {}, index=clinic)
    assert d.denied and d.category == "medical-necessity" and d.path == "appeal"
    assert d.claim_reference == "Claim/claim-aetna-01"
    [line] = d.denied_lines
    assert line.code == "97530" and line.status == "denied" and "GP" in line.modifiers
    carc = next(r for r in line.reasons if r.kind == "CARC")
    assert (carc.code, carc.group, carc.system) == ("50", "CO", codes.CARC)
    assert "medically necessary" in (carc.meaning or "")
    assert d.to_dict()["lines"][0]["reasons"][0]["code"] == "50"


def test_bundling_denial_keeps_the_paid_line_apart(clinic: ResourceIndex) -> None:
    d = decode(clinic.get("ClaimResponse", "cr-bcbs-01") or {}, index=clinic)
    assert d.category == "bundling" and d.path == "appeal"
    assert [(ln.code, ln.status) for ln in d.lines] == [("97140", "paid"), ("97530", "denied")]
    assert set(d.codes()) >= {"97", "M80"}


def test_ma130_means_resubmit_never_appeal() -> None:
    cr = {
        "resourceType": "ClaimResponse",
        "id": "x",
        "outcome": "error",
        "extension": [
            {
                "url": "https://ptguard.dev/fhir/StructureDefinition/remark-code",
                "valueCodeableConcept": {"coding": [{"system": codes.RARC, "code": "MA130"}]},
            }
        ],
        "item": [
            {
                "itemSequence": 1,
                "adjudication": [
                    {"category": {"coding": [{"code": "submitted"}]}, "amount": {"value": 100}},
                    {"category": {"coding": [{"code": "benefit"}]}, "amount": {"value": 0}},
                    {
                        "category": {"coding": [{"code": "denialreason"}]},
                        "reason": {
                            "coding": [
                                {
                                    "system": "http://www.wpc-edi.com/reference/codelists/healthcare/claim-adjustment-reason-codes",
                                    "code": "16",
                                }
                            ]
                        },
                    },
                ],
            }
        ],
    }
    d = decode(cr)
    assert d.path == "resubmit" and d.category == "unprocessable" and "MA130" in d.why
    medicare = decode({**cr, "extension": []}, payer_hint="medicare")
    assert medicare.path == "reopen" and "405.980" in medicare.why


def test_pas_review_action_denial_with_outcome_complete() -> None:
    res = load_path(PUBLIC / "davinci-pas" / "v2.2.1-package-examples" / "ClaimResponse-RejectionResponseExample.json")
    d = decode(res.resources[0])
    assert res.resources[0]["outcome"] == "complete"
    assert d.denied and d.category == "authorization" and d.lines[0].review_action == "A3"


def test_public_examples_decode_without_crashing() -> None:
    seen: dict[str, int] = {".json": 0, ".ndjson": 0, ".xml": 0}
    files = sorted(p for p in require(PUBLIC).rglob("*") if p.suffix in seen)
    assert {p.suffix for p in files} == set(seen), "the public folder has JSON, NDJSON and XML files"
    for path in files:
        result = load_path(path)
        for r in result.resources:
            if r.get("resourceType") in {"ClaimResponse", "ExplanationOfBenefit"}:
                d = decode(r, index=ResourceIndex.from_load(result))
                assert d.path in {"appeal", "reopen", "resubmit", "none"}, path
                seen[path.suffix] += 1
    assert seen[".json"] > 50, seen
    # FHIR XML: the base spec's claimresponse-example(-2) and explanationofbenefit-example, and the two Da Vinci
    # PAS response Bundles (their ClaimResponse entries); the loader turns them into the same JSON shape.
    assert seen[".xml"] >= 5, seen


def test_wrong_type_is_refused() -> None:
    with pytest.raises(InputError, match="got Patient"):
        decode({"resourceType": "Patient"})


def test_medicare_deadline_uses_receipt_presumption() -> None:
    d = compute_deadline("medicare", date(2026, 11, 20), today=date(2026, 12, 3))
    assert d.level == "redetermination" and d.due == date(2027, 3, 25)  # 5 + 120 days
    assert d.rule.startswith("42 CFR 405.942") and "presumed 5 days" in d.basis and d.days_left == 112


def test_commercial_and_external_review_deadlines() -> None:
    assert compute_deadline("aetna", date(2026, 11, 20), today=date(2026, 12, 3)).due == date(2027, 5, 19)
    ext = compute_deadline("uhc", date(2026, 10, 31), today=date(2026, 12, 3), level="external-review")
    assert ext.due == date(2027, 2, 28)  # 4 months, clamped to the month's end
    assert next_level("commercial", "internal-appeal", date(2026, 11, 1)) == "external-review"


def test_medicare_advantage_changed_in_2019_and_contract_override() -> None:
    assert compute_deadline("medicare-advantage", date(2018, 6, 1), today=date(2018, 6, 2)).due == date(2018, 7, 31)
    assert compute_deadline("medicare-advantage", date(2026, 6, 1), today=date(2026, 6, 2)).due == date(2026, 8, 5)
    over = compute_deadline(
        "molina", date(2026, 1, 1), today=date(2026, 1, 2), contract={"molina": {"internal-appeal": 365}}
    )
    assert over.contract_override and over.due == date(2027, 1, 1) and "contract" in over.rule
    assert payer_type("medicaid-mco") == "medicaid-mco"
    with pytest.raises(NotFoundError):
        compute_deadline("aetna", date(2026, 1, 1), today=date(2026, 1, 2), level="alj")


def test_no_level_in_effect_is_a_clear_error() -> None:
    with pytest.raises(NotFoundError, match="1999"):
        compute_deadline("medicaid-mco", date(1999, 1, 1), today=date(1999, 1, 2))
