"""Intake of 835 files into the store and the worklist: idempotency, quarantine, reversals, matching, native CRs."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from remit_util import FIXTURES, claim, interchange
from sqlalchemy import func, select

from ptguard.fhir.load import load_many, load_path
from ptguard.fhir.refs import ResourceIndex
from ptguard.remit.intake import control_key, import_835, ingest_claim_response
from ptguard.remit.matching import ClaimMatcher
from ptguard.remit.worklist import get_work_item, list_work_items, set_status
from ptguard.remit.x12 import read_835
from ptguard.store.db import session_scope
from ptguard.store.models import RemitFile, WorkItem
from tests.shared_data import PUBLIC_X12, require

TODAY = date(2026, 12, 3)
ROOT = Path(__file__).resolve().parents[2]
PUBLIC = PUBLIC_X12
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="module")
def chart() -> ResourceIndex:
    return ResourceIndex.from_load(load_many(sorted((ROOT / "fhir_fixtures").glob("*.json"))))


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'remit.sqlite3'}"


def counts(db_url: str) -> tuple[int, int]:
    with session_scope(db_url) as s:
        files = s.scalar(select(func.count()).select_from(RemitFile)) or 0
        items = s.scalar(select(func.count()).select_from(WorkItem)) or 0
    return files, items


def test_aetna_round_trip_matches_the_chart_and_makes_a_work_item(db: str, chart: ResourceIndex) -> None:
    data = (FIXTURES / "aetna-01.835").read_bytes()
    result = import_835(data, filename="aetna-01.835", db_url=db, index=chart, today=TODAY)
    assert result.status == "imported" and result.claims == 1 and result.denied == 1 and result.matched == 1
    assert [t.to_dict()["carcs"] for t in result.therapy_denials] == [["CO-50"]]
    items = list_work_items(db, status="open", today=TODAY)
    assert len(items) == 1
    item = items[0]
    assert item["claim"] == {"reference": "Claim/claim-aetna-01", "control_number": "claim-aetna-01"}
    assert item["patient"]["reference"] == "Patient/pat-whitfield"
    assert item["payer"]["id"] == "aetna" and item["carcs"] == ["CO-50"] and item["rarcs"] == ["N130"]
    assert item["category"] == "medical-necessity" and item["path"] == "appeal"
    assert item["notice_date"] == "2026-11-20" and item["due_date"] == "2027-05-19" and item["days_left"] == 167
    assert item["lines"][0]["code"] == "97530"
    assert item["lines"][0]["encounters"] == ["Encounter/enc-aetna-01"]
    assert "Procedure/proc-aetna-01-97530" in item["lines"][0]["procedures"]
    full = get_work_item(db, item["id"], today=TODAY)
    cr = full["claim_response_resource"]
    assert cr["request"]["reference"] == "Claim/claim-aetna-01"
    assert cr["insurer"]["reference"] == "Organization/org-payer-aetna"
    source = [e for e in cr["extension"] if e["url"].endswith("source-remittance")]
    assert source[0]["valueReference"]["identifier"]["value"] == result.sha256


def test_same_file_twice_and_reframed_copy_create_nothing(db: str) -> None:
    data = (FIXTURES / "bcbs-97-236.835").read_bytes()
    first = import_835(data, filename="a.835", db_url=db, today=TODAY)
    assert first.status == "imported" and first.work_items_created == 2
    before = counts(db)
    again = import_835(data, filename="a.835", db_url=db, today=TODAY)
    assert again.status == "already-imported" and "already imported" in (again.message or "")
    assert again.claims == 2
    reframed = data.replace(b"~", b"~\r\n")
    assert reframed != data
    third = import_835(reframed, filename="b.835", db_url=db, today=TODAY)
    assert third.status == "already-imported" and "control numbers" in (third.message or "")
    assert counts(db) == before


def test_control_key_keeps_different_payments_apart() -> None:
    a = read_835(interchange([claim("c1", "4", "100", "0", "P1")], amount="0"), "a")
    b = read_835(interchange([claim("c1", "1", "100", "80", "P1", carc="45")], amount="80"), "b")
    assert control_key(a) != control_key(b)


def test_one_malformed_claim_is_reported_and_the_others_imported(db: str) -> None:
    bad = ["CLP*c-bad*4*abc*0*0*12*PBAD*11*1", "NM1*QC*1*ROE*RAY****MI*M2", "SVC*HC:97530:GP*65*0**1", "CAS*CO*50*65"]
    data = interchange(
        [claim("c-good", "4", "130", "0", "PGOOD"), bad, claim("c-ok", "1", "65", "65", "POK", carc=None)],
        control="000000901",
    )
    result = import_835(data, filename="mixed.835", db_url=db, today=TODAY)
    assert result.status == "quarantined"
    assert result.claims == 2 and result.raw_clp_count == 3 and result.rejected_claims == 1
    assert any("CLP03" in e for e in result.errors)
    assert result.work_items_created == 1
    with session_scope(db) as s:
        row = s.scalars(select(RemitFile)).one()
        assert row.status == "quarantined" and row.raw == data and row.errors


def test_corrected_resend_of_a_quarantined_file_is_imported_without_duplicates(db: str) -> None:
    bad = ["CLP*c-bad*4*abc*0*0*12*PBAD*11*1", "NM1*QC*1*ROE*RAY****MI*M2", "SVC*HC:97530:GP*65*0**1", "CAS*CO*50*65"]
    first = interchange([claim("c-good", "4", "130", "0", "PGOOD"), bad], control="000000902")
    assert import_835(first, filename="q.835", db_url=db, today=TODAY).status == "quarantined"
    fixed = interchange(
        [claim("c-good", "4", "130", "0", "PGOOD"), claim("c-bad", "4", "65", "0", "PBAD")], control="000000902"
    )
    result = import_835(fixed, filename="q-fixed.835", db_url=db, today=TODAY)
    assert result.status == "imported"
    assert result.work_items_created == 1 and result.work_items_existing == 1


def test_rejected_file_is_kept_with_a_specific_reason(db: str) -> None:
    result = import_835(b"hello, not x12", filename="note.txt", db_url=db, today=TODAY)
    assert result.status == "rejected" and not result.readable
    assert "ISA" in (result.message or "") and "\n" not in (result.message or "")
    again = import_835(b"hello, not x12", filename="note.txt", db_url=db, today=TODAY)
    assert again.status == "rejected" and again.message == result.message
    assert counts(db) == (1, 0)


def test_reversal_closes_the_earlier_work_item(db: str) -> None:
    denial = interchange([claim("c-rev", "4", "130", "0", "PREV1")], control="000000903", trace="T903")
    assert import_835(denial, filename="d.835", db_url=db, today=TODAY).work_items_created == 1
    reversal = interchange(
        [claim("c-rev", "22", "-130", "0", "PREV1", carc=None), claim("c-rev", "1", "130", "110", "PREV1A", carc="45")],
        control="000000904",
        trace="T904",
        amount="110",
    )
    result = import_835(reversal, filename="r.835", db_url=db, today=TODAY)
    assert result.reversals == 1 and result.work_items_closed == 1
    assert list_work_items(db, status="open", today=TODAY) == []
    assert [i["status"] for i in list_work_items(db, today=TODAY)] == ["reversed"]


def test_unmatched_claims_are_listed_not_dropped(db: str, chart: ResourceIndex) -> None:
    data = interchange(
        [claim("no-such-claim", "1", "65", "65", "PX", carc=None), claim("no-such-denied", "4", "65", "0", "PY")],
        control="000000905",
    )
    result = import_835(data, filename="u.835", db_url=db, index=chart, today=TODAY)
    assert result.unmatched == ["no-such-claim", "no-such-denied"]
    unmatched = list_work_items(db, status="unmatched", today=TODAY)
    assert [i["claim"]["control_number"] for i in unmatched] == ["no-such-claim"]
    open_items = list_work_items(db, status="open", today=TODAY)
    assert [(i["claim"]["control_number"], i["matched"]) for i in open_items] == [("no-such-denied", False)]


def test_non_therapy_lines_make_no_work_item(db: str) -> None:
    data = interchange([claim("c-xray", "4", "90", "0", "PXR", code="72100")], control="000000906")
    result = import_835(data, filename="x.835", db_url=db, today=TODAY)
    assert result.denied == 1 and result.therapy_denials == [] and result.work_items_created == 0


def test_worklist_is_sorted_overdue_first_and_status_changes(db: str) -> None:
    old = interchange([claim("c-old", "4", "65", "0", "POLD")], control="000000907", date="20260301")
    new = interchange([claim("c-new", "4", "65", "0", "PNEW")], control="000000908", date="20261120")
    mcr = (FIXTURES / "medicare-ma130.835").read_bytes()
    for n, data in enumerate([new, mcr, old]):
        import_835(data, filename=f"{n}.835", db_url=db, today=TODAY)
    items = list_work_items(db, today=TODAY)
    assert items[0]["claim"]["control_number"] == "c-old" and items[0]["overdue"] and items[0]["days_left"] < 0
    assert items[1]["claim"]["control_number"] == "c-new"
    assert all(i["due_date"] is None and i["path"] == "resubmit" for i in items[2:])
    set_status(db, items[0]["id"], "appealed")
    assert get_work_item(db, items[0]["id"], today=TODAY)["status"] == "appealed"


def test_native_claim_response_goes_to_the_same_worklist(db: str) -> None:
    loaded = load_path(ROOT / "fhir_fixtures" / "patient-aetna-whitfield.json")
    index = ResourceIndex.from_load(loaded)
    cr = index.get("ClaimResponse", "cr-aetna-01")
    assert cr is not None
    first = ingest_claim_response(cr, db_url=db, index=index, today=TODAY)
    assert first.denied and first.work_items_created == 1
    again = ingest_claim_response(cr, db_url=db, index=index, today=TODAY)
    assert again.work_items_created == 0 and again.work_items_existing == 1
    item = list_work_items(db, today=TODAY)[0]
    assert item["source"] == "fhir" and item["payer"]["id"] == "aetna" and item["due_date"] == "2027-05-19"
    assert item["claim"]["reference"] == "Claim/claim-aetna-01" and item["matched"]


def test_matcher_rules(chart: ResourceIndex) -> None:
    assert ClaimMatcher(index=chart).match("claim-aetna-01").rule == "identifier (any system)"
    strict = ClaimMatcher(index=chart, systems=["https://example.org/other"])
    m = strict.match("claim-aetna-01")
    assert m.matched and m.rule == "id"  # falls back to Claim.id
    none = strict.match("nothing-like-it")
    assert not none.matched and "no Claim" in (none.reason or "")


def _public_and_fixture_files() -> list[Path]:
    files = sorted(FIXTURES.glob("*.835"))
    files += sorted(p for p in require(PUBLIC).rglob("*") if p.is_file() and p.suffix != ".md")
    return files


def test_every_public_and_fixture_file_imports_or_is_quarantined_or_rejected_specifically(db: str) -> None:
    outcomes = {}
    for path in _public_and_fixture_files():
        result = import_835(path.read_bytes(), filename=path.name, db_url=db, today=TODAY)
        outcomes[path.name] = result.status
        assert result.status in ("imported", "quarantined", "rejected", "already-imported"), path
        if result.status == "imported":
            assert result.claims == result.raw_clp_count > 0
        elif result.status == "quarantined":
            assert result.errors and all("\n" not in e and path.name in e for e in result.errors), path
            # Every CLP is either read or rejected by name; a file where they do not add up must say so, with
            # the very numbers that do not match.
            accounted = result.claims + result.rejected_claims
            if accounted != result.raw_clp_count:
                mismatch = f"read {accounted} claims but the file has {result.raw_clp_count} CLP segments"
                assert any(mismatch in e for e in result.errors), (path, accounted, result.errors)
        elif result.status == "rejected":
            assert result.message and "\n" not in result.message and path.name in result.message
    assert outcomes["aetna-01.835"] == "imported"
    assert outcomes["835_DeIdent_02.dat"] == "imported"
    assert outcomes["tertiary-payment.835"] == "quarantined"
    assert outcomes["exhaustive_sample.txt"] == "rejected"


def test_idempotent_import_on_postgresql(pg_url: str, chart: ResourceIndex) -> None:
    data = (FIXTURES / "aetna-01.835").read_bytes()
    assert import_835(data, filename="aetna-01.835", db_url=pg_url, index=chart, today=TODAY).status == "imported"
    before = counts(pg_url)
    assert import_835(data, filename="aetna-01.835", db_url=pg_url, index=chart, today=TODAY).status == (
        "already-imported"
    )
    assert counts(pg_url) == before == (1, 1)
    item = list_work_items(pg_url, today=TODAY)[0]
    assert item["due_date"] == "2027-05-19" and item["claim"]["reference"] == "Claim/claim-aetna-01"


def test_fhir_server_down_fails_the_file_and_a_retry_imports_it(db: str) -> None:
    from ptguard.fhir.client import FhirClient

    data = (FIXTURES / "uhc-151.835").read_bytes()
    with FhirClient("http://127.0.0.1:9/fhir", retries=0, timeout=1.0) as down:
        failed = import_835(data, filename="uhc.835", db_url=db, fhir=down, today=TODAY)
    assert failed.status == "failed" and not failed.readable and "cannot connect" in (failed.message or "")
    assert counts(db) == (1, 0)
    retry = import_835(data, filename="uhc.835", db_url=db, today=TODAY)
    assert retry.status == "imported" and retry.work_items_created == 1
    assert counts(db) == (1, 1)
