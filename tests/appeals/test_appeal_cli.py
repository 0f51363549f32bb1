"""`ptguard appeal` in the form the issue gives: BUNDLE --claim-response ID --out packet.pdf."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pypdf import PdfReader

from ptguard.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_bundle_then_claim_response_option(tmp_path: Path) -> None:
    pdf = tmp_path / "packet.pdf"
    out = io.StringIO()
    bundle = ROOT / "fhir_fixtures" / "patient-aetna-whitfield.json"
    assert main(["appeal", str(bundle), "--claim-response", "cr-aetna-01", "--out", str(pdf), "--today", "2026-12-03"],
                out=out) == 0
    assert "PDF packet" in out.getvalue()
    text = " ".join(page.extract_text() for page in PdfReader(pdf).pages)
    assert "2 November 2026" in text and "97530" in text


def test_missing_chart_path_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["appeal", "no-such-folder/", "--claim-response", "cr-aetna-01"], out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert "no-such-folder/" in err and err.count("\n") == 1
