"""Card detail: chart quotes in quotation marks; a resource that was only searched is not shown as a quote."""

from __future__ import annotations

from cds_hooks.cards import _detail
from ptguard.findings import SEARCHED, Citation, Evidence, Finding


def test_searched_placeholder_is_not_quoted() -> None:
    finding = Finding(
        "note.functional-goal", "Activity not tied to a functional goal", "missing", "warning",
        "Activity not tied to a functional goal: not found in the note.",
        evidence=(Evidence("DocumentReference/n1", SEARCHED), Evidence("Procedure/p1", "lifting a crate to a shelf")),
        fix="Name the goal the activity serves.",
    )
    text = _detail(finding, None, "Aetna", Citation("Aetna CPB", "0325"))
    assert f"DocumentReference/n1: {SEARCHED}" in text and f"“{SEARCHED}”" not in text
    assert "Procedure/p1: “lifting a crate to a shelf”" in text
