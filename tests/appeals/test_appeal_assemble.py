"""Appeal assembly: arguments chosen by denial code, every factual sentence tied to the chart, gaps never filled in."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import date

import pytest
from appeal_helpers import denial_for, load_fixture

from ptguard.appeals.assemble import assemble
from ptguard.appeals.gather import AppealSource, build_source
from ptguard.appeals.model import AppealLetter, edit_sentence
from ptguard.errors import InputError, NotFoundError
from ptguard.fhir.load import LoadResult

TODAY = date(2026, 12, 3)


def assert_sourced(letter: AppealLetter, src: AppealSource) -> None:
    """Every factual sentence cites ≥1 chart resource, each of which exists in the chart."""
    index = src.builder.index
    for s in letter.sentences():
        if s.kind == "fact":
            assert s.chart_sources, s.text
        for ref in s.chart_sources:
            base = ref.split("#")[0]
            assert index.resolve(base) is not None, (s.id, ref)
        for ref in s.sources:
            if ref.startswith("policy:"):
                assert ref == f"policy:{letter.payer_id}"
    # quoted note text is the note's own words
    notes = " ".join(n.text for v in src.visits for n in v.notes)
    for s in letter.sentences():
        for quote in re.findall(r"“([^”]+)”", s.text):
            if s.sources and s.sources[0].startswith("DocumentReference/"):
                assert quote.rstrip("…").rstrip(";").strip() in " ".join(notes.split()), quote
    for e in letter.exhibits:
        for ref in e.sources:
            assert index.resolve(ref.split("#")[0]) is not None, ref


def test_aetna_carc50_letter(aetna_source: AppealSource) -> None:
    started = time.perf_counter()
    letter = assemble(aetna_source, today=TODAY)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0
    text = letter.plain_text()
    assert letter.template == "category/medical-necessity.j2"
    assert letter.category == "medical-necessity" and letter.path == "appeal"
    assert "CPB 0325" in text
    assert "10 lb on 12 October 2026 to 20 lb on 2 November 2026" in text  # the note's own measure and its change
    assert "19 May 2027" in text and "29 CFR 2560.503-1" in text
    assert "38 timed minutes" in text and "97530-GP × 3 unit(s)" in text
    assert "warehouse" in text  # activity quoted
    assert letter.deadline is not None and letter.deadline["due"] == "2027-05-19"
    assert [e.kind for e in letter.exhibits] == ["remittance", "daily-note", "plan-of-care", "measures"]
    assert_sourced(letter, aetna_source)
    measure = next(s for s in letter.sentences() if "20 lb on 2 November" in s.text)
    assert set(measure.sources) == {"Observation/obs-whitfield-baseline-lift", "Observation/obs-aetna-01-lift"}
    policy = next(s for s in letter.sentences() if "CPB 0325" in s.text)
    assert policy.kind == "citation" and policy.sources == ["policy:aetna"]
    # the only gap is the evaluation note the fixture does not have
    assert [g["gap"] for g in letter.gaps] == ["the initial evaluation note (none in the chart)"]


def test_every_fixture_denial_is_sourced(source_for: Callable[[str, str], AppealSource]) -> None:
    for fixture, cr in (
        ("patient-aetna-whitfield.json", "cr-aetna-01"),
        ("patient-uhc-delgado.json", "cr-uhc-01"),
        ("patient-bcbs-bellweather.json", "cr-bcbs-01"),
    ):
        src = source_for(fixture, cr)
        letter = assemble(src, today=TODAY)
        assert_sourced(letter, src)
        assert letter.to_dict() == AppealLetter.from_dict(letter.to_dict()).to_dict()


def test_poor_note_gives_gaps_not_claims(source_for: Callable[[str, str], AppealSource]) -> None:
    src = source_for("patient-uhc-delgado.json", "cr-uhc-01")
    letter = assemble(src, today=TODAY)
    gaps = " ".join(g["gap"] for g in letter.gaps)
    assert "functional, task-based activities" in gaps
    assert "therapist's skill" in gaps
    assert "functional goal" in gaps
    assert "CDG.026" in letter.plain_text()
    assert not any("describes the work" in s.text for s in letter.sentences())
    assert any("critical documentation gap" in n for n in letter.notes)


def test_bundling_letter_uses_time_blocks(source_for: Callable[[str, str], AppealSource]) -> None:
    src = source_for("patient-bcbs-bellweather.json", "cr-bcbs-01")
    letter = assemble(src, today=TODAY)
    assert letter.template == "category/bundling.j2"
    text = letter.plain_text()
    assert "10:05 to 10:20" in text and "10:20 to 10:44" in text
    assert "distinct service" in text
    assert any("59/X modifier" in n for n in letter.notes)
    ncci = next(s for s in letter.sentences() if "NCCI" in s.text)
    assert ncci.sources == ["rule:ncci-pairs"]


def test_chart_without_measures_yields_a_gap(aetna_load: LoadResult) -> None:
    load = LoadResult(source="no-measures")
    for res, url in zip(aetna_load.resources, aetna_load.full_urls, strict=False):
        if res.get("resourceType") != "Observation":
            load.add(res, url)
    src = build_source(load, "cr-aetna-01")
    letter = assemble(src, today=TODAY)
    gaps = " ".join(g["gap"] for g in letter.gaps)
    assert "objective measures" in gaps
    assert "measures" not in [e.kind for e in letter.exhibits]
    # no measured value appears as a fact: "20 lb" only inside the note's own quoted words
    for s in letter.sentences():
        if "20 lb" in s.text:
            assert s.sources and all(x.startswith("DocumentReference/") for x in s.sources), s.text
    assert_sourced(letter, src)


@pytest.mark.parametrize(
    ("reasons", "template", "category"),
    [
        ([("151", "CO")], "category/units-frequency.j2", "units-frequency"),
        ([("197", "CO")], "category/authorization.j2", "authorization"),
        ([("16", "CO"), ("MA130", "CO")], "category/resubmit.j2", "unprocessable"),
        ([("18", "CO")], "category/other.j2", "duplicate"),
    ],
)
def test_argument_family_follows_the_codes(
    aetna_load: LoadResult, reasons: list[tuple[str, str]], template: str, category: str
) -> None:
    load = denial_for(aetna_load, "claim-aetna-01", reasons, "cr-test-family")
    src = build_source(load, "cr-test-family")
    letter = assemble(src, today=TODAY)
    assert letter.template == template
    assert letter.category == category
    assert_sourced(letter, src)
    if category == "units-frequency":
        assert "8-minute" in letter.plain_text() or "8 minutes" in letter.plain_text()
    if category == "authorization":
        assert any("authorization number" in g["gap"] for g in letter.gaps)
    if category == "unprocessable":
        assert letter.deadline is None and letter.path == "resubmit"


def test_medicare_deadline_presumes_receipt(source_for: Callable[[str, str], AppealSource]) -> None:
    load = denial_for(load_fixture("patient-medicare-abernathy.json"), "claim-medicare-01", [("50", "CO")], "cr-mc")
    src = build_source(load, "cr-mc")
    letter = assemble(src, today=TODAY)
    assert letter.deadline is not None
    assert letter.deadline["level"] == "redetermination"
    # notice 2026-11-20 + 5 days receipt + 120 days
    assert letter.deadline["due"] == "2027-03-25"
    assert "receipt presumed 5 days" in letter.deadline["basis"]
    assert "42 CFR 405.942" in letter.plain_text()
    assert "Pub 100-02" in letter.plain_text()


def test_contract_override_and_level(aetna_source: AppealSource) -> None:
    letter = assemble(aetna_source, today=TODAY, contract={"aetna": {"internal-appeal": 365}})
    assert letter.deadline is not None and letter.deadline["contract_override"] is True
    assert letter.deadline["due"] == "2027-11-20"
    ext = assemble(aetna_source, today=TODAY, level="external-review")
    assert ext.deadline is not None and ext.deadline["level"] == "external-review"
    assert "request for external review" in ext.plain_text()


def test_not_a_denial_and_missing_claim(aetna_load: LoadResult) -> None:
    load = LoadResult(source="x")
    for res, url in zip(aetna_load.resources, aetna_load.full_urls, strict=False):
        if res.get("resourceType") != "Claim":
            load.add(res, url)
    with pytest.raises(NotFoundError, match="Claim"):
        build_source(load, "cr-aetna-01")
    paid = denial_for(aetna_load, "claim-aetna-01", [("45", "PR")], "cr-paid")
    src = build_source(paid, "cr-paid")
    src.denial.denied = False
    with pytest.raises(InputError, match="nothing to appeal"):
        assemble(src, today=TODAY)


def test_edits_keep_or_drop_the_source(aetna_source: AppealSource) -> None:
    letter = assemble(aetna_source, today=TODAY)
    s = next(x for x in letter.sentences() if x.kind == "fact" and "38 timed minutes" in x.text)
    edit_sentence(
        letter, s.id, "On 2 November 2026 the therapist treated the patient for 38 minutes.", keep_sources=True
    )
    assert s.edited and s.sources and s.original_text and "38 timed minutes" in s.original_text
    t = next(x for x in letter.sentences() if "CPB 0325" in x.text)
    edit_sentence(letter, t.id, "Our own words now.", keep_sources=False)
    assert t.sources == [] and t.kind == "argument"
    g = next(x for x in letter.sentences() if x.gaps)
    edit_sentence(letter, g.id, "The evaluation of 12 October 2026 is enclosed.", keep_sources=False)
    assert g.gaps == []
    with pytest.raises(KeyError):
        edit_sentence(letter, "p99.s1", "x", keep_sources=True)
