"""`Deadlines`: jobs with a timeout, ended as `timeout` when their deadline passes.

A heap of (deadline, sequence, job id): an entry whose job has ended meanwhile, or whose deadline was
set again, is skipped when it comes up, so nothing is ever removed from the middle. A job that times
out while it runs may never come back from its batch: its worker is restarted, and its batch-mates
go back to the queue without a try counted.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Mapping

from scheduler.core.endings import JobEndings
from scheduler.core.jobs import ENDED, Job, JobStatus
from scheduler.core.table import JobTable
from scheduler.core.workers import Worker
from scheduler.errors import ErrorKind, WorkerState
from workers.logs import about_job

log = logging.getLogger("modelsched.scheduler")


class Deadlines:
    """table: the job table; endings: ends the jobs; workers: the live worker records by id."""

    def __init__(self, table: JobTable, endings: JobEndings, workers: Mapping[str, Worker]) -> None:
        self.table = table
        self.endings = endings
        self.workers = workers
        self._heap: list[tuple[float, int, str]] = []

    def watch(self, job: Job, deadline: float) -> None:
        """`job` ends as a timeout at `deadline` (time.monotonic()) unless it ends before."""
        job.deadline = deadline
        heapq.heappush(self._heap, (deadline, job.seq, job.id))

    def expire(self, now: float) -> list[Job]:
        """End every job whose deadline has passed; returns them."""
        expired: list[Job] = []
        while self._heap and self._heap[0][0] <= now:
            deadline, _, job_id = heapq.heappop(self._heap)
            job = self.table.get(job_id)
            if job is None or job.status in ENDED or job.deadline != deadline:
                continue
            worker = self.workers.get(job.worker_id or "") if job.status is JobStatus.PROCESSING else None
            self.endings.finish(
                job,
                JobStatus.ERROR,
                error=f"timeout: the job did not end within {job.timeout_s}s",
                error_kind=ErrorKind.TIMEOUT,
            )
            expired.append(job)
            if (
                worker is not None
                and worker.state is WorkerState.READY
                and worker.channel is not None
                and worker.channel.killable
            ):
                log.warning(
                    "job timed out on %s; restarting that worker", worker.worker_id, extra=about_job(job_id)
                )
                worker.no_penalty = True
                worker.kill()
        return expired

    def __len__(self) -> int:
        return len(self._heap)
