"""The PDF packet (letter first, bookmarked exhibits), write-back by scope, cases with their audit trail, advice."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import orjson
import pytest
import responses
from jsonschema import Draft202012Validator
from pypdf import PdfReader
from sqlalchemy import select

from ptguard.appeals import cases
from ptguard.appeals.advice import external_review_advice, thresholds
from ptguard.appeals.assemble import assemble
from ptguard.appeals.gather import AppealSource
from ptguard.appeals.model import Exhibit, ExhibitBlock
from ptguard.appeals.render import render_packet
from ptguard.appeals.scopes import Scopes
from ptguard.appeals.writeback import writeback
from ptguard.cli import main
from ptguard.errors import InputError, NotFoundError, RuleFileError
from ptguard.fhir.client import FhirClient
from ptguard.store.db import session_scope
from ptguard.store.models import AuditEvent

TODAY = date(2026, 12, 3)
ROOT = Path(__file__).resolve().parents[2]


def test_packet_is_a_real_pdf_with_bookmarks(aetna_source: AppealSource) -> None:
    letter = assemble(aetna_source, today=TODAY)
    packet = render_packet(letter, today=TODAY)
    reader = PdfReader(io.BytesIO(packet.pdf))
    assert len(reader.pages) == packet.pages >= 5
    titles = [o.title for o in reader.outline if not isinstance(o, list)]
    assert titles[0].startswith("First-level appeal")
    assert titles[1:] == [f"Exhibit {e.label}: {e.title}" for e in letter.exhibits]
    text = "\n".join(p.extract_text() for p in reader.pages)
    flat = " ".join(text.split())
    assert "CPB 0325" in flat and "19 May 2027" in flat and "29 CFR 2560.503-1" in flat
    assert "20 lb" in flat and "2 November 2026" in flat
    assert "sandbags" in flat  # the daily note rendered as an exhibit page
    assert "[GAP: the initial evaluation note" in flat


def test_attached_pdf_documents_are_appended(aetna_source: AppealSource) -> None:
    letter = assemble(aetna_source, today=TODAY)
    inner = render_packet(letter, today=TODAY).pdf
    letter.exhibits.append(
        Exhibit(
            "Z",
            "Scanned evaluation",
            "evaluation",
            ["DocumentReference/doc-aetna-01-note"],
            [ExhibitBlock("text", "see next page")],
            base64.b64encode(inner).decode(),
        )
    )
    packet = render_packet(letter, today=TODAY)
    assert "Exhibit Z: original document" in packet.outline
    assert packet.pages > 2 * len(PdfReader(io.BytesIO(inner)).pages)


BASE = "https://fhir.example.test/r4"


@responses.activate
def test_writeback_creates_document_and_task(aetna_source: AppealSource) -> None:
    letter = assemble(aetna_source, today=TODAY)
    responses.post(f"{BASE}/DocumentReference", json={"resourceType": "DocumentReference", "id": "d1"}, status=201)
    responses.post(f"{BASE}/Task", json={"resourceType": "Task", "id": "t1"}, status=201)
    with FhirClient(BASE, token="tok") as client:
        result = writeback(
            client,
            letter,
            b"%PDF-1.7 test",
            scopes=Scopes.of("patient/DocumentReference.c patient/Task.cu launch"),
            case_id="c1",
        )
    assert result.document_reference == "DocumentReference/d1" and result.task == "Task/t1" and not result.skipped
    doc = json.loads(responses.calls[0].request.body)
    assert doc["content"][0]["attachment"]["contentType"] == "application/pdf"
    assert base64.b64decode(doc["content"][0]["attachment"]["data"]) == b"%PDF-1.7 test"
    assert doc["subject"] == {"reference": "Patient/pat-whitfield"}
    assert doc["context"]["related"] == [{"reference": "ClaimResponse/cr-aetna-01"}]
    task = json.loads(responses.calls[1].request.body)
    assert task["focus"] == {"reference": "ClaimResponse/cr-aetna-01"}
    assert task["restriction"]["period"]["end"] == "2027-05-19"
    assert task["input"][0]["valueReference"] == {"reference": "DocumentReference/d1"}


@responses.activate
def test_writeback_without_scopes_says_why(aetna_source: AppealSource) -> None:
    letter = assemble(aetna_source, today=TODAY)
    responses.post(
        f"{BASE}/Task",
        json={
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "forbidden", "diagnostics": "no"}],
        },
        status=403,
    )
    with FhirClient(BASE, token="tok") as client:
        result = writeback(client, letter, b"%PDF", scopes=Scopes.of("patient/*.rs user/Task.write"))
    assert result.document_reference is None and result.task is None
    assert "DocumentReference.c" in result.skipped[0]
    assert "refused the Task (403)" in result.skipped[1]
    assert len(responses.calls) == 1  # no DocumentReference POST attempted


def test_scopes_v1_and_v2() -> None:
    s = Scopes.of("launch patient/Claim.read user/DocumentReference.write patient/Observation.rs patient/Bad.xyz")
    assert s.can_read("Claim") and not s.can_create("Claim")
    assert s.can_create("DocumentReference") and not s.can_read("DocumentReference")
    assert s.can_read("Observation")
    assert s.missing(["patient/Claim.rs", "patient/ClaimResponse.rs", "launch", "offline_access"]) == [
        "offline_access",
        "patient/ClaimResponse.rs",
    ]
    assert Scopes.of("patient/*.cruds").can_create("Task")
    assert not Scopes.of("patient/Task.rc").can_create("Task")  # letters out of order are not a valid v2 scope


def test_case_lifecycle_and_audit(aetna_source: AppealSource, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    letter = assemble(aetna_source, today=TODAY)
    cid = cases.create_case(db, letter, actor="biller:1")
    view = cases.get_case(db, cid)
    assert view.status == "draft" and view.due_date == date(2027, 5, 19) and view.deadline_rule
    sid = next(s.id for s in view.letter.sentences() if "CPB 0325" in s.text)
    view = cases.save_edits(db, cid, {sid: ("Aetna's policy asks for functional work.", False)}, actor="biller:1")
    edited = view.letter.sentence(sid)
    assert edited is not None and edited.edited and edited.sources == []
    assert cases.get_case(db, cid).letter.sentence(sid).text == "Aetna's policy asks for functional work."  # type: ignore[union-attr]
    with pytest.raises(InputError):
        cases.set_status(db, cid, "decided", actor="biller:1", decision="upheld")
    cases.set_status(db, cid, "sent", actor="biller:1")
    with pytest.raises(InputError):
        cases.save_edits(db, cid, {sid: ("x", True)}, actor="biller:1")
    with pytest.raises(InputError):
        cases.set_status(db, cid, "decided", actor="biller:1", decision="maybe")
    view = cases.set_status(db, cid, "decided", actor="biller:1", decision="upheld")
    actions = [a["action"] for a in view.audit]
    assert actions == ["case.created", "letter.edited", "case.status", "case.status"]
    assert view.audit[1]["detail"] == {"sentences": [sid], "sources_dropped": [sid]}
    blob = orjson.dumps(view.audit).decode()
    assert "Whitfield" not in blob and "warehouse" not in blob  # no PHI in the trail
    with pytest.raises(PermissionError), session_scope(db) as s:
        row = s.scalars(select(AuditEvent)).first()
        assert row is not None
        row.action = "tampered"
        s.flush()
    assert cases.count_same_denials(db, payer_id="aetna", category="medical-necessity") == 1
    assert (
        cases.count_same_denials(
            db, payer_id="aetna", category="medical-necessity", exclude="ClaimResponse/cr-aetna-01"
        )
        == 0
    )


def test_external_review_advice(aetna_source: AppealSource, source_for: Callable[[str, str], AppealSource]) -> None:
    d = aetna_source.denial
    advice = external_review_advice(
        d, aetna_source.evaluations, payer_id="aetna", internal_exhausted=True, same_denials=3
    )
    assert advice.recommend and advice.applies
    assert any("clinical appropriateness" in r for r in advice.reasons)
    assert any("misapplied" in r and "CPB 0325" in r for r in advice.reasons)
    assert any("3 other claims" in r for r in advice.reasons)
    early = external_review_advice(d, aetna_source.evaluations, payer_id="aetna", internal_exhausted=False)
    assert not early.recommend and "finish the internal appeal" in early.summary and "worthwhile" in early.summary
    uhc = source_for("patient-uhc-delgado.json", "cr-uhc-01")
    weak = external_review_advice(uhc.denial, uhc.evaluations, payer_id="uhc", internal_exhausted=True)
    assert not weak.recommend and any("lacks documentation" in a for a in weak.against)
    bcbs = source_for("patient-bcbs-bellweather.json", "cr-bcbs-01")
    coding = external_review_advice(bcbs.denial, bcbs.evaluations, payer_id="bcbs", internal_exhausted=True)
    assert not coding.recommend and any("medical judgement" in a for a in coding.against)
    medicare = external_review_advice(d, aetna_source.evaluations, payer_id="medicare", internal_exhausted=True)
    assert not medicare.recommend and any("Qualified Independent Contractor" in a for a in medicare.against)


def _at_stake(source: AppealSource, amount: float) -> AppealSource:
    """The same denial with one denied line of `amount` unpaid (so exactly `amount` is at stake)."""
    line = dataclasses.replace(source.denial.denied_lines[0], submitted=amount, paid=0.0)
    return dataclasses.replace(source, denial=dataclasses.replace(source.denial, lines=[line]))


def _episode_of(source: AppealSource, days: int) -> AppealSource:
    """The same chart with every visit `days` days after its episode's start."""
    evaluations = []
    for ev in source.evaluations:
        assert ev.visit.visit_date is not None
        start = ev.visit.visit_date - timedelta(days=days)
        evaluations.append(dataclasses.replace(ev, visit=dataclasses.replace(ev.visit, episode_start=start)))
    return dataclasses.replace(source, evaluations=evaluations)


