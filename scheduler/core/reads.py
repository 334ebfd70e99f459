"""How a client's job is found, read, waited for and cancelled: `JobReads`, with two implementations,
`LocalReads` (one host: the job table, then the journal) and the cluster's front
(`scheduler.cluster.front.ClusterFront`: the job's hash in Redis, whichever host runs it)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

from scheduler.core.endings import JobEndings
from scheduler.core.jobs import ENDED, Job, JobStatus
from scheduler.core.ports import JobJournal
from scheduler.core.table import JobTable
from scheduler.errors import ErrorKind, JobEndedError, JobNotFoundError, JournalError, NotRunningError


class JobReads(Protocol):
    def cached(self, job_id: str) -> Job:
        """The job without waiting for I/O (JobNotFoundError)."""

    def cached_view(self, job_id: str) -> dict[str, Any]: ...

    async def read(self, job_id: str) -> dict[str, Any]:
        """The job as a client sees it now."""

    async def wait(self, job_id: str, timeout: float | None) -> dict[str, Any]:
        """The job once it has ended, or as it stands when `timeout` seconds have passed."""

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job (JobEndedError once it has ended)."""


class LocalReads:
    """table, journal, endings: the single host's records; running: whether the scheduler runs (a
    cancel the journal could not keep is refused while it stops)."""

    def __init__(
        self, table: JobTable, journal: JobJournal | None, endings: JobEndings, running: Callable[[], bool]
    ) -> None:
        self.table = table
        self.journal = journal
        self.endings = endings
        self.running = running

    def cached(self, job_id: str) -> Job:
        job = self.table.get(job_id)
        if job is not None and job.parent_id is not None:
            job = None  # a stage's or a CPU call's job: not a client's
        if job is None and self.journal is not None:
            job = self.journal.lookup(job_id)  # ended, and no longer in memory (or before a restart)
        if job is None:
            raise JobNotFoundError(f"no job with id {job_id!r}")
        return job

    def cached_view(self, job_id: str) -> dict[str, Any]:
        return self.endings.view(self.cached(job_id))

    async def read(self, job_id: str) -> dict[str, Any]:
        return self.cached_view(job_id)

    async def wait(self, job_id: str, timeout: float | None) -> dict[str, Any]:
        return await self.endings.wait(self.cached(job_id), timeout)

    async def cancel(self, job_id: str) -> dict[str, Any]:
        job = self.cached(job_id)
        if job.status in ENDED:
            raise JobEndedError(f"job {job_id} already ended ({job.status.value})")
        if not self.running():  # stopped, or stopping: a cancel the journal cannot keep would not hold
            raise NotRunningError("the scheduler is stopping or stopped; cancel the job after its restart")
        durable = self.endings.finish(
            job, JobStatus.CANCELLED, error="cancelled by request", error_kind=ErrorKind.CANCELLED
        )
        if durable is not None:
            with contextlib.suppress(JournalError):
                await durable
        return self.endings.view(job)
