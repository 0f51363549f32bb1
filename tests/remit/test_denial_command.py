"""`ptguard denial` text: claim-level codes are printed in plain words, and a mistyped payer id is refused."""

from __future__ import annotations

import io
from pathlib import Path

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