def _advice(source: AppealSource, payer: str = "aetna") -> list[str]:
    return external_review_advice(source.denial, source.evaluations, payer_id=payer, internal_exhausted=True).reasons


def test_advice_thresholds_are_labelled_heuristics_from_the_data_file(aetna_source: AppealSource) -> None:
    assert aetna_source.denial.notice_date is not None
    cut = thresholds(aetna_source.denial.notice_date)
    assert (cut.high_dollar, cut.long_episode_days, cut.pattern_min) == (1000.0, 60, 2)
    assert "medical-necessity" in cut.medical_judgement and "bundling" not in cut.medical_judgement
    for ground in ("high_dollar", "long_episode", "pattern"):
        assert cut.sources[ground].startswith("ptguard heuristic") and "appeal guide" in cut.sources[ground]
    with pytest.raises(NotFoundError, match="in effect on 2010-12-31"):
        thresholds(date(2010, 12, 31))  # before the row's effective_from: no rule, not a broken file
    # A denial from before federal external review existed gets no advice rather than an error.
    old_notice = external_review_advice(
        aetna_source.denial, aetna_source.evaluations, payer_id="aetna", internal_exhausted=True, on=date(2010, 6, 1)
    )
    assert not old_notice.recommend and not old_notice.applies and "2010-06-01" in old_notice.summary


