"""A criterion whose check trips on a visit is a finding of that visit; the other criteria and encounters still run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ptguard.check import run_check
from ptguard.rules import engine

FIXTURES = Path(__file__).resolve().parents[2] / "fhir_fixtures"


def test_one_failing_criterion_is_reported_and_the_rest_still_evaluated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PTGUARD_DEBUG", raising=False)
    baseline = run_check([FIXTURES], encounter="enc-cigna-01").evaluations[0]
    assert any(f.id == "units.billed-vs-supported" for f in baseline.problems)

    def trip(ctx: Any, crit: Any) -> Any:
        raise KeyError("a bug in one check")

    name = next(c.check for c in baseline.payer.criteria if c.id != "units.billed-vs-supported")
    monkeypatch.setitem(engine.CHECKS, name, trip)
    ev = run_check([FIXTURES], encounter="enc-cigna-01").evaluations[0]
    failed = [f for f in ev.findings if f.id == "data-quality.criterion-not-evaluated"]
    assert failed and all("could not be evaluated" in f.message and "KeyError" in f.message for f in failed)
    assert any(f.id == "units.billed-vs-supported" for f in ev.problems)  # the others still ran
    assert ev.to_dict()["checked"] is True

    monkeypatch.setenv("PTGUARD_DEBUG", "1")  # developers see the error itself
    with pytest.raises(KeyError):
        run_check([FIXTURES], encounter="enc-cigna-01")


def test_an_unreadable_encounter_is_marked_unchecked_in_the_json(monkeypatch: pytest.MonkeyPatch) -> None:
    from ptguard.chart import ChartBuilder

    def trip(self: Any, encounter: Any, *, payer_override: Any) -> Any:
        raise TypeError("a reader missed a wrong-typed element")

    monkeypatch.delenv("PTGUARD_DEBUG", raising=False)
    monkeypatch.setattr(ChartBuilder, "_assemble", trip)
    out = run_check([FIXTURES], encounter="enc-cigna-01").evaluations[0].to_dict()
    assert out["checked"] is False
    assert [f["id"] for f in out["findings"]] == ["data-quality.malformed-data"]
