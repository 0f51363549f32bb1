"""A later appeal level runs from the decision of the level before it, in the letter and on the command line."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import orjson

from ptguard.appeals.assemble import assemble
from ptguard.appeals.gather import build_source, load_files
from ptguard.cli import main

ROOT = Path(__file__).resolve().parents[2]
TODAY = date(2026, 12, 3)


def _source() -> object:
    return build_source(load_files([ROOT / "fhir_fixtures"]), "cr-aetna-01")


def test_decision_date_moves_a_later_level_and_a_note_asks_for_it() -> None:
    src = _source()
    from_notice = assemble(src, today=TODAY, level="external-review")  # type: ignore[arg-type]
    assert from_notice.deadline is not None and from_notice.deadline["due"] == "2027-03-20"  # notice 2026-11-20 + 4 mo
    assert any("runs from the internal-appeal decision" in n for n in from_notice.notes)
    decided = assemble(src, today=TODAY, level="external-review", decision_date=date(2026, 12, 1))  # type: ignore[arg-type]
    assert decided.deadline is not None and decided.deadline["due"] == "2027-04-01"
    assert not any("runs from the internal-appeal decision" in n for n in decided.notes)
    # The first level runs from the notice: no such note.
    first = assemble(src, today=TODAY)  # type: ignore[arg-type]
    assert first.deadline is not None and first.deadline["level"] == "internal-appeal"
    assert not any("decision, not from the denial notice" in n for n in first.notes)


def test_appeal_command_takes_the_decision_date() -> None:
    out = io.StringIO()
    args = ["appeal", "cr-aetna-01", "--bundle", str(ROOT / "fhir_fixtures"), "--level", "external-review",
            "--decision-date", "2026-12-01", "--today", "2026-12-03", "--format", "json"]
    assert main(args, out=out) == 0
    assert orjson.loads(out.getvalue())["deadline"]["due"] == "2027-04-01"


def test_decision_date_on_the_first_level_is_refused() -> None:
    import pytest

    from ptguard.errors import InputError

    with pytest.raises(InputError, match="for a later appeal level"):
        assemble(_source(), today=TODAY, decision_date=date(2026, 12, 1))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="internal-appeal runs from the denial notice"):
        assemble(_source(), today=TODAY, level="internal", decision_date=date(2026, 12, 1))  # type: ignore[arg-type]


def test_decision_before_the_notice_is_refused() -> None:
    import pytest

    from ptguard.errors import InputError

    with pytest.raises(InputError, match="is in the future"):
        assemble(_source(), today=TODAY, level="external-review", decision_date=date(2027, 6, 1))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="before the denial notice"):
        assemble(_source(), today=TODAY, level="external-review", decision_date=date(2020, 1, 1))  # type: ignore[arg-type]
