"""Background jobs for remittance imports: one worker thread per process; status and leases in the database."""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from ptguard.errors import PtguardError, debugging
from ptguard.store.db import session_scope
from ptguard.store.models import RemitJob

log = logging.getLogger("ptguard.remit.jobs")

JobFn = Callable[[], dict[str, Any]]
MAX_KEPT = 1000
KEEP_FINISHED = timedelta(days=7)  # finished jobs older than this are deleted from the database
LEASE_SECONDS = 120.0  # an in-flight job whose lease is not renewed for this long belongs to a stopped worker
SWEEP_SECONDS = 3600.0  # how often a queue deletes the old finished jobs (on its heartbeat thread)
IN_FLIGHT = ("queued", "running")
ABANDONED = "abandoned: the worker process holding this job stopped (its lease ran out); a later request took over"


def dedupe_hash(key: str) -> str:
    """The stored form of a dedupe key: its hex SHA-256 (fixed length; the key itself may be long)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _owner_id() -> str:
    """This queue's lease owner: host, process and a random part (two queues in one process differ too)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Job:
    """One unit of background work and what became of it."""

    id: str
    kind: str
    status: str = "queued"  # queued | running | done | error
    dedupe_hash: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    created_at: datetime = field(default_factory=_now)
    finished_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "result": self.result,
            "error": self.error,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }

    @classmethod
    def from_row(cls, row: RemitJob) -> Job:
        return cls(id=row.id, kind=row.kind, status=row.status, dedupe_hash=row.dedupe_sha256, result=row.result,
                   error=row.error, created_at=row.created_at, finished_at=row.finished_at)


