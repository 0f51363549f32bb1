"""Hostile and odd input found by a tester: each gives a specific error or a data-quality finding, never a crash."""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from ptguard.check import run_check
from ptguard.cli import main

ROOT = Path(__file__).resolve().parents[1]
CIGNA = ROOT / "fhir_fixtures" / "patient-cigna-nakamura.json"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    out = io.StringIO()
    code = main(args, out=out)
    return code, out.getvalue(), capsys.readouterr().err


def mutated(tmp_path: Path, change: Any) -> Path:
    bundle = orjson.loads(CIGNA.read_bytes())
    change(bundle)
    path = tmp_path / "mutated.json"
    path.write_bytes(orjson.dumps(bundle))
    return path


def resource(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype)


def ids(path: Path) -> tuple[set[str], set[str]]:
    report = run_check([path], encounter="enc-cigna-01")
    findings = {f.id for f in report.evaluations[0].findings} if report.evaluations else set()
    return findings, {f.id for f in report.data_quality}


def test_devices_and_pipes_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    for target in (str(fifo), "/dev/zero"):
        code, _, err = run(["check", target], capsys)
        assert code == 2 and "not a regular file" in err


@pytest.mark.parametrize("payer", ["../data/payer-map", "../../../../tmp/evil", "Aetna", "a" * 80])
def test_payer_argument_cannot_name_a_path(payer: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["check", str(CIGNA), "--payer", payer], capsys)
    assert code == 3 and "not a payer id" in err and "known:" in err


def test_unknown_payer_in_the_data_falls_back(tmp_path: Path) -> None:
    def change(b: dict[str, Any]) -> None:
        for e in b["entry"]:
            r = e["resource"]
            if r["resourceType"] == "Organization":
                for ident in r.get("identifier", []):
                    if ident.get("system") == "https://ptguard.dev/payer-id":
                        ident["value"] = "../../rules/data/payer-map"

    findings, _ = ids(mutated(tmp_path, change))
    assert "data-quality.unknown-payer" in findings
    assert "units.billed-vs-supported" in findings  # the rest of the check still ran


def test_unreadable_claim_lines_are_reported(tmp_path: Path) -> None:
    def items_not_list(b: dict[str, Any]) -> None:
        resource(b, "Claim")["item"] = {}

    _, dq = ids(mutated(tmp_path, items_not_list))
    assert "data-quality.bad-claim-items" in dq

    def text_quantity(b: dict[str, Any]) -> None:
        resource(b, "Claim")["item"][0]["quantity"] = {"value": "3"}

    findings, _ = ids(mutated(tmp_path, text_quantity))
    assert "data-quality.bad-units" in findings


def test_missing_reference_is_named(tmp_path: Path) -> None:
    def change(b: dict[str, Any]) -> None:
        resource(b, "Procedure")["encounter"] = {"reference": "urn:uuid:00000000-0000-0000-0000-000000000000"}

    report = run_check([mutated(tmp_path, change)])
    missing = [f for f in report.data_quality if f.id == "data-quality.missing-reference"]
    assert missing and "Procedure.encounter points to urn:uuid:00000000" in missing[0].message


@pytest.mark.parametrize(
    ("minutes", "expected"),
    [
        ({"value": -31, "unit": "min"}, "data-quality.implausible-minutes"),
        ({"value": 100000, "unit": "min"}, "data-quality.implausible-minutes"),
        ({"value": 1e308, "unit": "h"}, "data-quality.implausible-minutes"),
    ],
)
def test_implausible_minutes(tmp_path: Path, minutes: dict[str, Any], expected: str) -> None:
    def change(b: dict[str, Any]) -> None:
        proc = resource(b, "Procedure")
        for ext in proc["extension"]:
            if ext["url"].endswith("timed-minutes"):
                ext["valueQuantity"] = minutes

    findings, _ = ids(mutated(tmp_path, change))
    assert expected in findings


def test_minutes_in_hours_and_fractions(tmp_path: Path) -> None:
    def change(b: dict[str, Any]) -> None:
        proc = resource(b, "Procedure")
        for ext in proc["extension"]:
            if ext["url"].endswith("timed-minutes"):
                ext["valueQuantity"] = {"value": 0.5, "unit": "h", "code": "h"}

    report = run_check([mutated(tmp_path, change)], encounter="enc-cigna-01")
    assert report.evaluations[0].timed_minutes == {"97530": 30}


