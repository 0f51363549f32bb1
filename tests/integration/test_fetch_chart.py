"""Reading a chart from the real FHIR server gives the same findings as reading the fixture file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptguard.chart import build_visits
from ptguard.check import run_check
from ptguard.fhir.client import FhirClient
from ptguard.fhir.fetch import encounter_queries, fetch
from ptguard.fixtures_load import load_fixtures
from ptguard.rules.engine import evaluate

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parents[2] / "fhir_fixtures"


@pytest.fixture(scope="module")
def loaded(fhir_server: str) -> str:
    with FhirClient(fhir_server) as client:
        load_fixtures(client, FIXTURES)
    return fhir_server


def _server_ids(client: FhirClient, slug: str, rtype: str) -> str:
    found = client.search(rtype, {"identifier": f"https://ptguard.dev/fixture-id|{slug}"})
    assert len(found) == 1
    return str(found[0]["id"])


def test_encounter_chart_from_server_matches_file(loaded: str) -> None:
    with FhirClient(loaded) as client:
        enc_id = _server_ids(client, "enc-cigna-01", "Encounter")
        pat_id = _server_ids(client, "pat-nakamura", "Patient")
        result = fetch(client, encounter_queries(pat_id, enc_id), budget_seconds=5)
    assert result.complete and not result.findings
    _b, visits = build_visits(result.load, encounter_id=enc_id)
    ev = evaluate(visits[0])
    local = run_check([FIXTURES / "patient-cigna-nakamura.json"], encounter="enc-cigna-01").evaluations[0]
    assert ev.payer.payer == "cigna"
    assert sorted(f.id for f in ev.problems) == sorted(f.id for f in local.problems)
    units = next(f for f in ev.findings if f.id == "units.billed-vs-supported")
    assert units.message == "97530: 31 timed minutes support 2 units, 3 billed"


def test_slow_server_is_cut_off_by_the_budget(silent_server: str) -> None:
    with FhirClient(silent_server, timeout=2.0, retries=0) as client:
        result = fetch(client, encounter_queries("p", "e"), budget_seconds=0.3)
    assert not result.complete and result.elapsed_ms < 1000
    assert {f.id for f in result.findings} == {"data-quality.fhir-timeout"}


def test_missing_encounter_is_a_finding(loaded: str) -> None:
    with FhirClient(loaded) as client:
        result = fetch(client, [("encounter", "Encounter/does-not-exist", None)], budget_seconds=5)
    assert [f.id for f in result.findings] == ["data-quality.fhir-not-found"]


def test_load_fixtures_command_is_idempotent(fhir_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from ptguard.cli import main

    out = io.StringIO()
    assert main(["load-fixtures", "--fhir", fhir_server, "--dir", str(FIXTURES)], out=out) == 0
    out2 = io.StringIO()
    assert main(["load-fixtures", "--fhir", fhir_server, "--dir", str(FIXTURES)], out=out2) == 0
    assert " 0 created" in out2.getvalue().splitlines()[-1]
