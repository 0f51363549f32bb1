"""Each synthetic-clinic scenario yields exactly the problems it was written to contain, with precise messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ptguard.check import CheckReport, run_check
from ptguard.rules.engine import Evaluation

FIXTURES = Path(__file__).resolve().parents[2] / "fhir_fixtures"
SCENARIOS: list[dict[str, Any]] = yaml.safe_load((FIXTURES / "scenarios.yaml").read_text())["scenarios"]


@pytest.fixture(scope="module")
def report() -> CheckReport:
    return run_check([FIXTURES])


def _eval(report: CheckReport, encounter: str) -> Evaluation:
    found = [e for e in report.evaluations if e.visit.encounter_id == encounter]
    assert len(found) == 1, encounter
    return found[0]


def _finding(ev: Evaluation, ident: str) -> Any:
    return next(f for f in ev.findings if f.id == ident)


def test_fixture_clinic_is_big_enough(report: CheckReport) -> None:
    payers = {s["payer"] for s in SCENARIOS}
    assert len(SCENARIOS) >= 8 and len(payers) >= 5
    assert not report.data_quality


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["id"] for s in SCENARIOS])
def test_scenario_problems(report: CheckReport, scenario: dict[str, Any]) -> None:
    ev = _eval(report, scenario["encounter"])
    assert ev.payer.payer == scenario["payer"]
    problems = sorted(f.id for f in ev.problems if f.category != "data-quality")
    assert problems == sorted(scenario["intended_problems"])


def test_units_message_is_precise(report: CheckReport) -> None:
    f = _finding(_eval(report, "enc-cigna-01"), "units.billed-vs-supported")
    assert f.status == "missing" and f.severity == "critical"
    assert f.message == "97530: 31 timed minutes support 2 units, 3 billed"
    assert any(e.reference.startswith("Procedure/") for e in f.evidence)
    assert any(e.reference.startswith("Claim/") for e in f.evidence)


def test_exercise_note_is_quoted(report: CheckReport) -> None:
    f = _finding(_eval(report, "enc-uhc-01"), "note.dynamic-functional")
    assert f.severity == "critical"
    assert "reads like therapeutic exercise" in f.message and "squats" in f.message
    assert f.evidence and f.evidence[0].reference.startswith("DocumentReference/")


def test_well_documented_visit_quotes_its_evidence(report: CheckReport) -> None:
    ev = _eval(report, "enc-aetna-01")
    goal = _finding(ev, "note.functional-goal")
    assert goal.status == "met"
    assert goal.citation is not None and goal.citation.number == "CPB 0325"
    refs = [e.reference for e in goal.evidence]
    assert any(r.startswith("DocumentReference/") for r in refs)
    assert any(r.startswith("Goal/") for r in refs), "the goal sentence should be tied to the Goal resource"
    assert ev.units.units == {"97530": 3}


def test_ncci_pair_and_payer_risk(report: CheckReport) -> None:
    bcbs = _finding(_eval(report, "enc-bcbs-01"), "ncci.pair-modifier")
    assert bcbs.status == "missing" and "97140" in bcbs.message and "59" in bcbs.message
    anthem = _eval(report, "enc-anthem-01")
    assert _finding(anthem, "ncci.pair-modifier").status == "met"
    risk = _finding(anthem, "ncci.payer-bypass-risk")
    assert risk.status == "at-risk" and "Anthem" in risk.message


def test_medicare_rules(report: CheckReport) -> None:
    cq = _finding(_eval(report, "enc-medicare-01"), "modifier.assistant")
    assert "CQ" in cq.message and cq.data["add"] == [{"code": "97530", "modifier": "CQ"}]
    kx = _finding(_eval(report, "enc-medicare-02"), "medicare.kx-threshold")
    assert "$2,480" in kx.message and kx.data["ytd_before"] > 2480
    poc = _finding(_eval(report, "enc-medicare-03"), "poc.certification")
    assert "2026-10-17" in poc.message
    pr = _finding(_eval(report, "enc-medicare-04"), "progress-report.due")
    assert "treatment day 11" in pr.message


def test_payer_override_changes_criteria() -> None:
    report = run_check([FIXTURES / "patient-cigna-nakamura.json"], encounter="enc-cigna-01", payer="medicare")
    ev = report.evaluations[0]
    assert ev.payer.payer == "medicare" and ev.units.method == "cms"
    assert any(f.id == "note.why-not-home-program" for f in ev.findings)