def test_cancelled_encounter_is_not_checked(tmp_path: Path) -> None:
    def change(b: dict[str, Any]) -> None:
        resource(b, "Encounter")["status"] = "cancelled"

    report = run_check([mutated(tmp_path, change)])
    assert not report.evaluations
    assert "data-quality.encounter-not-held" in {f.id for f in report.data_quality}


def test_invalid_date_is_not_called_zoneless(tmp_path: Path) -> None:
    def change(b: dict[str, Any]) -> None:
        resource(b, "Encounter")["period"]["start"] = "2026-02-30T10:00:00-04:00"

    findings, _ = ids(mutated(tmp_path, change))
    assert "data-quality.bad-date" in findings and "data-quality.no-timezone" not in findings


def test_control_characters_are_escaped_in_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def change(b: dict[str, Any]) -> None:
        patient = resource(b, "Patient")
        patient["name"] = [{"text": "Evil\x1b[31mRed\u202eName\nforged line"}]

    code, out, _ = run(["check", str(mutated(tmp_path, change))], capsys)
    assert code == 0 and "\x1b" not in out and "\u202e" not in out and "forged line" in out
    assert "\nforged line" not in out


def test_bad_file_in_a_folder_does_not_stop_the_rest(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(CIGNA.read_bytes())
    (tmp_path / "b.json").write_text("{broken")
    (tmp_path / "c.xml").write_text("<nope")
    report = run_check([tmp_path])
    assert report.evaluations
    assert {f.id for f in report.data_quality} >= {"data-quality.unreadable-file"}


def test_units_command_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    for arg in ("97530=999999999999", "97530=99999999999999999999999", "97530=²", "97530=٣٣", "FOO=30", "97530=-5"):
        code, _, err = run(["units", arg], capsys)
        assert code == 2 and err.startswith("ptguard: error:"), arg
    code, out, _ = run(["units", "97161=45", "97530=10", "--format", "json"], capsys)
    assert orjson.loads(out) == {"method": "cms", "total_minutes": 10, "units": {"97530": 1}, "untimed": {"97161": 1}}


def test_settings_errors_are_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTGUARD_PAYER_MAP", str(tmp_path / "missing.yaml"))
    code, _, err = run(["check", str(CIGNA)], capsys)
    assert code == 5 and "PTGUARD_PAYER_MAP" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("[]")
    monkeypatch.setenv("PTGUARD_PAYER_MAP", str(bad))
    code, _, err = run(["check", str(CIGNA)], capsys)
    assert code == 5 and "name_patterns" in err
    custom = tmp_path / "map.yaml"
    custom.write_text("identifier_system: urn:none\nname_patterns:\n  - {pattern: cigna, payer: medicare}\n")
    monkeypatch.setenv("PTGUARD_PAYER_MAP", str(custom))
    code, out, _ = run(["check", str(CIGNA), "--format", "json"], capsys)
    assert code == 0 and {e["payer"]["id"] for e in orjson.loads(out)["encounters"]} == {"medicare"}
    monkeypatch.delenv("PTGUARD_PAYER_MAP")
    monkeypatch.setenv("PTGUARD_CRITERIA_DIR", str(tmp_path / "nowhere"))
    code, _, err = run(["check", str(CIGNA)], capsys)
    assert code == 5 and "criteria directory" in err


def test_unwritable_output() -> None:
    import subprocess
    import sys

    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "ptguard.cli", "check", str(CIGNA)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert proc.returncode == 74 and "cannot read or write" in proc.stderr and "Traceback" not in proc.stderr


def test_fixture_bundle_untouched() -> None:
    before = copy.deepcopy(orjson.loads(CIGNA.read_bytes()))
    run_check([CIGNA])
    assert orjson.loads(CIGNA.read_bytes()) == before


def test_unwritable_out_path_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["appeal", "cr-aetna-01", "--bundle", str(CIGNA.parent), "--out", "/nonexistent/dir/x.pdf"], capsys)
    assert code == 74 and "/nonexistent/dir/x.pdf: cannot read or write" in err and err.count("\n") == 1


def test_denial_on_a_folder_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["denial", str(CIGNA.parent)], capsys)
    assert code == 2 and "is a folder" in err
