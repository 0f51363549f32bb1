"""A background job queue (one worker thread per process) for remittance imports; status kept in the database."""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from ptguard.errors import PtguardError
from ptguard.store.db import session_scope
from ptguard.store.models import RemitJob

log = logging.getLogger("ptguard.remit.jobs")

JobFn = Callable[[], dict[str, Any]]
MAX_KEPT = 1000
KEEP_FINISHED = timedelta(days=7)  # finished jobs older than this are deleted from the database


@dataclass
class Job:
    """One unit of background work and what became of it."""

    id: str
    kind: str
    status: str = "queued"  # queued | running | done | error
    dedupe_key: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
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
        return cls(id=row.id, kind=row.kind, status=row.status, dedupe_key=row.dedupe_key, result=row.result,
                   error=row.error, created_at=row.created_at, finished_at=row.finished_at)


class JobQueue:
    """FIFO jobs run one at a time on a daemon worker thread (started on first submit; `close()` stops it).

    A job submitted with a dedupe key that matches a queued or running job returns that job instead.
    Errors never escape the worker: a PtguardError is kept as its one-line message, anything else as its type.

    With `db_url`, every job is also a `remit_job` row: `get` reads it from the database, so any process sharing
    the database (each gunicorn worker has its own queue) sees the status of a job another process accepted, and
    the dedupe key is checked across processes. The work itself runs in the process that accepted it.
    """

    def __init__(self, db_url: str | None = None) -> None:
        self.db_url = db_url
        self._jobs: dict[str, Job] = {}
        self._fns: queue.Queue[tuple[Job, JobFn] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, kind: str, fn: JobFn, *, dedupe_key: str | None = None) -> Job:
        """Queue `fn`; returns its Job (or the in-flight job with the same dedupe key)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the job queue is closed")
            if dedupe_key is not None:
                for job in self._jobs.values():
                    if job.dedupe_key == dedupe_key and job.status in ("queued", "running"):
                        return job
                shared = self._in_flight_elsewhere(dedupe_key)
                if shared is not None:
                    return shared
            job = Job(id=uuid.uuid4().hex, kind=kind, dedupe_key=dedupe_key)
            self._jobs[job.id] = job
            self._trim()
            self._save(job, new=True)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ptguard-remit-jobs", daemon=True)
                self._thread.start()
        self._fns.put((job, fn))
        return job

    def get(self, job_id: str) -> Job | None:
        """The job with that id, if it is still kept (in the database when there is one, else in this process)."""
        if self.db_url is not None:
            try:
                with session_scope(self.db_url) as s:
                    row = s.get(RemitJob, job_id[:32])
                    if row is not None:
                        return Job.from_row(row)
            except Exception:  # the database is unreachable: answer from this process's own jobs
                log.exception("remit job %s: status could not be read from the database", job_id[:32])
        with self._lock:
            return self._jobs.get(job_id)

    def _in_flight_elsewhere(self, dedupe_key: str) -> Job | None:
        if self.db_url is None:
            return None
        try:
            with session_scope(self.db_url) as s:
                row = s.scalars(select(RemitJob).where(RemitJob.dedupe_key == dedupe_key[:600],
                                                       RemitJob.status.in_(("queued", "running")))).first()
                return Job.from_row(row) if row is not None else None
        except Exception:
            log.exception("remit jobs: the database could not be asked for an in-flight job")
            return None

    def _save(self, job: Job, *, new: bool = False) -> None:
        """Write the job's state to the database (a failure is logged; the job still runs)."""
        if self.db_url is None:
            return
        try:
            with session_scope(self.db_url) as s:
                row = s.get(RemitJob, job.id) if not new else None
                if row is None:
                    row = RemitJob(id=job.id, kind=job.kind, dedupe_key=job.dedupe_key[:600] if job.dedupe_key
                                   else None, created_at=job.created_at)
                    s.add(row)
                row.status = job.status
                row.result = job.result
                row.error = job.error[:500] if job.error else None
                row.finished_at = job.finished_at
                if new:
                    s.execute(delete(RemitJob).where(RemitJob.finished_at < datetime.now(UTC) - KEEP_FINISHED))
        except Exception:
            log.exception("remit job %s: its status could not be written to the database", job.id)

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
        """Finish the queued jobs and stop the worker thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._fns.put(None)
            thread.join(timeout)

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
            job.finished_at = datetime.now(UTC)
            self._save(job)
