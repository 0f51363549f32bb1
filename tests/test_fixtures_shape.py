"""Shape checks for fhir_fixtures/: transaction Bundles, resolvable references, unique slugs, scenarios."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures"
FILES = sorted(FIXTURES.glob("*.json"))
FIXTURE_ID = "https://ptguard.dev/fixture-id"
SHARED_TYPES = {"Organization", "Practitioner", "PractitionerRole"}
VOCABULARY = {
    "note.activity-specific",
    "note.equipment-setup",
    "note.patient-response",
    "note.objective-measures",
    "note.modifications",
    "note.functional-goal",
    "note.distinct-from-other-codes",
    "note.dynamic-functional",
    "note.skilled-need",
    "note.why-not-home-program",
    "units.billed-vs-supported",
    "ncci.pair-modifier",
    "ncci.payer-bypass-risk",
    "modifier.therapy-discipline",
    "modifier.assistant",
    "medicare.kx-threshold",
    "poc.certification",
    "progress-report.due",
}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    return data


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _slug(resource: dict[str, Any]) -> str:
    values = [i["value"] for i in resource.get("identifier", []) if i.get("system") == FIXTURE_ID]
    assert len(values) == 1, f"{resource.get('resourceType')}/{resource.get('id')} needs one fixture-id"
    return str(values[0])


def test_fixture_files_exist() -> None:
    assert (FIXTURES / "clinic-shared.json") in FILES
    assert len(FILES) >= 12


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_transaction_bundle_entries(path: Path) -> None:
    bundle = _load(path)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "transaction"
    assert bundle["entry"], "empty bundle"
    for entry in bundle["entry"]:
        res = entry["resource"]
        slug = _slug(res)
        assert res["id"] == slug
        expected = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'https://ptguard.dev/fixture/' + slug)}"
        assert entry["fullUrl"] == expected
        assert entry["request"] == {
            "method": "POST",
            "url": res["resourceType"],
            "ifNoneExist": f"identifier={FIXTURE_ID}|{slug}",
        }


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_references_resolve_within_bundle(path: Path) -> None:
    bundle = _load(path)
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    dangling = sorted({r for r in _references(bundle) if r not in full_urls})
    assert not dangling, f"{path.name}: unresolved references {dangling}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_slugs_unique_within_bundle(path: Path) -> None:
    slugs = [_slug(e["resource"]) for e in _load(path)["entry"]]
    assert len(slugs) == len(set(slugs))


def test_slugs_unique_across_files() -> None:
    seen: dict[str, tuple[str, bytes]] = {}
    for path in FILES:
        for entry in _load(path)["entry"]:
            res = entry["resource"]
            slug = _slug(res)
            body = orjson.dumps(res, option=orjson.OPT_SORT_KEYS)
            if slug in seen:
                first, first_body = seen[slug]
                # Only shared resources may repeat, and then with identical content (idempotent create).
                assert res["resourceType"] in SHARED_TYPES, f"{slug} in {first} and {path.name}"
                assert body == first_body, f"{slug} differs between {first} and {path.name}"
            else:
                seen[slug] = (path.name, body)


def test_scenarios_name_existing_encounters() -> None:
    doc = yaml.safe_load((FIXTURES / "scenarios.yaml").read_text(encoding="utf-8"))
    scenarios = doc["scenarios"]
    assert len(scenarios) >= 11
    assert len({s["encounter"] for s in scenarios}) == len(scenarios)
    payers = set()
    for s in scenarios:
        path = FIXTURES / s["file"]
        assert path.exists(), s["file"]
        resources = {e["resource"]["id"]: e["resource"] for e in _load(path)["entry"]}
        enc = resources.get(s["encounter"])
        assert enc is not None and enc["resourceType"] == "Encounter", s["encounter"]
        payer_ids = {
            i["value"]
            for r in resources.values()
            if r["resourceType"] == "Organization"
            for i in r["identifier"]
            if i["system"] == "https://ptguard.dev/payer-id"
        }
        assert s["payer"] in payer_ids
        assert set(s["intended_problems"]) <= VOCABULARY
        payers.add(s["payer"])
    assert len(payers) >= 6
