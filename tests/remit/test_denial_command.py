"""`ptguard denial` text: claim-level codes are printed in plain words, and a mistyped payer id is refused."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from ptguard.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_claim_level_codes_are_shown(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert main(["denial", str(ROOT / "tests" / "remit" / "fixtures" / "medicare-ma130.835")], out=out) == 0
    text = out.getvalue()
    assert "claim      CO-16: the claim lacks information" in text
    assert "claim      MA130: the claim is unprocessable" in text
    assert "claim      N290: the rendering provider" in text
    assert "(codes at claim level)" in text and "no reason codes" not in text


def test_mistyped_payer_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    bundle = ROOT / "fhir_fixtures" / "patient-aetna-whitfield.json"
    assert main(["denial", str(bundle), "--payer", "medicar"], out=io.StringIO()) == 3
    err = capsys.readouterr().err
    assert "unknown payer id 'medicar'" in err and "medicare" in err


@pytest.mark.parametrize("command", ["denial", "remit-import"])
def test_bad_contract_setting_stops_instead_of_dropping_deadlines(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PTGUARD_CONTRACT_DEADLINES", str(tmp_path / "missing.yaml"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'store.sqlite3'}")
    remit = str(ROOT / "tests" / "remit" / "fixtures" / "aetna-01.835")
    args = ["denial", remit] if command == "denial" else ["remit", "import", remit]
    out = io.StringIO()
    assert main(args, out=out) == 5
    assert out.getvalue() == "" and "PTGUARD_CONTRACT_DEADLINES" in capsys.readouterr().err
    assert not (tmp_path / "store.sqlite3").exists() or command == "denial"  # nothing imported


def test_unreadable_lines_are_said_in_the_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = orjson.loads((ROOT / "fhir_fixtures" / "patient-aetna-whitfield.json").read_bytes())
    cr = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ClaimResponse")
    cr["item"] = [None, 5]
    path = tmp_path / "cr.json"
    path.write_bytes(orjson.dumps(cr))
    out = io.StringIO()
    assert main(["denial", str(path)], out=out) == 0
    text = out.getvalue()
    assert "denied     yes (lines could not be read)" in text
    assert "data       ClaimResponse.item[0] is null" in text and "None" not in text


def _aetna_variant(tmp_path: Path, change: object) -> Path:
    bundle = orjson.loads((ROOT / "fhir_fixtures" / "patient-aetna-whitfield.json").read_bytes())
    change(bundle)  # type: ignore[operator]
    path = tmp_path / "variant.json"
    path.write_bytes(orjson.dumps(bundle))
    return path


def test_a_line_without_a_sequence_never_says_none(tmp_path: Path) -> None:
    def no_sequence(bundle: dict) -> None:  # type: ignore[type-arg]
        cr = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ClaimResponse")
        cr["item"][0]["itemSequence"] = 99

    out = io.StringIO()
    assert main(["appeal", str(_aetna_variant(tmp_path, no_sequence)), "--claim-response", "cr-aetna-01"], out=out) == 0
    text = out.getvalue()
    assert "line None" not in text and "denied line 99 (its service code is not on the claim)" in text
    assert "Denied line 99 matches no item of the Claim" in text


def test_duplicate_copies_are_reported_by_denial_and_appeal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def duplicate(bundle: dict) -> None:  # type: ignore[type-arg]
        entry = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "ClaimResponse")
        bundle["entry"].append({**entry, "resource": {**entry["resource"], "created": "2026-10-01"}})

    path = _aetna_variant(tmp_path, duplicate)
    out = io.StringIO()
    assert main(["denial", str(path), "--format", "json"], out=out) == 0
    notes = orjson.loads(out.getvalue())["data_quality"]
    assert any(n["id"] == "data-quality.duplicate-resource" for n in notes)
    assert main(["appeal", str(path), "--claim-response", "cr-aetna-01"], out=io.StringIO()) == 0
    assert "appears more than once" in capsys.readouterr().err
