"""`ptguard remit import|watch`, `ptguard worklist` and `ptguard denial`: outputs, schemas, exit codes, the drop folder."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from remit_util import FIXTURES, claim, interchange, validate
from remit_util import run_cli as run

from ptguard.remit.watch import pending_files, scan_once

ROOT = Path(__file__).resolve().parents[2]
TODAY_DUE = "2027-05-19"




def test_import_folder_json_summary(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run("remit", "import", str(FIXTURES), "--chart", str(ROOT / "fhir_fixtures"), "--format", "json")
    assert code == 0
    data = json.loads(out)
    validate(data, "remit-import-output")
    summary = data["summary"]
    assert summary["by_status"]["imported"] == 5
    assert summary["therapy_denials_by_payer"]["AETNA LIFE INSURANCE COMPANY"] == {"CO-50": 1}
    assert summary["therapy_denials_by_payer"]["UNITEDHEALTHCARE"] == {"CO-151": 1}
    err = capsys.readouterr().err
    assert "[1/6]" in err and "aetna-01.835: imported" in err
    # a second run creates nothing new
    code, out = run("remit", "import", str(FIXTURES), "--format", "json")
    again = json.loads(out)["summary"]
    assert (
        code == 0 and again["by_status"] == {"already-imported": 5, "rejected": 1} and again["work_items_created"] == 0
    )


def test_import_text_summary_and_exit_codes(db: str, tmp_path: Path) -> None:
    code, out = run("remit", "import", str(FIXTURES / "uhc-151.835"), str(FIXTURES / "medicare-ma130.835"))
    assert code == 0
    assert "files      2 (2 imported)" in out and "UNITEDHEALTHCARE: CO-151 ×1" in out
    junk = tmp_path / "junk.txt"
    junk.write_text("nothing here")
    code, out = run("remit", "import", str(junk))
    assert code == 2 and "rejected" in out and "no ISA interchange header" in out
    code, _ = run("remit", "import", str(tmp_path / "missing"))
    assert code == 2


def test_worklist_json_and_text(db: str) -> None:
    run("remit", "import", str(FIXTURES), "--chart", str(ROOT / "fhir_fixtures"))
    code, out = run("worklist", "--format", "json")
    assert code == 0
    data = json.loads(out)
    validate(data, "worklist-output")
    items = data["items"]
    assert items[0]["claim"]["control_number"] == "claim-aetna-01" and items[0]["due_date"] == TODAY_DUE
    days = [i["days_left"] for i in items if i["days_left"] is not None]
    assert days == sorted(days)
    code, out = run("worklist")
    assert code == 0 and "GREGORY WHITFIELD" in out and "CO-50" in out and "167 d left" in out
    code, out = run("worklist", "--status", "reversed")
    assert code == 0 and "No reversed work items" in out


def test_denial_on_an_835_and_on_a_fhir_bundle(db: str, tmp_path: Path) -> None:
    code, out = run("denial", str(FIXTURES / "aetna-01.835"), "--format", "json")
    assert code == 0
    d = json.loads(out)
    validate(d, "denial-output")
    assert d["denied"] and d["path"] == "appeal" and d["lines"][0]["code"] == "97530"
    assert {"system": "https://x12.org/codes/claim-adjustment-reason-codes", "code": "50", "group": "CO"}.items() <= (
        d["lines"][0]["reasons"][0].items()
    )
    assert d["deadline"]["due"] == TODAY_DUE and d["deadline"]["payer_type"] == "commercial"
    code, out = run("denial", str(FIXTURES / "bcbs-97-236.835"), "--format", "json")
    several = json.loads(out)
    validate(several, "denial-output")
    assert len(several["denials"]) == 2
    code, out = run("denial", str(ROOT / "fhir_fixtures" / "patient-aetna-whitfield.json"), "--format", "json")
    assert code == 0
    native = json.loads(out)
    validate(native, "denial-output")
    assert native["path"] == "appeal" and native["deadline"]["due"] == TODAY_DUE
    code, out = run("denial", str(FIXTURES / "medicare-ma130.835"))
    assert code == 0 and "resubmit" in out
    not_denied = tmp_path / "cr.json"
    not_denied.write_text(
        json.dumps(
            {
                "resourceType": "ClaimResponse",
                "id": "x",
                "outcome": "complete",
                "item": [
                    {
                        "itemSequence": 1,
                        "adjudication": [
                            {"category": {"coding": [{"code": "submitted"}]}, "amount": {"value": 10}},
                            {"category": {"coding": [{"code": "benefit"}]}, "amount": {"value": 10}},
                        ],
                    }
                ],
            }
        )
    )
    code, out = run("denial", str(not_denied), "--format", "json")
    d = json.loads(out)
    validate(d, "denial-output")
    assert d["denied"] is False and d["path"] == "none" and "deadline" not in d
    code, _ = run("denial", str(ROOT / "fhir_fixtures" / "patient-medicare-abernathy.json"))
    assert code == 2


def test_watch_folder_moves_files_and_skips_partial_writes(db: str, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    shutil.copy(FIXTURES / "aetna-01.835", drop / "aetna-01.835")
    (drop / "bad.835").write_bytes(b"not an 835 at all")
    partial = drop / "incoming.835"
    partial.write_bytes(interchange([claim("c-w", "4", "65", "0", "PW")], control="000000950"))
    os.utime(partial, (time.time(), time.time()))  # just written: not settled yet
    for settled in (drop / "aetna-01.835", drop / "bad.835"):
        os.utime(settled, (time.time() - 60, time.time() - 60))
    assert [p.name for p in pending_files(drop)] == ["aetna-01.835", "bad.835"]
    code, out = run("remit", "watch", str(drop), "--once")
    assert code == 0 and "aetna-01.835: imported → processed/" in out and "bad.835: rejected → quarantine/" in out
    assert (drop / "processed" / "aetna-01.835").exists()
    assert (drop / "quarantine" / "bad.835").exists()
    assert "no ISA" in (drop / "quarantine" / "bad.835.errors.txt").read_text()
    assert partial.exists()
    os.utime(partial, (time.time() - 60, time.time() - 60))
    shutil.copy(FIXTURES / "aetna-01.835", drop / "aetna-01.835")  # the same file dropped again
    os.utime(drop / "aetna-01.835", (time.time() - 60, time.time() - 60))
    results = scan_once(drop, db_url=db, today=__import__("datetime").date(2026, 12, 3))
    assert sorted(r.status for r in results) == ["already-imported", "imported"]
    assert (drop / "processed" / "aetna-01.1.835").exists() and (drop / "processed" / "incoming.835").exists()
    assert sorted(p.name for p in drop.iterdir() if p.is_file()) == []
