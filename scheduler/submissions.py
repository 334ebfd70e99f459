"""`Submissions`: how jobs come in through the scheduler's API: one (`schedule`, `submit`), many at
once (`schedule_many`), or submitted and waited for (`infer`, `infer_many`, which raise when a job
fails), with the checks of a submission that may do I/O first.

A render job's URL and a job's `callback_url` pass the SSRF guard with DNS before the job is
admitted (`precheck`). `schedule_many` (`POST /jobs/batch`, `Scheduler.schedule_jobs`) runs every
item's checks first, concurrently, then admits the items with no await in between, so that their
submission records go to the journal in one group (one transaction), and answers once it is
committed: an id per admitted item, the error in the place of a refused one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

from scheduler.core.admission import Admission
from scheduler.core.endings import JobEndings, result_of
from scheduler.core.jobs import Job, JobRequest, JobStatus
from scheduler.core.ports import JobExecutor, JobJournal
from scheduler.errors import ErrorKind, InvalidInputError, JournalError, SchedulerError
from scheduler.webhooks import Webhooks

URL_CHECK_TIMEOUT_S = 10.0  # a callback URL's DNS lookup at submission


def _failure(future: asyncio.Future[Any]) -> BaseException:
    """Why a future did not give a result (it was cancelled, or raised)."""
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception() or RuntimeError("no failure")


def schedule_in_task(
    scheduling: Coroutine[Any, Any, str], done: Callable[[str | None, BaseException | None], None]
) -> None:
    """Run `scheduling` in a task; `done(id, None)` when it gives an id, `done(None, why)` when not."""
    asyncio.ensure_future(scheduling).add_done_callback(
        lambda ran: (
            done(None, _failure(ran)) if ran.cancelled() or ran.exception() else done(ran.result(), None)
        )
    )


class Submissions:
    """admission: whether a job is queued; endings: waits for a job's end; journal: where submissions
    are made durable (None: no journal); executors: models run outside the workers (their
    `precheck`); webhooks: the callback URL's check, and the callbacks."""

    def __init__(
        self,
        admission: Admission,
        endings: JobEndings,
        journal: JobJournal | None,
        executors: Mapping[str, JobExecutor],
        webhooks: Webhooks,
    ) -> None:
        self.admission = admission
        self.endings = endings
        self.journal = journal
        self.executors = executors
        self.webhooks = webhooks

    async def schedule(self, request: JobRequest, *, waited: bool = False) -> str:
        """Checked, admitted and journaled: its id once it is durable. `waited`: the caller waits for
        the job's end and answers only once the end is durable (`infer`): the id comes at once, and
        the submission is written with the end (`JobJournal.record_submitted_held`)."""
        return (await self._schedule(request, waited)).id

    async def _schedule(self, request: JobRequest, waited: bool = False) -> Job:
        await self.precheck(request)
        job, created = self.admission.admit(request)
        if created and self.journal is not None:
            try:
                if waited:
                    self.journal.record_submitted_held(job)
                else:
                    await self.journal.record_submitted_nowait(job)
            except JournalError:
                self.withdraw([job])
                raise
        return job

    def schedule_then(
        self,
        request: JobRequest,
        done: Callable[[str | None, BaseException | None], None],
        *,
        waited: bool = False,
        validated: bool = False,
    ) -> None:
        """`schedule` without a coroutine, for the HTTP fronts' hot path: `done(id, None)` once the
        job is durable (with `waited`, at once), `done(None, error)` if its record could not be
        committed (it is withdrawn, as `schedule` does); a refusal at admission raises here. A request
        with checks that do I/O (a render's URL, a callback URL) goes through `schedule`.
        `validated`: a front ran the adapter's `validate` (only where `takes_validated` says so)."""
        if not validated and not self.takes_validated(request):  # a validated one was asked already
            schedule_in_task(self.schedule(request, waited=waited), done)
            return
        if waited:
            try:
                job = self.admit_waited(request, validated=validated)
            except JournalError as exc:
                done(None, exc)
                return
            done(job.id, None)
            return
        job, created = self.admission.admit(request, validated=validated)
        if not created or self.journal is None:
            done(job.id, None)
            return

        def committed(commit: asyncio.Future[None]) -> None:
            failure = None if not commit.cancelled() and commit.exception() is None else _failure(commit)
            if failure is None:
                done(job.id, None)
                return
            if isinstance(failure, JournalError):
                self.withdraw([job])
            done(None, failure)

        self.journal.record_submitted_nowait(job).add_done_callback(committed)

    def admit_waited(self, request: JobRequest, *, validated: bool = False) -> Job:
        """The job of a request whose client waits for its end (`infer`), admitted at once, its
        submission held by the journal to be written with its end; only for a request that
        `takes_validated` (the fronts' hot path: the job itself, no callback). A refusal at admission
        raises, and so does a journal that cannot take it (JournalError: the job is withdrawn)."""
        admitted = self.admit_all_waited([request], validated=validated)[0]
        if isinstance(admitted, Exception):
            raise admitted
        return admitted

    def admit_all_waited(
        self, requests: list[JobRequest], *, validated: bool = False
    ) -> list[Job | Exception]:
        """`admit_waited` of each request (`Admission.admit_all`: what holds for all is checked once),
        in order: its job, or why it was refused."""
        admitted: list[Job | Exception] = []
        journal = self.journal
        for outcome in self.admission.admit_all(requests, validated):
            if isinstance(outcome, Exception):
                admitted.append(outcome)
                continue
            job, created = outcome
            if created and journal is not None:
                try:
                    journal.record_submitted_held(job)
                except JournalError as exc:
                    self.withdraw([job])
                    admitted.append(exc)
                    continue
            admitted.append(job)
        return admitted

    def takes_validated(self, request: JobRequest) -> bool:
        """Whether `schedule_then` admits `request` as it is, so that inputs a front validated are
        taken as they came (msgpack, not validated again); False where it goes through `schedule`."""
        return request.callback_url is None and request.model_name not in self.executors

    def withdraw(self, jobs: list[Job]) -> None:
        """Their submission records could not be committed, and the client is told so (503, no id):
        the jobs must not run, or a client retrying would run them twice."""
        for job in jobs:
            if not job.ended:
                self.endings.finish(
                    job,
                    JobStatus.CANCELLED,
                    error="not accepted: the journal could not record the submission",
                    error_kind=ErrorKind.CANCELLED,
                )

    async def precheck(
        self, request: JobRequest, url_checks: Mapping[str, asyncio.Future[None]] | None = None
    ) -> None:
        """The checks that may do I/O (DNS): a render's URL, a callback URL (`url_checks`: a batch's,
        each URL resolved once)."""
        if self.executors:
            executor = self.executors.get(request.model_name)
            if executor is not None:
                await executor.precheck(request.inputs)
        if request.callback_url is not None:
            if url_checks is not None and request.callback_url in url_checks:
                await asyncio.shield(url_checks[request.callback_url])
            else:
                await self._check_url(request.callback_url)

    async def _check_url(self, url: str) -> None:
        try:
            await asyncio.wait_for(self.webhooks.precheck(url), URL_CHECK_TIMEOUT_S)
        except TimeoutError:
            raise InvalidInputError(
                f"the callback URL's host did not resolve within {URL_CHECK_TIMEOUT_S:g}s",
                field="callback_url",
            ) from None

    def submit(self, request: JobRequest) -> str:
        """Admitted, its record queued for the journal without waiting for it (for callers on the loop
        that batch their own); URLs checked without DNS (the render process and the webhook delivery
        resolve and check them)."""
        if request.callback_url is not None:
            self.webhooks.precheck_offline(request.callback_url)
        job, created = self.admission.admit(request)
        if created and self.journal is not None:
            self.journal.record_submitted_nowait(job)
        return job.id

    async def schedule_many(self, requests: list[JobRequest]) -> list[str | SchedulerError]:
        """Each request admitted or refused alone; the ids once the admitted ones are durable."""
        urls = {one.callback_url for one in requests if one.callback_url is not None}
        url_checks = {url: asyncio.ensure_future(self._check_url(url)) for url in urls}  # once per URL
        checks = await asyncio.gather(
            *(self.precheck(one, url_checks) for one in requests), return_exceptions=True
        )
        for url_check in url_checks.values():  # one whose only item failed first is still looked at
            url_check.add_done_callback(lambda done: done.cancelled() or done.exception())
        outcomes: list[str | SchedulerError] = []
        commits: set[asyncio.Future[None]] = set()
        admitted: list[Job] = []
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
                admitted.append(job)
            outcomes.append(job.id)
        if commits:
            try:
                await asyncio.gather(*commits)
            except JournalError:
                self.withdraw(admitted)
                raise
        return outcomes

    async def infer(self, model: str, inputs: Any, *, timeout: float | None = None, **options: Any) -> Any:
        """Submit and wait: the result, or JobFailedError (with its kind), JobCancelledError, TimeoutError
        (`timeout` seconds passed). `options`: `priority`, `timeout_s`, `idempotency_key`, `callback_url`."""
        job = await self._schedule(JobRequest(model=model, inputs=inputs, **options), waited=True)
        return result_of(await self.endings.wait(job, timeout), self.admission.accepting)

    async def infer_many(
        self, model: str, inputs: Iterable[Any], *, timeout: float | None = None, **options: Any
    ) -> list[Any]:
        """`infer` of each input, submitted in one group: the results in order; the first refusal or
        failure raises."""
        ids = await self.schedule_many([JobRequest(model=model, inputs=one, **options) for one in inputs])
        if refused := next((one for one in ids if isinstance(one, SchedulerError)), None):
            raise refused
        jobs = [self.admission.table.jobs[str(job_id)] for job_id in ids]
        views = await asyncio.gather(*(self.endings.wait(job, timeout) for job in jobs))
        return [result_of(view, self.admission.accepting) for view in views]
