"""Remittance job status lives in the database: a job accepted by one app instance (worker) is seen by another."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from remit_util import FIXTURES

from ptguard.errors import InputError
from ptguard.remit.jobs import JobQueue
from ptguard.store.db import session_scope
from ptguard.store.models import RemitJob
from webapp import create_app

KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
X12 = {"Content-Type": "application/edi-x12"}


def _app(db_url: str) -> Flask:
    return create_app({"TESTING": True, "DATABASE_URL": db_url, "PTGUARD_REMIT_API_KEYS": KEY})


@pytest.fixture
def two_workers(db_url: str) -> Iterator[tuple[Flask, Flask]]:
    """Two app instances sharing one database, as the two gunicorn workers of `ptguard serve` do."""
    a, b = _app(db_url), _app(db_url)
    assert a.extensions["ptguard_remit_jobs"] is not b.extensions["ptguard_remit_jobs"]
    yield a, b
    for app in (a, b):
        app.extensions["ptguard_remit_jobs"].close()


def test_a_job_posted_to_one_worker_is_answered_by_the_other(two_workers: tuple[Flask, Flask]) -> None:
    a, b = two_workers
    data = (FIXTURES / "aetna-01.835").read_bytes()
    posted = a.test_client().post("/remit/835", data=data, headers={**AUTH, **X12})
    assert posted.status_code == 202
    job_id = posted.get_json()["job_id"]
    # Before it has finished, the other worker already knows the job (queued or running, never 404).
    early = b.test_client().get(f"/remit/jobs/{job_id}", headers=AUTH)
    assert early.status_code == 200 and early.get_json()["status"] in ("queued", "running", "done")
    a.extensions["ptguard_remit_jobs"].wait(job_id, timeout=30)
    seen = b.test_client().get(f"/remit/jobs/{job_id}", headers=AUTH)
    assert seen.status_code == 200
    body: dict[str, Any] = seen.get_json()
    assert body["id"] == job_id and body["kind"] == "835" and body["status"] == "done", body
    assert body["result"]["status"] == "imported" and body["result"]["claims"] == 1
    assert body["finished_at"] is not None
    assert b.test_client().get(f"/remit/jobs/{job_id}", headers=AUTH).get_json() == (
        a.test_client().get(f"/remit/jobs/{job_id}", headers=AUTH).get_json()
    )
    assert b.test_client().get("/remit/jobs/0123456789abcdef", headers=AUTH).status_code == 404


def test_the_queue_keeps_status_and_errors_in_the_database(db_url: str) -> None:
    one, other = JobQueue(db_url=db_url), JobQueue(db_url=db_url)
    release = threading.Event()

    def slow() -> dict[str, Any]:
        release.wait(10)
        return {"ok": True}

    def broken() -> dict[str, Any]:
        raise InputError("the file is not an 835")

    try:
        first = one.submit("835", slow, dedupe_key="sha:abc")
        # The same dedupe key submitted to another process's queue while the first is in flight: the same job.
        again = other.submit("835", lambda: {"ok": False}, dedupe_key="sha:abc")
        assert again.id == first.id
        failing = one.submit("835", broken)
        seen = other.get(first.id)
        assert seen is not None and seen.status in ("queued", "running")
        release.set()
        one.wait(failing.id, timeout=10)
        done, failed = other.get(first.id), other.get(failing.id)
        assert done is not None and done.status == "done" and done.result == {"ok": True}
        assert failed is not None and failed.status == "error" and failed.error == "the file is not an 835"
        with session_scope(db_url) as s:
            assert {r.status for r in s.query(RemitJob).all()} == {"done", "error"}
    finally:
        release.set()
        one.close()
        other.close()


def test_without_a_database_the_queue_still_works_in_process() -> None:
    queue = JobQueue()
    try:
        job = queue.submit("835", lambda: {"n": 1})
        finished = queue.wait(job.id, timeout=10)
        assert finished is not None and finished.status == "done" and finished.result == {"n": 1}
    finally:
        queue.close()
