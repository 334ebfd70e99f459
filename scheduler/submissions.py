"""`Submissions`: the checks of a submission that may do I/O, and many jobs submitted at once.

A render job's URL and a job's `callback_url` pass the SSRF guard with DNS before the job is
admitted (`precheck`). `schedule_many` (`POST /jobs/batch`, `Scheduler.schedule_jobs`) runs every
item's checks first, concurrently, then admits the items with no await in between, so that their
submission records go to the journal in one group (one transaction), and answers once it is
committed: an id per admitted item, the error in the place of a refused one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from scheduler.core.admission import Admission
from scheduler.core.jobs import JobRequest
from scheduler.core.ports import JobExecutor, JobJournal
from scheduler.errors import SchedulerError
from scheduler.webhooks import Webhooks


class Submissions:
    """admission: whether a job is queued; journal: where submissions are made durable (None: no
    journal); executors: models run outside the workers (their `precheck`); webhooks: the callback
    URL's check."""

    def __init__(
        self,
        admission: Admission,
        journal: JobJournal | None,
        executors: Mapping[str, JobExecutor],
        webhooks: Webhooks,
    ) -> None:
        self.admission = admission
        self.journal = journal
        self.executors = executors
        self.webhooks = webhooks

    async def precheck(self, request: JobRequest) -> None:
        """The checks that may do I/O (DNS): a render's URL, a callback URL."""
        if self.executors:
            executor = self.executors.get(request.model_name)
            if executor is not None:
                await executor.precheck(request.inputs)
        if request.callback_url is not None:
            await self.webhooks.precheck(request.callback_url)

    def submit(self, request: JobRequest) -> str:
        """Admitted, its record queued for the journal without waiting for it; URLs checked without DNS."""
        if request.callback_url is not None:
            self.webhooks.precheck_offline(request.callback_url)
        job, created = self.admission.admit(request)
        if created and self.journal is not None:
            self.journal.record_submitted_nowait(job)
        return job.id

    async def schedule_many(self, requests: list[JobRequest]) -> list[str | SchedulerError]:
        """Each request admitted or refused alone; the ids once the admitted ones are durable."""
        checks = await asyncio.gather(*(self.precheck(one) for one in requests), return_exceptions=True)
        outcomes: list[str | SchedulerError] = []
        commits: set[asyncio.Future[None]] = set()
        for request, check in zip(requests, checks, strict=True):  # no await in between: one group
            if isinstance(check, BaseException):
                if not isinstance(check, SchedulerError):
                    raise check
                outcomes.append(check)
                continue
            try:
                job, created = self.admission.admit(request)
            except SchedulerError as exc:
                outcomes.append(exc)
                continue
            if created and self.journal is not None:
                commits.add(self.journal.record_submitted_nowait(job))
            outcomes.append(job.id)
        if commits:
            await asyncio.gather(*commits)
        return outcomes
