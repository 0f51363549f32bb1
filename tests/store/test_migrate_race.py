"""Processes starting on one fresh database at once (two `remit import`s, serve and a CLI) all get it migrated."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect

from ptguard.store.db import get_engine

PROCESSES = 4


def _migrate_when_released(url: str, start: Any, results: Any) -> None:
    from ptguard.store.db import migrate

    start.wait()
    try:
        migrate(url)
        results.put("ok")
    except Exception as exc:  # reported to the test, which fails showing it
        results.put(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")


def _race(url: str) -> list[str]:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_migrate_when_released, args=(url, start, results)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    start.set()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    return outcomes


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_first_starts_all_migrate(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        urls = [f"sqlite:///{tmp_path / f'race{i}.sqlite3'}" for i in range(2)]
    else:
        urls = [request.getfixturevalue("pg_url")]
    for url in urls:
        assert _race(url) == ["ok"] * PROCESSES
        tables = set(inspect(get_engine(url)).get_table_names())
        assert {"alembic_version", "appeal_case", "remit_file", "remit_job"} <= tables
