"""The remit_job table on SQLite and PostgreSQL: one in-flight row per dedupe hash, and migration 0005 from 0004."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from ptguard.store.db import MIGRATIONS, _normalise, get_engine, session_scope
from ptguard.store.models import RemitJob

HASH = "ab" * 32


def _job(job_id: str, status: str, key: str | None = HASH) -> RemitJob:
    return RemitJob(id=job_id, kind="835", status=status, dedupe_sha256=key, created_at=datetime.now(UTC))


@pytest.mark.parametrize(("first", "second"), [("queued", "queued"), ("queued", "running"), ("running", "running")])
def test_two_in_flight_jobs_with_one_dedupe_hash_are_refused(db_url: str, first: str, second: str) -> None:
    with session_scope(db_url) as s:
        s.add(_job("a", first))
    with pytest.raises(IntegrityError), session_scope(db_url) as s:
        s.add(_job("b", second))
    with session_scope(db_url) as s:
        assert s.scalars(select(RemitJob.id)).all() == ["a"]


def test_finished_jobs_and_jobs_without_a_key_are_not_limited(db_url: str) -> None:
    with session_scope(db_url) as s:
        s.add_all([_job("d1", "done"), _job("d2", "done"), _job("e1", "error"), _job("q1", "queued")])
        s.add_all([_job("n1", "queued", None), _job("n2", "running", None)])
    with session_scope(db_url) as s:
        assert len(s.scalars(select(RemitJob)).all()) == 6
        s.get(RemitJob, "q1").status = "done"  # type: ignore[union-attr]
    with session_scope(db_url) as s:
        s.add(_job("q2", "queued"))  # the key is free again once its job has finished


def _alembic(url: str, target: str, *, down: bool = False) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection_url"] = _normalise(url)
    with get_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, target)


def test_migration_0005_hashes_the_keys_and_abandons_unleased_in_flight_jobs(db_url: str) -> None:
    _alembic(db_url, "0004")
    now = datetime.now(UTC)
    with get_engine(db_url).begin() as conn:
        for job_id, status, key in (("r1", "running", "sha:x"), ("r2", "queued", "sha:x"), ("d1", "done", "url:y")):
            conn.execute(text("INSERT INTO remit_job (id, kind, status, dedupe_key, created_at) "
                              "VALUES (:id, '835', :status, :key, :at)"),
                         {"id": job_id, "status": status, "key": key, "at": now})
    _alembic(db_url, "head")  # two in-flight rows with one key (the old race) do not stop the unique index
    columns = {c["name"] for c in inspect(get_engine(db_url)).get_columns("remit_job")}
    assert {"dedupe_sha256", "owner", "lease_expires"} <= columns and "dedupe_key" not in columns
    with session_scope(db_url) as s:
        rows = {r.id: r for r in s.scalars(select(RemitJob))}
    assert rows["d1"].status == "done" and rows["d1"].dedupe_sha256 == hashlib.sha256(b"url:y").hexdigest()
    for job_id in ("r1", "r2"):
        assert rows[job_id].status == "error" and (rows[job_id].error or "").startswith("abandoned")
        assert rows[job_id].dedupe_sha256 == hashlib.sha256(b"sha:x").hexdigest()
    _alembic(db_url, "0004", down=True)
    assert "dedupe_key" in {c["name"] for c in inspect(get_engine(db_url)).get_columns("remit_job")}
    _alembic(db_url, "head")
