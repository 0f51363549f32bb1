"""Helpers for appeal tests: loading fixture charts and making synthetic denials from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ptguard.fhir.load import LoadResult, load_path

FIXTURES = Path(__file__).resolve().parents[2] / "fhir_fixtures"
CARC = "https://x12.org/codes/claim-adjustment-reason-codes"
RARC = "https://x12.org/codes/remittance-advice-remark-codes"


def load_fixture(name: str) -> LoadResult:
    return load_path(FIXTURES / name)


def denial_for(
    load: LoadResult,
    claim_id: str,
    reasons: list[tuple[str, str]],
    new_id: str,
    *,
    created: str = "2026-11-20T08:15:00-05:00",
) -> LoadResult:
    """A copy of the load plus a ClaimResponse denying every line of `claim_id` for the given (code, group) reasons."""
    out = LoadResult(source=load.source)
    for res, url in zip(load.resources, load.full_urls, strict=False):
        out.add(res, url)
    claim = next(r for r in load.resources if r.get("resourceType") == "Claim" and r.get("id") == claim_id)
    items = []
    for item in claim["item"]:
        amount = item.get("net", {}).get("value", 100.0)
        cat = "http://terminology.hl7.org/CodeSystem/adjudication"
        items.append(
            {
                "itemSequence": item["sequence"],
                "adjudication": [
                    {
                        "category": {"coding": [{"system": cat, "code": "submitted"}]},
                        "amount": {"value": amount, "currency": "USD"},
                    },
                    {
                        "category": {"coding": [{"system": cat, "code": "benefit"}]},
                        "amount": {"value": 0.0, "currency": "USD"},
                    },
                    {
                        "category": {
                            "coding": [
                                {
                                    "system": "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudicationDiscriminator",
                                    "code": "denialreason",
                                }
                            ]
                        },
                        "reason": {
                            "coding": [
                                {"system": RARC if code[0] in "MN" else CARC, "code": code} for code, _ in reasons
                            ]
                        },
                        "extension": [
                            {
                                "url": "https://ptguard.dev/fhir/StructureDefinition/adjudication-group",
                                "valueCodeableConcept": {
                                    "coding": [
                                        {
                                            "system": "https://x12.org/codes/claim-adjustment-group-codes",
                                            "code": reasons[0][1],
                                        }
                                    ]
                                },
                            }
                        ],
                        "amount": {"value": amount, "currency": "USD"},
                    },
                ],
            }
        )
    cr: dict[str, Any] = {
        "resourceType": "ClaimResponse",
        "id": new_id,
        "status": "active",
        "use": "claim",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "patient": claim["patient"],
        "created": created,
        "insurer": {"display": "Test payer"},
        "request": {"reference": f"Claim/{claim_id}"},
        "outcome": "complete",
        "item": items,
    }
    out.add(cr, f"urn:uuid:{new_id}")
    return out
