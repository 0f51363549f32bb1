"""Remittance job leases: a dead worker's job is taken over, two processes never both queue one, old jobs swept."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from ptguard.remit.jobs import ABANDONED, JobQueue, dedupe_hash
from ptguard.store.db import session_scope
from ptguard.store.models import RemitJob

KEY = "sha:0f1e2d3c"


def _dead_row(db_url: str, *, lease_expires: datetime | None, job_id: str = "dead0000000000000000000000000001") -> str:
    """The row a killed worker leaves behind: running, its lease no longer renewed."""
    with session_scope(db_url) as s:
        s.add(RemitJob(id=job_id, kind="835", status="running", dedupe_sha256=dedupe_hash(KEY),
                       owner="gone-host:4242:abcdef012345", lease_expires=lease_expires,
                       created_at=datetime.now(UTC) - timedelta(hours=1)))
    return job_id


def _row(db_url: str, job_id: str) -> RemitJob:
    with session_scope(db_url) as s:
        row = s.get(RemitJob, job_id)
        assert row is not None
        s.expunge(row)
        return row


def _in_flight(db_url: str) -> list[RemitJob]:
    with session_scope(db_url) as s:
        rows = list(s.scalars(select(RemitJob).where(RemitJob.status.in_(("queued", "running")))))
        for r in rows:
            s.expunge(r)
        return rows


@pytest.mark.parametrize("expired", [timedelta(seconds=-1), None], ids=["lease-expired", "no-lease"])
def test_a_dead_workers_job_is_taken_over_and_marked_abandoned(db_url: str, expired: timedelta | None) -> None:
    dead = _dead_row(db_url, lease_expires=datetime.now(UTC) + expired if expired is not None else None)
    queue = JobQueue(db_url=db_url)
    try:
        job = queue.submit("835", lambda: {"ok": True}, dedupe_key=KEY)
        assert job.id != dead
        finished = queue.wait(job.id, timeout=10)
        assert finished is not None and finished.status == "done" and finished.result == {"ok": True}
    finally:
        queue.close()
    old = _row(db_url, dead)
    assert old.status == "error" and old.error == ABANDONED and old.finished_at is not None
    assert old.lease_expires is None
    assert _in_flight(db_url) == []


def test_a_live_job_is_joined_only_while_its_lease_is_renewed(db_url: str) -> None:
    lease = 0.8  # renewed every 0.2 s
    alive, other = JobQueue(db_url=db_url, lease_seconds=lease), JobQueue(db_url=db_url, lease_seconds=lease)
    release = threading.Event()
    try:
        first = alive.submit("835", lambda: {"n": release.wait(20)}, dedupe_key=KEY)
        time.sleep(lease * 3)  # three leases long: only the heartbeat keeps it alive
        assert other.submit("835", lambda: {"n": 2}, dedupe_key=KEY).id == first.id
        row = _row(db_url, first.id)
        assert row.status in ("queued", "running") and row.owner == alive.owner
        # The worker is "killed": nothing renews its lease any more.
        assert alive._heartbeat is not None
        alive._stop.set()
        alive._heartbeat.join(5)
        time.sleep(lease * 2)
        taken = other.submit("835", lambda: {"n": 3}, dedupe_key=KEY)
        assert taken.id != first.id
        assert other.wait(taken.id, timeout=10) is not None
        assert _row(db_url, taken.id).status == "done" and _row(db_url, taken.id).result == {"n": 3}
        dead = _row(db_url, first.id)
        assert dead.status == "error" and dead.error == ABANDONED
    finally:
        release.set()
        alive.close()
        other.close()


def test_two_processes_queueing_the_same_job_at_once_share_one(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both look (no job in flight) before either inserts: the unique partial index lets one in, the other joins it."""
    barrier = threading.Barrier(2, timeout=10)
    looked: list[str] = []
    real = JobQueue._live_in_flight

    def look_then_wait(self: JobQueue, key: str) -> Any:
        found = real(self, key)
        if threading.current_thread().name in looked:
            return found  # the loser's second look, after its insert was refused
        looked.append(threading.current_thread().name)
        barrier.wait()  # neither has inserted yet: both saw nothing
        return found

    monkeypatch.setattr(JobQueue, "_live_in_flight", look_then_wait)
    queues = [JobQueue(db_url=db_url), JobQueue(db_url=db_url)]
    release = threading.Event()
    got: dict[int, str] = {}
    errors: list[BaseException] = []

    def submit(n: int) -> None:
        try:
            got[n] = queues[n].submit("835", lambda: {"n": release.wait(20)}, dedupe_key=KEY).id
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(n,), name=f"worker-{n}") for n in (0, 1)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert not errors and len(looked) == 2
        assert got[0] == got[1], got
        flying = _in_flight(db_url)
        assert [r.id for r in flying] == [got[0]]
        with session_scope(db_url) as s:
            assert len(s.scalars(select(RemitJob)).all()) == 1
    finally:
        release.set()
        for q in queues:
            q.close()


def test_the_dedupe_key_is_stored_as_its_sha256_and_long_keys_stay_distinct(db_url: str) -> None:
    common = "url:https://clearinghouse.example/files/" + "a" * 700
    queue, other = JobQueue(db_url=db_url), JobQueue(db_url=db_url)
    release = threading.Event()
    try:
        one = queue.submit("notify", lambda: {"n": release.wait(20)}, dedupe_key=common + "|1")
        two = other.submit("notify", lambda: {"n": 0}, dedupe_key=common + "|2")
        assert one.id != two.id  # the first 600 characters are the same; the keys are not
        row = _row(db_url, one.id)
        assert row.dedupe_sha256 == dedupe_hash(common + "|1") and len(row.dedupe_sha256 or "") == 64
        assert queue.submit("notify", lambda: {"n": 9}, dedupe_key=common + "|1").id == one.id
    finally:
        release.set()
        queue.close()
        other.close()


def test_old_finished_jobs_are_swept_by_the_heartbeat_not_the_request(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    with session_scope(db_url) as s:
        for job_id, age in (("old0", timedelta(days=8)), ("new0", timedelta(days=1))):
            s.add(RemitJob(id=job_id, kind="835", status="done", created_at=now - age, finished_at=now - age))
    swept = threading.Event()
    real = JobQueue.sweep

    def sweep(self: JobQueue) -> int:
        assert threading.current_thread().name == "ptguard-remit-jobs-lease"
        n = real(self)
        swept.set()
        return n

    monkeypatch.setattr(JobQueue, "sweep", sweep)
    queue = JobQueue(db_url=db_url)
    try:
        job = queue.submit("835", lambda: {"ok": True})
        assert queue.wait(job.id, timeout=10) is not None
        assert swept.wait(10)
    finally:
        queue.close()
    with session_scope(db_url) as s:
        assert set(s.scalars(select(RemitJob.id))) == {"new0", job.id}
