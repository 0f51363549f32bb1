"""`ptguard serve` settings that decide what gunicorn logs: never its debug request lines (paths carry ids)."""

from __future__ import annotations

import pytest

from webapp.serve import gunicorn_loglevel


@pytest.mark.parametrize(
    ("given", "level"),
    [(None, "warning"), ("DEBUG", "info"), ("info", "info"), ("warn", "warning"), ("ERROR", "error"), ("x", "warning")],
)
def test_gunicorn_log_level(given: str | None, level: str) -> None:
    assert gunicorn_loglevel({} if given is None else {"PTGUARD_LOG_LEVEL": given}) == level
