"""Intake robustness: bad files, retries and exit codes, implausible dates as warnings, repeats counted once."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from remit_util import FIXTURES, claim, interchange, validate
from remit_util import run_cli as run
from sqlalchemy import select

from ptguard.remit import intake
from ptguard.remit.intake import import_835
from ptguard.remit.watch import scan_once
from ptguard.remit.x12 import read_835
from ptguard.store.db import session_scope
from ptguard.store.models import RemitFile, WorkItem

TODAY = date(2026, 12, 3)




def far_future_copy() -> bytes:
    """aetna-01.835 with fresh control numbers and DTM*405 99991231 (the tester's file)."""
    text = (FIXTURES / "aetna-01.835").read_text()
    text = text.replace("000000101", "000000999").replace("AET20261120001", "AETUNIQUE999")
    assert "DTM*405*20261120" in text
    return text.replace("DTM*405*20261120", "DTM*405*99991231").encode()


def _row(db_url: str, name: str) -> RemitFile:
    with session_scope(db_url) as s:
        row = s.scalars(select(RemitFile).where(RemitFile.filename == name)).one()
        s.expunge(row)
        return row


# ---------------------------------------------------------------------------- implausible dates


def test_far_future_production_date_is_data_quality_not_a_crash(db: str, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "far.835").write_bytes(far_future_copy())
    (folder / "uhc.835").write_bytes((FIXTURES / "uhc-151.835").read_bytes())
    code, out = run("remit", "import", str(folder), "--format", "json")
    data = json.loads(out)
    validate(data, "remit-import-output")
    assert code == 0 and data["summary"]["by_status"] == {"imported": 2}
    far = next(f for f in data["files"] if f["file"] == "far.835")
    assert any("production date 99991231" in w and "implausible" in w for w in far["warnings"])
    # the notice date falls back to BPR16 (2026-11-20): the usual 180-day appeal deadline, not year 9999
    assert far["therapy_denials"][0]["due"] == "2027-05-19"


@pytest.mark.parametrize(
    ("segment", "why"),
    [("DTM*472*19850101", "before 1990"), ("DTM*472*21010101", "after 2100"), ("DTM*472*20280101", "a year")],
)
def test_implausible_service_dates_are_noted_on_the_claim(segment: str, why: str) -> None:
    lines = claim("C1", "4", "100", "0", "CCN1")
    lines = [segment if s.startswith("DTM*472") else s for s in lines]
    read = read_835(interchange([lines]), "x.835")
    (c,) = read.claims
    assert c.service_lines[0].service_date is None
    noted = [w for w in read.warnings if "implausible" in w]
    assert len(noted) == 1 and "claim C1" in noted[0] and why in noted[0] and segment[8:] in noted[0]


def test_a_plausible_recent_date_is_kept() -> None:
    read = read_835(interchange([claim("C1", "4", "100", "0", "CCN1")]), "x.835")
    assert read.claims[0].service_lines[0].service_date == date(2026, 11, 2)
    assert read.remittances[0].interchange_date is not None
    assert not [w for w in read.warnings if "implausible" in w or "group date" in w]


@pytest.mark.parametrize(("gs04", "why"), [("99991231", "implausible (after 2100)"), ("20261345", "not a calendar")])
def test_an_implausible_or_unreadable_group_date_is_a_warning_too(gs04: str, why: str) -> None:
    text = interchange([claim("C1", "4", "100", "0", "CCN1")]).decode()
    gs = next(seg for seg in text.split("~") if seg.strip().startswith("GS*"))
    elements = gs.split("*")
    elements[4] = gs04
    read = read_835(text.replace(gs, "*".join(elements)).encode(), "x.835")
    assert read.ok and read.remittances[0].interchange_date is None
    noted = [w for w in read.warnings if "group date" in w]
    assert len(noted) == 1 and gs04 in noted[0] and why in noted[0] and "not used" in noted[0], read.warnings


# ---------------------------------------------------------------------------- unexpected errors


def _explode_on(monkeypatch: pytest.MonkeyPatch, where: str, trigger: str) -> None:
    """Make intake.<where> raise OverflowError for the claim `trigger` (an unexpected, non-ptguard error)."""
    original = getattr(intake, where)

    def boom(*args: Any, **kwargs: Any) -> Any:
        if trigger in repr(args)[:100000]:
            raise OverflowError("date value out of range")
        return original(*args, **kwargs)

    monkeypatch.setattr(intake, where, boom)


def test_unexpected_error_fails_that_file_only_and_frees_it_for_a_retry(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a-aetna.835").write_bytes((FIXTURES / "aetna-01.835").read_bytes())
    (folder / "b-uhc.835").write_bytes((FIXTURES / "uhc-151.835").read_bytes())
    _explode_on(monkeypatch, "decode", "claim-aetna-01")
    code, out = run("remit", "import", str(folder), "--format", "json")
    data = json.loads(out)
    validate(data, "remit-import-output")
    summary = data["summary"]
    assert summary["by_status"] == {"failed": 1, "imported": 1}  # the batch went on to the second file
    assert summary["failed"][0]["file"] == "a-aetna.835"
    assert "OverflowError" in summary["failed"][0]["reason"]
    assert code == 70 and summary["exit_code"] == 70
    assert "[2/2]" in capsys.readouterr().err
    row = _row(db, "a-aetna.835")
    assert row.status == "failed" and row.lease_owner is None and row.lease_expires is None
    # a re-import retries at once (no "in-progress ... another process" until the lease expires)
    monkeypatch.undo()
    monkeypatch.setenv("DATABASE_URL", db)
    code, out = run("remit", "import", str(folder / "a-aetna.835"), "--format", "json")
    again = json.loads(out)["files"][0]
    assert code == 0 and again["status"] == "imported" and again["work_items"]["created"] == 1


def test_failure_while_storing_rolls_back_and_marks_failed(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(intake, "_store_items", broken)
    result = import_835((FIXTURES / "aetna-01.835").read_bytes(), filename="a.835", db_url=db, today=TODAY)
    assert result.status == "failed" and "RuntimeError" in (result.message or "")
    assert result.work_items_created == 0 and result.failure_exit_code == 70
    row = _row(db, "a.835")
    assert row.status == "failed" and row.lease_owner is None
    with session_scope(db) as s:
        assert s.scalars(select(WorkItem)).all() == []
    monkeypatch.undo()
    retry = import_835((FIXTURES / "aetna-01.835").read_bytes(), filename="a.835", db_url=db, today=TODAY)
    assert retry.status == "imported" and retry.work_items_created == 1


def test_watch_goes_on_after_an_unexpected_error(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "a-aetna.835").write_bytes((FIXTURES / "aetna-01.835").read_bytes())
    (drop / "b-uhc.835").write_bytes((FIXTURES / "uhc-151.835").read_bytes())
    for f in drop.iterdir():
        os.utime(f, (time.time() - 60, time.time() - 60))  # settled
    _explode_on(monkeypatch, "decode", "claim-aetna-01")
    results = scan_once(drop, db_url=db, today=TODAY, settle_seconds=0)
    assert [r.status for r in results] == ["failed", "imported"]
    assert (drop / "a-aetna.835").exists()  # left in place for the next round
    assert (drop / "processed" / "b-uhc.835").exists()
    monkeypatch.undo()
    assert [r.status for r in scan_once(drop, db_url=db, today=TODAY, settle_seconds=0)] == ["imported"]


# ---------------------------------------------------------------------------- FHIR server errors: exit 6


class _RefusesPost(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported"}]}'
        self.send_response(501)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def refusing_fhir() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusesPost)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    finally:
        server.shutdown()
        server.server_close()


def test_fhir_server_refusing_writes_exits_6(db: str, refusing_fhir: str) -> None:
    code, out = run("remit", "import", str(FIXTURES / "aetna-01.835"), "--fhir", refusing_fhir)
    assert code == 6
    assert "failed     aetna-01.835:" in out and "501" in out
    assert _row(db, "aetna-01.835").status == "failed"


def test_fhir_failure_wins_over_other_outcomes_and_quarantine_exits_0(
    db: str, tmp_path: Path, refusing_fhir: str
) -> None:
    bad = tmp_path / "bad.835"
    broken = ["CLP*c-bad*4*abc*0*0*12*PBAD*11*1", "NM1*QC*1*ROE*RAY****MI*M2", "SVC*HC:97530:GP*65*0**1"]
    # one claim unreadable (CLP03 not an amount): the other claim is imported, the file quarantined
    bad.write_bytes(interchange([claim("c-good", "4", "130", "0", "PGOOD"), broken], control="000000555"))
    code, out = run("remit", "import", str(bad), "--format", "json")
    assert json.loads(out)["summary"]["by_status"] == {"quarantined": 1} and code == 0
    code, out = run("remit", "import", str(FIXTURES / "aetna-01.835"), str(FIXTURES / "bcbs-97-236.835"),
                    "--fhir", refusing_fhir, "--format", "json")
    assert code == 6 and json.loads(out)["summary"]["exit_code"] == 6


# ---------------------------------------------------------------------------- a file repeating itself


def test_the_same_interchange_twice_in_one_file_counts_once(db: str, tmp_path: Path) -> None:
    once = interchange([claim("claim-aetna-01", "4", "195", "0", "AETCCN1")])
    twice = tmp_path / "twice.835"
    twice.write_bytes(once + once)
    code, out = run("remit", "import", str(twice), "--format", "json")
    data = json.loads(out)
    validate(data, "remit-import-output")
    summary, (entry,) = data["summary"], data["files"]
    assert code == 0
    assert summary["claims"] == 1 and summary["denied"] == 1
    assert summary["therapy_denial_lines"] == 1 and summary["work_items_created"] == 1
    assert summary["duplicate_claims"] == 1 and entry["duplicate_claims"] == 1
    assert any("duplicate" in w for w in entry["warnings"])
    code, text = run("remit", "import", str(tmp_path / "twice.835"))
    assert "already imported" in text or "already-imported" in text


def test_the_same_claim_twice_in_one_transaction_is_listed_once(db: str) -> None:
    one = claim("C7", "4", "100", "0", "CCN7")
    result = import_835(interchange([one, one], control="000000777", trace="T777"), filename="dup.835", db_url=db,
                        today=TODAY)
    assert result.claims == 2  # two CLP loops read (a payer may repeat a claim); the line is one work item
    assert len(result.therapy_denials) == 1 and result.work_items_created == 1
    assert any("duplicate, counted once" in w for w in result.warnings)


def test_text_summary_says_duplicate(db: str, tmp_path: Path) -> None:
    once = interchange([claim("claim-x", "4", "195", "0", "CCNX")], control="000000321", trace="T321")
    (tmp_path / "twice.835").write_bytes(once + once)
    code, out = run("remit", "import", str(tmp_path / "twice.835"))
    assert code == 0
    assert "claims     1:" in out and "duplicate  1 claim(s) repeated within a file" in out
