"""`JobEndings`: the one place where a job ends, and the view of a job that a client may see.

Ending a job records it in the table, tells the observers (metrics, the render executor) and, with a
journal, queues its end record. Its waiters (`wait_for`, the REST long poll) wake once the end is
durable: until the end record is committed the job shows the state it ended from, so a crash in
between, which runs the job again after the restart, never takes back an answer a client has seen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from scheduler.core.jobs import ENDED, Job, JobStatus
from scheduler.core.ports import JobJournal
from scheduler.core.table import JobTable
from scheduler.errors import ErrorKind, JournalError

log = logging.getLogger("modelsched.scheduler")


class JobEndings:
    """Ends jobs and wakes their waiters.

    table: the job table
    journal: where ends are made durable (None: an end shows at once)
    """

    def __init__(self, table: JobTable, journal: JobJournal | None) -> None:
        self.table = table
        self.journal = journal
        self.observers: list[Callable[[Job], None]] = []  # told of every end, as it happens
        self._unsettled: dict[
            str, JobStatus
        ] = {}  # ended, end not committed yet -> the status shown meanwhile
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    def finish(
        self,
        job: Job,
        status: JobStatus,
        result: Any = None,
        error: str | None = None,
        error_kind: ErrorKind | None = None,
    ) -> asyncio.Future[None] | None:
        """End the job; with a journal, returns the future of the commit that makes the end durable."""
        before = job.status
        self.table.finish(job, status, result, error, error_kind)
        for observer in self.observers:
            try:
                observer(job)
            except Exception:  # one observer's bug must not stop the end, nor the batch it came in
                log.exception("an observer of job %s's end failed", job.id)
        if self.journal is not None and job.parent_id is None:  # a stage's or CPU call's job is not journaled
            try:
                future = self.journal.record_ended(job)
            except JournalError as exc:  # closed under a late end (stop() is under way): nothing to wait for
                log.warning("job %s ended after the journal closed; its end is not recorded: %s", job.id, exc)
            else:
                self._unsettled[job.id] = before  # waiters wake when it is committed (`ends_committed`)
                return future
        self._wake(job.id)
        return None

    def fail(self, jobs: list[Job], error: str, kind: ErrorKind) -> None:
        for job in jobs:
            self.finish(job, JobStatus.ERROR, error=error, error_kind=kind)

    # ---- what a client sees ------------------------------------------------------------------

    def view(self, job: Job) -> dict[str, Any]:
        """The job as a client may see it: an end shows once it is durable."""
        shown = job.to_dict()
        before = self._unsettled.get(job.id)
        if before is not None:
            shown.update(status=before.value, ended_at=None, result=None, error=None)
        return shown

    def settled(self, job: Job) -> bool:
        """Ended, and the end is durable."""
        return job.status in ENDED and job.id not in self._unsettled

    def waiter(self, job: Job, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None] | None:
        """A future done once the job's end is durable; None when it is already. The caller awaits it
        (with its own timeout: not a coroutine more per job here) and then calls `forget_waiter`."""
        if self.settled(job):
            return None
        future: asyncio.Future[None] = loop.create_future()
        waiters = self._waiters.get(job.id)
        if waiters is None:
            self._waiters[job.id] = [future]
        else:
            waiters.append(future)
        return future

    def forget_waiter(self, job_id: str, future: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(job_id)
        if waiters and future in waiters:
            waiters.remove(future)
            if not waiters:
                del self._waiters[job_id]

    # ---- durability ----------------------------------------------------------------------------

    def ends_committed(self, job_ids: list[str]) -> None:
        """The journal committed these jobs' end records (its callback)."""
        for job_id in job_ids:
            self._unsettled.pop(job_id, None)
            self._wake(job_id)

    def release_all(self) -> None:
        """The scheduler stops: every waiter returns with the job as it stands."""
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_result(None)
        self._waiters.clear()
        self._unsettled.clear()

    def _wake(self, job_id: str) -> None:
        waiters = self._waiters.pop(job_id, None)
        if waiters:
            for future in waiters:
                if not future.done():
                    future.set_result(None)
