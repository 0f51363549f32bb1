"""`ptguard remit watch` stops cleanly (exit 0) on Ctrl-C even when started with SIGINT ignored, and on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint-ignored-at-start", "sigterm"])
def test_watch_stops(sig: signal.Signals, tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'w.sqlite3'}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ptguard.cli", "remit", "watch", str(tmp_path), "--interval", "0.2"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as a background shell starts it
    )
    try:
        time.sleep(2.0)  # imports and the first scan
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "watching" in err and "stopped" in err and "Traceback" not in err