class JobQueue:
    """FIFO jobs run one at a time on a daemon worker thread (started on first submit; `close()` stops it).

    A job submitted with a dedupe key that matches a live queued or running job returns that job instead.
    Errors never escape the worker: a PtguardError is kept as its one-line message, anything else as its type.

    With `db_url`, every job is also a `remit_job` row: `get` reads it from the database, so any process sharing
    the database (each gunicorn worker has its own queue) sees the status of a job another process accepted, and
    the dedupe key (stored as its SHA-256) is checked across processes. The work runs in the process that accepted
    it, which renews the lease of its queued and running jobs every `lease_seconds / 4`; an in-flight row whose
    lease ran out (its process was killed) is marked `error` (abandoned) by the next submit of the same key, which
    then queues a fresh job. A unique partial index (one queued-or-running row per dedupe hash) stops two
    processes both inserting the same job: the one that loses answers with the winner's job.
    """

    def __init__(self, db_url: str | None = None, *, lease_seconds: float = LEASE_SECONDS) -> None:
        self.db_url = db_url
        self.lease_seconds = lease_seconds
        self.owner = _owner_id()
        self._jobs: dict[str, Job] = {}
        self._fns: queue.Queue[tuple[Job, JobFn] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False

    # -- submitting -----------------------------------------------------------------------------------------
    def submit(self, kind: str, fn: JobFn, *, dedupe_key: str | None = None) -> Job:
        """Queue `fn`; returns its Job (or the live in-flight job with the same dedupe key)."""
        key = dedupe_hash(dedupe_key) if dedupe_key is not None else None
        with self._lock:
            if self._closed:
                raise RuntimeError("the job queue is closed")
            mine = self._local_in_flight(key)
            if mine is not None:
                return mine
            job = Job(id=uuid.uuid4().hex, kind=kind, dedupe_hash=key)
            if self.db_url is None:
                self._accept(job)
        if self.db_url is not None:
            # The database is asked outside the lock: it, not this process, decides which job is the one in flight.
            shared = self._claim(job)
            if shared is not None:
                return shared
            with self._lock:
                if self._closed:
                    self._finish_unrun(job)
                    raise RuntimeError("the job queue is closed")
                self._accept(job)
        self._fns.put((job, fn))
        return job

    def _local_in_flight(self, key: str | None) -> Job | None:
        if key is None:
            return None
        for job in self._jobs.values():
            if job.dedupe_hash == key and job.status in IN_FLIGHT:
                return job
        return None

    def _accept(self, job: Job) -> None:
        """Keep the job in this process and make sure the worker (and, with a database, the heartbeat) runs."""
        self._jobs[job.id] = job
        self._trim()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ptguard-remit-jobs", daemon=True)
            self._thread.start()
        if self.db_url is not None and self._heartbeat is None:
            self._heartbeat = threading.Thread(target=self._beat_loop, name="ptguard-remit-jobs-lease", daemon=True)
            self._heartbeat.start()

    def _claim(self, job: Job) -> Job | None:
        """Insert the job's row; returns the live in-flight job with the same dedupe hash instead, if there is one.

        A database failure is logged and the job runs in this process only (None).
        """
        assert self.db_url is not None
        try:
            for _attempt in range(3):
                if job.dedupe_hash is not None:
                    live = self._live_in_flight(job.dedupe_hash)
                    if live is not None:
                        return live
                try:
                    self._insert(job)
                    return None
                except IntegrityError:
                    # Another process inserted the same in-flight job since we looked: answer with that job.
                    log.info("remit jobs: another process queued the same job a moment ago; answering with it")
            log.warning("remit job %s: no in-flight row could be claimed; it runs in this process only", job.id)
        except Exception as exc:
            _log_db_failure("remit job %s: the database could not record it (it runs in this process only)",
                            job.id, exc=exc)
        return None

    def _live_in_flight(self, key: str) -> Job | None:
        assert self.db_url is not None
        with session_scope(self.db_url) as s:
            row = s.scalars(select(RemitJob).where(RemitJob.dedupe_sha256 == key,
                                                   RemitJob.status.in_(IN_FLIGHT))).first()
            if row is not None and row.lease_expires is not None and row.lease_expires > _now():
                return Job.from_row(row)
            return None

    def _insert(self, job: Job) -> None:
        """One transaction: mark a stale in-flight row with this key abandoned, then insert this job's row."""
        assert self.db_url is not None
        now = _now()
        with session_scope(self.db_url) as s:
            abandoned = 0
            if job.dedupe_hash is not None:
                abandoned = _rowcount(s.execute(
                    update(RemitJob)
                    .where(RemitJob.dedupe_sha256 == job.dedupe_hash, RemitJob.status.in_(IN_FLIGHT),
                           or_(RemitJob.lease_expires.is_(None), RemitJob.lease_expires <= now))
                    .values(status="error", error=ABANDONED, finished_at=now, lease_expires=None)
                    .execution_options(synchronize_session=False)
                ))
            s.add(RemitJob(id=job.id, kind=job.kind, status=job.status, dedupe_sha256=job.dedupe_hash,
                           owner=self.owner, lease_expires=now + timedelta(seconds=self.lease_seconds),
                           created_at=job.created_at))
            s.flush()
        if abandoned:
            log.warning("remit job %s takes over from %d abandoned job(s) whose worker stopped", job.id, abandoned)

    def _finish_unrun(self, job: Job) -> None:
        """The queue closed while the job was being claimed: its row must not stay in flight."""
        job.status, job.error, job.finished_at = "error", "the job queue closed before the job could run", _now()
        self._save(job)

    # -- reading --------------------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        """The job with that id, if it is still kept (in the database when there is one, else in this process)."""
        if self.db_url is not None:
            try:
                with session_scope(self.db_url) as s:
                    row = s.get(RemitJob, job_id[:32])
                    if row is not None:
                        return Job.from_row(row)
            except Exception as exc:  # the database is unreachable: answer from this process's own jobs
                _log_db_failure("remit job %s: status could not be read from the database", job_id[:32], exc=exc)
        with self._lock:
            return self._jobs.get(job_id)

    def wait(self, job_id: str, timeout: float = 30.0) -> Job | None:
        """Block until the job is finished or `timeout` seconds pass (tests and scripts)."""
        deadline = threading.Event()
        waited = 0.0
        while waited < timeout:
            job = self.get(job_id)
            if job is None or job.status in ("done", "error"):
                return job
            deadline.wait(0.02)
            waited += 0.02
        return self.get(job_id)

    def close(self, timeout: float = 10.0) -> None:
        """Finish the queued jobs and stop the worker thread (and the lease heartbeat once they are done)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._fns.put(None)
            thread.join(timeout)
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout)

    # -- the database row -----------------------------------------------------------------------------------
    def _save(self, job: Job) -> None:
        """Write the job's state (and its lease while it is in flight); a failure is logged, the job still runs."""
        if self.db_url is None:
            return
        try:
            with session_scope(self.db_url) as s:
                row = s.get(RemitJob, job.id)
                if row is None:  # its insert failed (the database was away): record it now
                    row = RemitJob(id=job.id, kind=job.kind, dedupe_sha256=job.dedupe_hash, owner=self.owner,
                                   created_at=job.created_at)
                    s.add(row)
                row.status = job.status
                row.result = job.result
                row.error = job.error[:500] if job.error else None
                row.finished_at = job.finished_at
                in_flight = job.status in IN_FLIGHT
                row.lease_expires = _now() + timedelta(seconds=self.lease_seconds) if in_flight else None
        except Exception as exc:
            _log_db_failure("remit job %s: its status could not be written to the database", job.id, exc=exc)

    def _renew(self) -> None:
        """Extend the lease of this queue's queued and running jobs."""
        assert self.db_url is not None
        with session_scope(self.db_url) as s:
            s.execute(
                update(RemitJob)
                .where(RemitJob.owner == self.owner, RemitJob.status.in_(IN_FLIGHT))
                .values(lease_expires=_now() + timedelta(seconds=self.lease_seconds))
                .execution_options(synchronize_session=False)
            )

    def sweep(self) -> int:
        """Delete the finished jobs older than KEEP_FINISHED; returns how many."""
        assert self.db_url is not None
        with session_scope(self.db_url) as s:
            return _rowcount(s.execute(delete(RemitJob).where(RemitJob.finished_at < _now() - KEEP_FINISHED)))

    def _beat_loop(self) -> None:
        """Renew the leases every `lease_seconds / 4`; sweep old finished jobs every SWEEP_SECONDS (first at once)."""
        next_sweep = 0.0
        while True:
            try:
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + SWEEP_SECONDS
                    self.sweep()
                self._renew()
            except Exception as exc:
                _log_db_failure("remit jobs: the job leases could not be renewed", exc=exc)
            if self._stop.wait(max(0.05, self.lease_seconds / 4)):
                return

    # -- the worker -----------------------------------------------------------------------------------------
    def _trim(self) -> None:
        finished = [j for j in self._jobs.values() if j.status in ("done", "error")]
        for job in finished[: max(0, len(self._jobs) - MAX_KEPT)]:
            self._jobs.pop(job.id, None)

    def _run(self) -> None:
        while True:
            item = self._fns.get()
            if item is None:
                return
            job, fn = item
            job.status = "running"
            self._save(job)
            try:
                job.result = fn()
                job.status = "done"
            except PtguardError as exc:
                job.error = exc.one_line()
                job.status = "error"
            except Exception as exc:
                job.error = f"internal error ({type(exc).__name__})"
                job.status = "error"
                log.error("remit job %s failed: %s", job.id, type(exc).__name__)
            job.finished_at = _now()
            self._save(job)


def _rowcount(result: Any) -> int:
    """An UPDATE's or DELETE's CursorResult row count."""
    return int(result.rowcount or 0)


def _log_db_failure(message: str, *args: Any, exc: BaseException) -> None:
    """Log a database failure by its type only: its text may carry statement parameters (patient data)."""
    log.error(message + " (%s)", *args, type(exc).__name__, exc_info=exc if debugging() else None)
