"""How the journal is wired into `Scheduler` (a mixin): recovery at start, and ends shown once durable.

At start the jobs that had not ended are queued again, in their order, with their `attempts` (a job
with tries left from dead workers is a suspect and runs alone) and with their deadline still counted
from their submission. While the journal is on, a job's end is shown (`get_job_status`, `wait_for`,
`list_jobs`) only once its end record is committed: until then the job shows the state it ended
from, so a crash in between, which runs the job again after the restart, never takes back an answer
a client has seen.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from typing import TYPE_CHECKING, Any

from scheduler.core.jobs import ENDED, Job, JobStatus
from scheduler.journal.sqlite import Journal

if TYPE_CHECKING:
    from scheduler.settings import Settings
    from scheduler.core.table import JobTable

log = logging.getLogger("modelsched.scheduler")


class Durability:
    """Journal recovery and the durable view of a job, for `Scheduler`."""

    settings: Settings
    table: JobTable
    journal: Journal | None
    _deadlines: list[tuple[float, int, str]]
    _waiters: dict[str, list[asyncio.Future[None]]]
    _unsettled: dict[str, JobStatus]  # ended, end not committed yet -> the status shown meanwhile

    async def _open_journal(self) -> None:
        """Open the journal and queue again, in their order, the jobs that had not ended."""
        self.journal, open_jobs = await Journal.open(
            self.settings.journal_path, self.settings.journal_synchronous, self.settings.result_retention_s,
            on_ends_committed=self._on_ends_committed,
        )
        now, now_wall = time.monotonic(), time.time()
        for job in open_jobs:
            self.table.add(job)
            if job.timeout_s is not None:  # the deadline runs from the submission, across restarts
                job.deadline = now + max(0.0, job.created_at + job.timeout_s - now_wall)
                heapq.heappush(self._deadlines, (job.deadline, job.seq, job.id))
        if open_jobs:
            log.info("journal: %d job(s) that had not ended are queued again (%d suspect(s))", len(open_jobs),
                     sum(1 for job in open_jobs if job.attempts > 0))
        self.journal.prune()

    def _view(self, job: Job) -> dict[str, Any]:
        """The job as a client may see it: an end shows once it is durable."""
        shown = job.to_dict()
        before = self._unsettled.get(job.id)
        if before is not None:
            shown.update(status=before.value, ended_at=None, result=None, error=None)
        return shown

    def _settled(self, job: Job) -> bool:
        return job.status in ENDED and job.id not in self._unsettled

    def _wake(self, job_id: str) -> None:
        waiters = self._waiters.pop(job_id, None)
        if waiters:
            for future in waiters:
                if not future.done():
                    future.set_result(None)

    def _on_ends_committed(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            self._unsettled.pop(job_id, None)
            self._wake(job_id)
