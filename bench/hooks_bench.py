"""The issue's name for the CDS Hooks benchmark: runs bench/cds_bench.py (in-process and gunicorn 1/8/32)."""

from __future__ import annotations

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).with_name("cds_bench.py")), run_name="__main__")
