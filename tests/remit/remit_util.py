"""Test helpers: small synthetic 835 interchanges and schema validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
FIXTURES = Path(__file__).parent / "fixtures"


def claim(
    clp01: str,
    status: str,
    charge: str,
    paid: str,
    ccn: str,
    *,
    code: str = "97530",
    carc: str | None = "50",
    group: str = "CO",
    last: str = "DOE",
    first: str = "JANE",
) -> list[str]:
    """One CLP loop with one SVC line (denied with `group`-`carc` when given)."""
    segs = [
        f"CLP*{clp01}*{status}*{charge}*{paid}*0*12*{ccn}*11*1",
        f"NM1*QC*1*{last}*{first}****MI*M-{clp01}",
        f"SVC*HC:{code}:GP*{charge}*{paid}**3",
        "DTM*472*20261102",
    ]
    if carc:
        amount = f"{float(charge) - float(paid):.2f}"
        segs.append(f"CAS*{group}*{carc}*{amount}")
    return segs


def interchange(
    claims: list[list[str]],
    *,
    control: str = "000000900",
    trace: str = "TRACE900",
    payer: str = "AETNA LIFE INSURANCE COMPANY",
    amount: str = "0",
    date: str = "20261120",
    newline: bool = True,
) -> bytes:
    """A complete 005010X221A1 interchange with one ST/SE around the given CLP loops."""
    body = [
        f"BPR*I*{amount}*C*NON************{date}",
        f"TRN*1*{trace}*1512345678",
        f"DTM*405*{date}",
        f"N1*PR*{payer}",
        "N1*PE*RIVERBEND PHYSICAL THERAPY*XX*1999909009",
        "LX*1",
    ]
    for c in claims:
        body.extend(c)
    st = ["ST*835*0001*005010X221A1", *body]
    st.append(f"SE*{len(st) + 1}*0001")
    segs = [
        f"ISA*00*          *00*          *ZZ*CLEARHOUSE01   *ZZ*PTGUARDCLINIC  *261120*0930*^*00501*{control}*0*T*:",
        f"GS*HP*CLEARHOUSE01*PTGUARDCLINIC*{date}*0930*{int(control)}*X*005010X221A1",
        *st,
        f"GE*1*{int(control)}",
        f"IEA*1*{control}",
    ]
    sep = "~\n" if newline else "~"
    return (sep.join(segs) + "~\n").encode()


def validate(value: Any, schema_name: str) -> None:
    """Validate a CLI/API output against schemas/<schema_name>.schema.json."""
    schema = json.loads((SCHEMAS / f"{schema_name}.schema.json").read_text())
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(value)


def run_cli(*argv: str) -> tuple[int, str]:
    """`ptguard ARGV` in-process: its exit code and standard output."""
    import io

    from ptguard.cli import main

    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()