def test_advice_thresholds_file_is_validated(tmp_path: Path) -> None:
    row = (
        "  - {effective_from: 2011-01-01, effective_to: null, high_dollar: 1000, long_episode_days: 60, "
        "pattern_min: 2, medical_judgement_categories: [medical-necessity], high_dollar_source: h, "
        "long_episode_source: l, pattern_source: p, medical_judgement_source: m}\n"
    )
    good = tmp_path / "good"
    good.mkdir()
    (good / "external-review-advice.yaml").write_text('source: "test"\nrows:\n' + row)
    assert thresholds(date(2026, 1, 1), good).high_dollar == 1000.0
    for name, text, message in (
        ("nosource", "rows:\n" + row, "source"),
        ("badcat", 'source: "t"\nrows:\n' + row.replace("[medical-necessity]", "[made-up]"), "carc.yaml"),
        ("noline", 'source: "t"\nrows:\n' + row.replace(", pattern_source: p", ""), "pattern_source"),
        (
            "negative",
            'source: "t"\nrows:\n' + row.replace("long_episode_days: 60", "long_episode_days: -1"),
            "positive",
        ),
        ("fraction", 'source: "t"\nrows:\n' + row.replace("pattern_min: 2", "pattern_min: 1.5"), "whole number"),
    ):
        d = tmp_path / name
        d.mkdir()
        (d / "external-review-advice.yaml").write_text(text)
        with pytest.raises(RuleFileError, match=message):
            thresholds(date(2026, 1, 1), d)


