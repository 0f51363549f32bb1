"""Tests for the X12 835 reader: public samples, our fixtures and malformed input."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from ptguard.errors import InputError
from ptguard.remit.x12 import X12Error, decode, detect_delimiters, normalise, read_835
from tests.shared_data import PUBLIC_X12, require

PUBLIC = PUBLIC_X12
FIXTURES = Path(__file__).parent / "fixtures"


def _public_files() -> list[Path]:
    if not PUBLIC.is_dir():
        return []
    return sorted(p for p in PUBLIC.rglob("*") if p.is_file() and p.suffix != ".md")


def _has_isa(data: bytes) -> bool:
    return any("ISA" in data.decode(enc, errors="replace") for enc in ("latin-1", "utf-16-le"))


PUBLIC_FILES = [p for p in _public_files() if _has_isa(p.read_bytes())]


def test_public_corpus_is_there() -> None:
    require(PUBLIC)
    assert len(PUBLIC_FILES) >= 37


@pytest.mark.parametrize("path", PUBLIC_FILES, ids=lambda p: str(p.relative_to(PUBLIC)))
def test_public_file_parses_or_is_rejected_specifically(path: Path) -> None:
    data = path.read_bytes()
    try:
        result = read_835(data, path.name)
    except X12Error as exc:
        msg = str(exc)
        assert "\n" not in msg and path.name in msg and len(msg) < 300
        return
    assert result.raw_clp_count > 0
    if result.ok:
        assert result.claim_count == result.raw_clp_count
    else:
        # Quarantined: every claim is either read or rejected, each error is one specific line.
        assert result.claim_count + result.rejected_claims == result.raw_clp_count
        for err in result.errors:
            assert isinstance(err, X12Error)
            assert "\n" not in str(err) and ("segment" in str(err) or "CLP" in str(err))


def _independent_clp_count(data: bytes) -> int:
    """CLP segment starts found with a regex over the raw text, without any of ptguard's reading code.

    The element separator is the ISA's 4th character; a segment ends at '~', a newline, or the terminator the
    ISA itself ends with (the character after ISA16), so '|'-separated, newline-framed and '~'-as-element files
    are all counted.
    """
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = data.decode("utf-16")
    elif len(data) > 3 and data[1] == 0 and data[3] == 0:
        text = data.decode("utf-16-le")
    else:
        text = data.decode("latin-1")
    start = text.find("ISA")
    assert start >= 0, "not an X12 interchange"
    text = text[start:]
    sep = text[3]
    isa16_at = -1
    for _ in range(16):
        isa16_at = text.index(sep, isa16_at + 1)
    ends = {"~", "\n", "\r", text[isa16_at + 2]} - {sep}
    end = "[" + "".join(re.escape(c) for c in sorted(ends)) + "]"
    return len(re.findall(rf"(?:\A|{end})(?:{end}|[ \t])*CLP{re.escape(sep)}", text))


SEGMENT_ERROR = re.compile(r"segment \d+ \([A-Z][A-Z0-9]{1,2}\)|read \d+ claims but the file has \d+ CLP segments")


def test_independent_clp_count_handles_separators_and_framing() -> None:
    isa = "ISA{s}00{s}          {s}00{s}          {s}ZZ{s}A              {s}ZZ{s}B              {s}260101{s}1200{s}^{s}00501{s}000000001{s}0{s}P{s}:"
    star = isa.format(s="*") + "~GS*HP~ST*835*1~CLP*a*1~NM1*QC~CLP*b*4~SE*5*1~"
    pipe = isa.format(s="|") + "$\n~ST|835|1$\n~CLP|a|1$\n~CLP|b|4$\n~SE|4|1$\n"
    tilde = isa.format(s="~") + "_ST~835~1_CLP~a~1_CLP~b~4_CLP*c_SE~5~1_"  # 'CLP*c' is not a segment here
    lines = isa.format(s="*") + "\nST*835*1\n  CLP*a*1\nCLPX*no\nNM1*QC*CLP*x\nCLP*b*4\n"
    for text in (star, pipe, tilde, lines):
        assert _independent_clp_count(text.encode()) == 2, text
    assert _independent_clp_count(star.encode("utf-16")) == 2


@pytest.mark.parametrize("path", PUBLIC_FILES, ids=lambda p: str(p.relative_to(PUBLIC)))
def test_public_claim_count_matches_an_independent_clp_count(path: Path) -> None:
    data = path.read_bytes()
    expected = _independent_clp_count(data)
    try:
        result = read_835(data, path.name)
    except X12Error as exc:
        # Rejected whole: a specific one-line reason naming the file; an 835 that holds claims is never
        # rejected without naming the segment at fault.
        msg = str(exc)
        assert "\n" not in msg and path.name in msg and len(msg) < 300, msg
        assert expected == 0 or SEGMENT_ERROR.search(msg), (expected, msg)
        return
    if result.ok:
        assert result.claim_count == expected, (result.claim_count, expected)
    else:
        # Quarantined: each claim is read or rejected, and every error names the segment (or the count) at fault.
        assert result.errors
        for err in result.errors:
            assert "\n" not in str(err) and path.name in str(err) and SEGMENT_ERROR.search(str(err)), str(err)
        assert result.claim_count + result.rejected_claims == expected, (result.claim_count, expected)


def test_independent_count_covers_clean_and_quarantined_public_files() -> None:
    outcomes = {"clean": 0, "quarantined": 0, "rejected": 0}
    for path in PUBLIC_FILES:
        try:
            result = read_835(path.read_bytes(), path.name)
        except X12Error:
            outcomes["rejected"] += 1
            continue
        outcomes["clean" if result.ok else "quarantined"] += 1
    assert outcomes["clean"] >= 20 and outcomes["quarantined"] >= 5 and outcomes["rejected"] >= 10, outcomes


EXPECTED_PUBLIC = {
    # file: (claims read, raw CLP, quarantined)
    "pyx12/835_mult_loops.txt": (1, 1, False),
    "oopfactory-x12parser/835_5010/ExampleFromNth.txt": (56, 56, False),
    "oopfactory-x12parser/835_4010/835_DeIdent_01.dat": (96, 96, False),
    "oopfactory-x12parser/835_4010/835_DeIdent_02.dat": (375, 375, False),
    "oopfactory-x12parser/835_5010/Example1.txt": (9, 10, True),
    "edi-835-parser-affect-therapeutics/nevada_medicaid.txt": (3, 3, False),
    "edi-835-parser-chs-cds-aiml/test.835": (1, 1, True),
    "linuxforhealth-x12/835/tertiary-payment.835": (0, 1, True),
    "linuxforhealth-x12/835/secondary-payment.835": (2, 2, False),
    "tigershark/835-example.txt": (2, 2, True),
    "badx12/X221-multiple-claims-single-check.edi": (9, 9, False),
}


@pytest.mark.parametrize("rel", sorted(EXPECTED_PUBLIC))
def test_public_known_outcomes(rel: str) -> None:
    path = require(PUBLIC / rel)
    result = read_835(path.read_bytes(), rel)
    claims, raw, quarantined = EXPECTED_PUBLIC[rel]
    assert (result.claim_count, result.raw_clp_count, not result.ok) == (claims, raw, quarantined)


def test_public_quirks_read_correctly() -> None:
    require(PUBLIC)
    # Truncated CLP in real data: the other 9 claims survive, the bad one is named.
    ex1 = read_835((PUBLIC / "oopfactory-x12parser/835_5010/Example1.txt").read_bytes(), "Example1.txt")
    assert ex1.rejected_claims == 1
    assert "segment 98 (CLP), CLP03: total claim charge is missing" in str(ex1.errors[0])
    assert {c.status for c in ex1.claims} >= {"1", "4", "22"}
    # '>' composites although ISA16 says ':'.
    sec = read_835((PUBLIC / "linuxforhealth-x12/835/secondary-payment.835").read_bytes(), "s")
    line = sec.claims[1].service_lines[0]
    assert (line.procedure.code, line.procedure.modifiers) == ("12345", ["26"])
    assert any("component separator" in w for w in sec.warnings)
    # Newline framing with a leading '~' and '|' elements / '^' components (4010).
    tiger = read_835((PUBLIC / "tigershark/835-example.txt").read_bytes(), "t")
    assert tiger.delimiters is not None and tiger.delimiters.newline_framed
    assert tiger.claims[1].service_lines[0].remark_codes == ["N220", "M68"]
    assert tiger.remittances[0].provider_adjustments[0].amount == Decimal("-361.19")
    assert tiger.remittances[0].version == "004010X091A1"
    # No LX, and a SE01 off by one: claims read, file quarantined on the count.
    no_lx = read_835((PUBLIC / "edi-835-parser-chs-cds-aiml/test.835").read_bytes(), "test.835")
    assert no_lx.claim_count == 1 and "SE01 says 17 segments but the transaction has 16" in str(no_lx.errors[0])
    # Non-fixed-width ISA, 3 ST, PLB with 6 composites.
    nv = read_835((PUBLIC / "edi-835-parser-affect-therapeutics/nevada_medicaid.txt").read_bytes(), "nv")
    assert len(nv.remittances) == 3 and nv.ok
    assert sum(len(r.provider_adjustments) for r in nv.remittances) == 6


def test_837_public_files_refused_clearly() -> None:
    require(PUBLIC)
    with pytest.raises(X12Error, match="837 claim file, not a remittance"):
        read_835((PUBLIC / "linuxforhealth-x12/837P/demo.example1.837").read_bytes(), "demo.837")
    with pytest.raises(X12Error, match="837"):
        read_835((PUBLIC / "oopfactory-x12parser/837P_5010/UnicodeExample.txt").read_bytes(), "u16")


# --------------------------------------------------------------------------------------------- fixtures


def _read(name: str):  # type: ignore[no-untyped-def]
    result = read_835((FIXTURES / name).read_bytes(), name)
    assert result.ok, result.errors
    return result


def test_fixture_aetna_01_co50() -> None:
    r = _read("aetna-01.835")
    rem = r.remittances[0]
    assert (rem.payer.name, rem.payer.identifier, rem.payment_method) == (
        "AETNA LIFE INSURANCE COMPANY",
        "60054",
        "NON",
    )
    assert rem.interchange_control_number == "000000101" and rem.transaction_control_number == "0001"
    (claim,) = rem.claims
    assert (claim.patient_control_number, claim.status, claim.charge, claim.paid) == (
        "claim-aetna-01",
        "4",
        Decimal(195),
        Decimal(0),
    )
    assert (claim.patient_last_name, claim.patient_first_name, claim.patient_member_id) == (
        "WHITFIELD",
        "GREGORY",
        "W-TEST-4410291",
    )
    assert claim.payer_claim_control_number == "AET26310000123"
    (line,) = claim.service_lines
    assert (line.procedure.qualifier, line.procedure.code, line.procedure.modifiers) == ("HC", "97530", ["GP"])
    assert line.units == Decimal(3) and line.service_date is not None and line.service_date.isoformat() == "2026-11-02"
    assert [(a.group, a.reason, a.amount) for a in line.adjustments] == [("CO", "50", Decimal(195))]
    assert line.remark_codes == ["N130"] and line.line_control_number == "aetna-01-line-1"


def test_fixture_bcbs_97_236_one_line() -> None:
    raw = (FIXTURES / "bcbs-97-236.835").read_bytes()
    assert b"\n" not in raw
    r = _read("bcbs-97-236.835")
    c1, c2 = r.claims
    assert c1.service_lines[1].procedure.modifiers == ["59", "GP"]
    assert [(a.group, a.reason) for a in c1.service_lines[1].adjustments] == [("CO", "97")]
    assert c1.service_lines[1].remark_codes == ["M80"]
    assert c1.service_lines[0].allowed_amount == Decimal(119)
    assert [(a.group, a.reason, a.amount) for a in c2.service_lines[1].adjustments] == [("CO", "236", Decimal(130))]


def test_fixture_uhc_151_pipe_separators() -> None:
    r = _read("uhc-151.835")
    assert r.delimiters is not None
    assert (r.delimiters.element, r.delimiters.component, r.delimiters.repetition) == ("|", "^", "}")
    line = r.claims[0].service_lines[0]
    assert (line.procedure.code, line.units, line.original_units) == ("97530", Decimal(2), Decimal(3))
    (adj,) = line.adjustments
    assert (adj.group, adj.reason, adj.amount, adj.quantity) == ("CO", "151", Decimal(55), Decimal(1))


def test_fixture_medicare_ma130() -> None:
    r = _read("medicare-ma130.835")
    (claim,) = r.claims
    assert claim.moa_remark_codes == ["MA130", "N290"]
    assert [(a.group, a.reason, a.amount) for a in claim.adjustments] == [("CO", "16", Decimal(170))]
    assert claim.service_lines[0].procedure.modifiers == ["GP", "KX"]


def test_fixture_reversal_and_plb() -> None:
    r = _read("cigna-reversal.835")
    rev, corr = r.claims
    assert (rev.status, rev.paid, corr.status, corr.paid) == ("22", Decimal(-160), "1", Decimal(200))
    assert rev.patient_control_number == corr.patient_control_number
    assert rev.service_lines[0].units == Decimal(-3)
    plb = r.remittances[0].provider_adjustments
    assert [(p.reason, p.reference, p.amount) for p in plb] == [
        ("L6", "CIG26300000041A", Decimal("-0.5")),
        ("WO", "OVERPAY-2026-0042", Decimal(10)),
    ]
    # BPR balances: claims paid minus PLB.
    assert r.remittances[0].payment_amount == sum(c.paid for c in r.claims) - sum(p.amount for p in plb)


# --------------------------------------------------------------------------------------------- malformed


def _aetna() -> bytes:
    return (FIXTURES / "aetna-01.835").read_bytes()


def test_empty_file() -> None:
    with pytest.raises(X12Error, match="empty"):
        read_835(b"", "empty.835")
    with pytest.raises(X12Error, match="empty"):
        read_835(b"  \n\n", "blank.835")


def test_binary_junk() -> None:
    junk = bytes(range(256)) * 4
    with pytest.raises(X12Error, match="binary"):
        read_835(junk, "junk.bin")


def test_x12_error_is_an_input_error() -> None:
    with pytest.raises(InputError):
        read_835(b"hello world", "hello.txt")


def test_no_isa() -> None:
    with pytest.raises(X12Error, match=r"no ISA interchange header.*'ST\*835"):
        read_835(b"ST*835*0001~BPR*I*1*C*CHK~", "noisa.835")


def test_truncated_file_keeps_what_was_read() -> None:
    data = (FIXTURES / "bcbs-97-236.835").read_bytes()
    cut = data[: data.index(b"CLP*claim-bcbs-12") + 60]
    result = read_835(cut, "cut.835")
    assert not result.ok
    assert [c.patient_control_number for c in result.claims] == ["claim-bcbs-11", "claim-bcbs-12"]
    assert any("file ends inside transaction" in str(e) for e in result.errors)


def test_missing_se_and_iea() -> None:
    text = _aetna().decode()
    no_se = "".join(line + "\n" for line in text.splitlines() if not line.startswith("SE*"))
    result = read_835(no_se.encode(), "nose.835")
    assert result.claim_count == 1
    assert any("has no SE; reached GE" in str(e) for e in result.errors)
    no_iea = "".join(line + "\n" for line in text.splitlines() if not line.startswith("IEA*"))
    result = read_835(no_iea.encode(), "noiea.835")
    assert result.claim_count == 1 and not result.ok
    assert "the file ends without IEA closing the interchange" in str(result.errors[0])


def test_bad_segment_count_in_se() -> None:
    text = _aetna().decode().replace("SE*26*0001", "SE*25*0001")
    result = read_835(text.encode(), "badse.835")
    assert result.claim_count == 1 and not result.ok
    err = result.errors[0]
    assert (err.tag, err.element) == ("SE", "SE01")
    assert "SE01 says 25 segments but the transaction has 26" in str(err)


def test_element_separator_garbage() -> None:
    with pytest.raises(X12Error, match="element separator 'A'"):
        read_835(b"ISAA00A" + b"x" * 100, "garbage.835")
    # Separator changed mid-file: the bad segment is named, the claim is quarantined, nothing crashes.
    text = _aetna().decode().replace("CAS*CO*50*195", "CAS#CO#50#195")
    result = read_835(text.encode(), "mixed.835")
    assert not result.ok and result.rejected_claims == 1
    assert "segment identifier 'CAS#CO#50#195' is not valid" in str(result.errors[0])


def test_short_isa() -> None:
    with pytest.raises(X12Error, match="ISA has 6 elements; expected 16"):
        read_835(b"ISA*00*          *00*          *ZZ*", "short.835")


def test_bad_amount_names_segment_and_element() -> None:
    text = _aetna().decode().replace("SVC*HC:97530:GP*195*0**3", "SVC*HC:97530:GP*1x5*0**3")
    result = read_835(text.encode(), "amount.835")
    assert result.rejected_claims == 1 and result.claim_count == 0
    assert str(result.errors[0]) == (
        "amount.835: segment 23 (SVC), SVC02: line item charge '1x5' is not a decimal amount"
    )


def test_one_bad_claim_others_kept() -> None:
    text = (FIXTURES / "bcbs-97-236.835").read_text().replace("CAS*CO*97*130", "CAS*XX*97*130")
    result = read_835(text.encode(), "onebad.835")
    assert [c.patient_control_number for c in result.claims] == ["claim-bcbs-12"]
    assert result.rejected_claims == 1 and "CAS01: group code 'XX'" in str(result.errors[0])


def test_837_instead_of_835() -> None:
    text = _aetna().decode().replace("ST*835*0001", "ST*837*0001")
    with pytest.raises(X12Error, match="found transaction set 837 \\(an 837 claim file"):
        read_835(text.encode(), "claim.837")


def test_bom_indentation_latin1() -> None:
    lines = _aetna().decode().splitlines()
    text = "\n".join("    " + line for line in lines).replace("RIVERBEND", "RIVERBÉND")
    result = read_835(b"\xef\xbb\xbf" + text.encode("latin-1"), "latin1.835")
    assert result.ok and result.remittances[0].payee.name == "RIVERBÉND PHYSICAL THERAPY"


def test_normaliser_pads_isa() -> None:
    squeezed = _aetna().decode().replace("          ", " ").replace("CLEARHOUSE01   ", "CLEARHOUSE01")
    text = normalise(squeezed.encode())
    assert text.index("*^*00501") == 81 and text[104] == ":" and text[105] == "~"
    d, _ = detect_delimiters(decode(text.encode()))
    assert (d.element, d.component, d.segment) == ("*", ":", "~")
