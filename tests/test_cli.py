"""The `ptguard` command: JSON outputs match their schemas; bad input gives one line and a non-zero exit."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from ptguard.cli import main

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fhir_fixtures"


def _schema(name: str) -> Draft202012Validator:
    return Draft202012Validator(orjson.loads((ROOT / "schemas" / name).read_bytes()))


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    out = io.StringIO()
    code = main(args, out=out)
    return code, out.getvalue(), capsys.readouterr().err


def test_units_json_matches_issue_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["units", "97112=24", "97110=23", "--format", "json"], capsys)
    assert code == 0
    value = orjson.loads(out)
    assert value == {"method": "cms", "total_minutes": 47, "units": {"97112": 2, "97110": 1}}
    _schema("units-output.schema.json").validate(value)


def test_units_per_code_and_bad_argument(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["units", "97110=8", "97112=8", "97530=8", "--method", "per-code", "--format", "json"], capsys)
    assert orjson.loads(out)["units"] == {"97110": 1, "97112": 1, "97530": 1}
    code, _, err = run(["units", "97530=abc"], capsys)
    assert code == 2 and err.count("\n") == 1 and "whole number" in err


def test_check_json_validates_against_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check", str(FIXTURES), "--format", "json"], capsys)
    assert code == 0
    value = orjson.loads(out)
    _schema("check-output.schema.json").validate(value)
    cigna = next(e for e in value["encounters"] if e["encounter"] == "Encounter/enc-cigna-01")
    assert cigna["units"]["supported"] == {"97530": 2} and cigna["units"]["billed"] == {"97530": 3}
    assert cigna["payer"]["id"] == "cigna"


def test_check_text_for_one_encounter(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check", str(FIXTURES / "patient-cigna-nakamura.json"), "--encounter", "enc-cigna-01"], capsys)
    assert code == 0
    assert "97530: 31 timed minutes support 2 units, 3 billed" in out
    assert "CPG135" in out


def test_unknown_encounter_and_payer(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["check", str(FIXTURES / "patient-cigna-nakamura.json"), "--encounter", "nope"], capsys)
    assert code == 3 and "nope" in err
    code, _, err = run(["check", str(FIXTURES / "patient-cigna-nakamura.json"), "--payer", "acme"], capsys)
    assert code == 3 and "acme" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("content", "expected_code", "needle"),
    [
        (b'{"resourceType": "Bundle", "entry": [', 2, "malformed JSON"),
        (b'{"hello": "world"}', 2, "not a FHIR resource"),
        (b'{"resourceType": "Encounter", "id": "x", "actualPeriod": {"start": "2026-01-01"}}', 2, "R5"),
        (b'{"resourceType": "Bundle", "type": "collection", "entry": []}', 2, "no FHIR resources"),
        (b"", 2, "empty"),
        (b"\x00\x01\x02binary", 2, "malformed JSON"),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected_code: int, needle: str
) -> None:
    path = tmp_path / "input.json"
    path.write_bytes(content)
    code, out, err = run(["check", str(path)], capsys)
    assert code == expected_code
    assert needle in err and err.startswith("ptguard: error:") and err.count("\n") == 1
    assert "Traceback" not in err and out == ""


def test_missing_reference_is_a_finding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Encounter",
                    "id": "e1",
                    "status": "finished",
                    "class": {"code": "AMB"},
                    "subject": {"reference": "Patient/ghost"},
                    "period": {"start": "2026-11-02T09:00:00-05:00"},
                }
            },
            {
                "resource": {
                    "resourceType": "Procedure",
                    "id": "p1",
                    "status": "completed",
                    "subject": {"reference": "Patient/ghost"},
                    "encounter": {"reference": "Encounter/e1"},
                    "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97530"}]},
                    "performedPeriod": {"start": "2026-11-02T09:00:00-05:00", "end": "2026-11-02T09:31:00-05:00"},
                }
            },
        ],
    }
    path = tmp_path / "b.json"
    path.write_bytes(orjson.dumps(bundle))
    code, out, _ = run(["check", str(path), "--format", "json"], capsys)
    assert code == 0
    enc = orjson.loads(out)["encounters"][0]
    ids = {f["id"] for f in enc["findings"]}
    assert {"data-quality.missing-reference", "data-quality.no-coverage", "note.present"} <= ids
    assert enc["units"]["supported"] == {"97530": 2}


def test_fifty_megabyte_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    filler = "x" * 2000
    entries = [
        {"resource": {"resourceType": "Observation", "id": f"o{i}", "status": "final", "code": {"text": filler}}}
        for i in range(26_000)
    ]
    path = tmp_path / "big.json"
    path.write_bytes(orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    assert path.stat().st_size > 50 * 1024 * 1024
    code, out, _ = run(["check", str(path)], capsys)
    assert code == 0 and "No therapy encounters found in 26000 resource(s)" in out


def test_console_script_runs_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    proc = subprocess.run(
        [sys.executable, "-m", "ptguard.cli", "check", str(bad)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.startswith("ptguard: error:")
