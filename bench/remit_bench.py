"""Benchmark: 835 intake of a synthetic file with N CLP loops (parse, map, full import) against a plain segment split."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ptguard.denials.decode import decode  # noqa: E402
from ptguard.remit.intake import import_835  # noqa: E402
from ptguard.remit.to_fhir import remittance_to_fhir  # noqa: E402
from ptguard.remit.x12 import read_835  # noqa: E402

CODES = ("97530", "97110", "97140", "97112", "97116")


def build_835(claims: int) -> bytes:
    """One interchange, one ST/SE, `claims` CLP loops of two SVC lines each; every 5th claim denies 97530 (CO-50)."""
    body = ["BPR*I*0*C*NON************20261120", "TRN*1*BENCH0001*1512345678", "DTM*405*20261120",
            "N1*PR*AETNA LIFE INSURANCE COMPANY", "N1*PE*RIVERBEND PHYSICAL THERAPY*XX*1999909009", "LX*1"]
    for n in range(claims):
        denied = n % 5 == 0
        other = CODES[1 + n % 4]
        paid = "55" if denied else "250"
        body += [f"CLP*bench-{n:06d}*1*260*{paid}*0*12*PCN{n:08d}*11*1",
                 f"NM1*QC*1*PATIENT{n % 97}*TEST****MI*M{n:08d}", "DTM*232*20261102",
                 "SVC*HC:97530:GP*195*" + ("0" if denied else "195") + "**3", "DTM*472*20261102"]
        body += ["CAS*CO*50*195", "LQ*HE*N130"] if denied else []
        body += [f"SVC*HC:{other}:GP*65*55**1", "DTM*472*20261102", "CAS*CO*45*10"]
    st = ["ST*835*0001*005010X221A1", *body]
    st.append(f"SE*{len(st) + 1}*0001")
    segs = ["ISA*00*          *00*          *ZZ*CLEARHOUSE01   *ZZ*PTGUARDCLINIC  *261120*0930*^*00501*000000777*0*T*:",
            "GS*HP*CLEARHOUSE01*PTGUARDCLINIC*20261120*0930*777*X*005010X221A1", *st, "GE*1*777", "IEA*1*000000777"]
    return ("~\n".join(segs) + "~\n").encode()


def best_of(runs: int, fn: object) -> float:
    """Best wall time of `runs` calls."""
    assert callable(fn)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--claims", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{'claims':>7} {'MB':>5} {'split s':>8} {'parse s':>8} {'parse+map s':>12} {'+decode s':>10} "
          f"{'import s':>9} {'parse+map cl/s':>15} {'import cl/s':>12} {'map/split':>10} {'import/split':>13}")
    for claims in args.claims:
        measure(claims, args.runs)
    return 0


def measure(claims: int, runs: int) -> None:
    """Time the split baseline and each intake stage on one synthetic file; print one table row."""
    data = build_835(claims)
    path = Path(tempfile.gettempdir()) / f"ptguard-bench-{claims}.835"
    path.write_bytes(data)

    def split() -> None:
        text = path.read_bytes().decode("latin-1")
        segments = [s.strip().split("*") for s in text.split("~")]
        assert sum(1 for s in segments if s[0] == "CLP") == claims

    def parse() -> None:
        assert read_835(path.read_bytes(), path.name).claim_count == claims

    def parse_map() -> None:
        result = read_835(path.read_bytes(), path.name)
        out = [r for rem in result.remittances for r in remittance_to_fhir(rem, raw_reference=None)]
        assert len(out) == claims + 1

    def parse_map_decode() -> None:
        result = read_835(path.read_bytes(), path.name)
        for rem in result.remittances:
            for r in remittance_to_fhir(rem, raw_reference=None)[:-1]:
                decode(r, payer_hint="aetna")

    def full_import() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            result = import_835(path.read_bytes(), filename=path.name, db_url=f"sqlite:///{tmp}/b.sqlite3",
                                today=date(2026, 12, 3))
            assert result.status == "imported" and result.work_items_created == (claims + 4) // 5

    t_split = best_of(runs, split)
    t_parse = best_of(runs, parse)
    t_map = best_of(runs, parse_map)
    t_decode = best_of(runs, parse_map_decode)
    t_import = best_of(1, full_import)
    print(f"{claims:>7} {len(data) / 1e6:>5.2f} {t_split:>8.3f} {t_parse:>8.3f} {t_map:>12.3f} {t_decode:>10.3f} "
          f"{t_import:>9.3f} {claims / t_map:>15,.0f} {claims / t_import:>12,.0f} {t_map / t_split:>9.0f}× "
          f"{t_import / t_split:>12.0f}×")
    path.unlink()


if __name__ == "__main__":
    raise SystemExit(main())
