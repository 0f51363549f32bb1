"""Fuzz: fixture 835s mutated at the byte, segment and element level; `remit import` and `denial` never crash.

Run with PTGUARD_DEBUG=1, so an unexpected exception escapes with its traceback and fails the test: a pass means the
reader answers every mutation with a one-line error (exit 2, or a quarantine) or reads the file, never exit 70.
"""

from __future__ import annotations

import io
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from remit_util import FIXTURES, run_cli

from ptguard.cli import main
from ptguard.remit.x12 import X12Error, decode, detect_delimiters

SOURCES = sorted(FIXTURES.glob("*.835"))
CASES_PER_SEED = 45
# What ends up in an amount, date, quantity or code element of a corrupt or hostile file.
JUNK = ["ABC", "1O.00", "2026-01-01", "99999999", "20260230", "-", "", "NaN", "Infinity", "sNaN", "1,000.00",
        "1e400", "-1e999999999", "1E-999999999", "9" * 400, "x" * 5000, "\x00", "é", "٣", "１２", "+5", " 12 "]
BYTES = [b"\x00", "é".encode(), b"\xff\xfe", b"\x80", "\u2028".encode(), b"\r", b"~", b"*", b":"]


def _mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One mutation of an interchange: truncate, insert bytes, or drop/duplicate/re-separate/corrupt one segment."""
    kind = rng.randrange(8)
    if kind == 0:
        cut = rng.randrange(len(data))
        return data[:cut], f"truncated at byte {cut}"
    if kind == 1:
        at, junk = rng.randrange(len(data) + 1), rng.choice(BYTES)
        return data[:at] + junk + data[at:], f"{junk!r} inserted at byte {at}"
    try:
        text = decode(data)
        delims, _ = detect_delimiters(text)
    except X12Error:  # an earlier mutation broke the ISA: the file is refused whatever else changes
        return data, "unchanged"
    segs = text.split(delims.segment)
    i = rng.randrange(1, len(segs))
    if kind == 2:
        del segs[i]
        what = f"segment {i + 1} dropped"
    elif kind == 3:
        segs.insert(i, segs[i])
        what = f"segment {i + 1} duplicated"
    elif kind == 4:
        other = rng.choice([c for c in "*|^:>~+" if c != delims.element])
        segs[i] = segs[i].replace(delims.element, other)
        what = f"segment {i + 1} separated by {other!r}"
    else:
        els = segs[i].split(delims.element)
        if len(els) < 2:
            return text.encode(), "unchanged"
        k = rng.randrange(1, len(els))
        value = rng.choice(JUNK)
        if delims.component in els[k] and rng.random() < 0.4:
            comps = els[k].split(delims.component)
            comps[rng.randrange(len(comps))] = value
            value = delims.component.join(comps)
        els[k] = value
        segs[i] = delims.element.join(els)
        what = f"{els[0].strip()}{k:02d} = {value[:20]!r}"
    return delims.segment.join(segs).encode(rng.choice(["utf-8", "utf-8", "latin-1", "utf-16"]), "replace"), what


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


@pytest.mark.parametrize("seed", range(4))
def test_a_mutated_835_is_read_or_refused_in_one_line(
    seed: int, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PTGUARD_DEBUG", "1")
    rng = random.Random(seed)
    codes: dict[str, set[int]] = {"remit": set(), "denial": set()}
    for n in range(CASES_PER_SEED):
        source = rng.choice(SOURCES)
        data, what = source.read_bytes(), []
        for _ in range(rng.choice((1, 1, 2, 3))):
            data, change = _mutate(data, rng)
            what.append(change)
        path = tmp_path / f"case{n}.835"
        path.write_bytes(data)
        for argv in (["remit", "import", str(path), "--format", "json"], ["denial", str(path), "--format", "json"]):
            out = io.StringIO()
            code = main(argv, out)  # PTGUARD_DEBUG: anything unexpected escapes here with its traceback
            err = capsys.readouterr().err
            codes[argv[0]].add(code)
            assert code in (0, 2), (source.name, what, argv[0], code, err)
            assert "internal error" not in err and "Traceback" not in err, (source.name, what, err)
            if code == 0 and argv[0] == "denial":
                assert _finite(json.loads(out.getvalue())), (source.name, what)
    assert codes["remit"] == {0, 2} and codes["denial"] == {0, 2}, codes  # both readable and refused files seen


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1e400", "not a decimal amount"),  # X12's R type has no exponent
        ("-1e999999999", "not a decimal amount"),
        ("1E5", "not a decimal amount"),
        ("１２", "not a decimal amount"),  # full-width digits: Python's Decimal reads them, X12 does not
        ("1_000", "not a decimal amount"),
        ("1000000000000000", "out of range"),
        ("9" * 400, "out of range"),
    ],
)
def test_an_amount_that_is_not_x12_money_quarantines_the_file(value: str, reason: str, db: str, tmp_path: Path) -> None:
    """Was: CAS03 '1e400' read as a Decimal, became float('inf') and an `amount: null` in the ClaimResponse."""
    text = (FIXTURES / "aetna-01.835").read_text()
    cas = next(line for line in text.split("~") if line.strip().startswith("CAS*CO*50*"))
    bad = cas.replace(cas.strip().split("*")[3], value, 1)
    path = tmp_path / "big.835"
    path.write_text(text.replace(cas, bad))
    code, out = run_cli("remit", "import", str(path), "--format", "json")
    summary = json.loads(out)["summary"]
    assert summary["by_status"] == {"quarantined": 1}, summary
    assert "CAS03" in summary["quarantined"][0]["reason"] and reason in summary["quarantined"][0]["reason"]
    code, _ = run_cli("denial", str(path))
    assert code == 2


def test_the_largest_plausible_amount_still_reads(db: str, tmp_path: Path) -> None:
    text = (FIXTURES / "aetna-01.835").read_text()
    cas = next(line for line in text.split("~") if line.strip().startswith("CAS*CO*50*"))
    path = tmp_path / "ok.835"
    path.write_text(text.replace(cas, cas.replace(cas.strip().split("*")[3], "999999999999999.99", 1)))
    code, out = run_cli("remit", "import", str(path), "--format", "json")
    assert code == 0 and json.loads(out)["summary"]["by_status"] == {"imported": 1}


def test_a_count_in_other_unicode_digits_is_an_error_not_a_crash(db: str, tmp_path: Path) -> None:
    """Was: GE01 '²' passed str.isdigit() and int('²') raised ValueError (exit 70)."""
    text = (FIXTURES / "aetna-01.835").read_text()
    ge = next(line for line in text.split("~") if line.strip().startswith("GE*"))
    path = tmp_path / "sup.835"
    path.write_text(text.replace(ge, ge.replace(ge.strip().split("*")[1], "²", 1)), encoding="utf-8")
    code, out = run_cli("remit", "import", str(path), "--format", "json")
    assert code in (0, 2), out
    assert "internal error" not in out