def test_high_dollar_ground_triggers_at_the_threshold(
    aetna_source: AppealSource, source_for: Callable[[str, str], AppealSource]
) -> None:
    assert aetna_source.denial.notice_date is not None
    limit = thresholds(aetna_source.denial.notice_date).high_dollar
    at = _advice(_at_stake(aetna_source, limit))
    assert any(f"${limit:,.2f} is at stake" in r for r in at)
    below = _advice(_at_stake(aetna_source, limit - 0.01))
    assert not any("is at stake" in r for r in below)
    assert len(below) == len(at) - 1  # only the high-dollar ground changed
    # a chart missing required documentation does not earn the ground, however much is at stake
    uhc = source_for("patient-uhc-delgado.json", "cr-uhc-01")
    assert not any("is at stake" in r for r in _advice(_at_stake(uhc, limit * 10), "uhc"))


def test_long_episode_ground_triggers_at_the_threshold(
    aetna_source: AppealSource, source_for: Callable[[str, str], AppealSource]
) -> None:
    assert aetna_source.denial.notice_date is not None
    days = thresholds(aetna_source.denial.notice_date).long_episode_days
    at = _advice(_episode_of(aetna_source, days))
    assert f"The episode has run {days} days with complete documentation." in at
    below = _advice(_episode_of(aetna_source, days - 1))
    assert not any("The episode has run" in r for r in below)
    assert len(below) == len(at) - 1
    uhc = source_for("patient-uhc-delgado.json", "cr-uhc-01")
    assert not any("The episode has run" in r for r in _advice(_episode_of(uhc, days * 2), "uhc"))


def test_cli_appeal_json_and_pdf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    pdf = tmp_path / "packet.pdf"
    code = main(
        [
            "appeal",
            "cr-aetna-01",
            "--bundle",
            str(ROOT / "fhir_fixtures"),
            "--out",
            str(pdf),
            "--format",
            "json",
            "--today",
            "2026-12-03",
        ],
        out=out,
    )
    assert code == 0, capsys.readouterr().err
    data = orjson.loads(out.getvalue())
    Draft202012Validator(orjson.loads((ROOT / "schemas" / "appeal-output.schema.json").read_bytes())).validate(data)
    assert data["deadline"]["due"] == "2027-05-19" and data["packet"]["pages"] >= 5
    assert all(s["sources"] for s in data["sentences"] if s["kind"] == "fact")
    assert PdfReader(pdf).outline
    # the positional may be the ClaimResponse's own file; the chart comes from --bundle
    out2 = io.StringIO()
    code = main(
        [
            "appeal",
            str(ROOT / "fhir_fixtures" / "patient-bcbs-bellweather.json"),
            "--bundle",
            str(ROOT / "fhir_fixtures" / "clinic-shared.json"),
        ],
        out=out2,
    )
    assert code == 0 and "Two separate services" in out2.getvalue()
    code = main(["appeal", "cr-nope", "--bundle", str(ROOT / "fhir_fixtures")], out=io.StringIO())
    assert code == 3 and "cr-nope" in capsys.readouterr().err
    code = main(["appeal", "cr-aetna-01"], out=io.StringIO())
    assert code == 2
