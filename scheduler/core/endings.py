"""`JobEndings`: the one place where a job ends, and the view of a job that a client may see.

Ending a job records it in the table, tells the observers (pipelines, the render executor) and, with
a journal, queues its end record. What only counts ends (metrics, the status history, the costs) is
told of them in bulk, once a loop turn (`tallies`): a list appended to per end, not a call per
counter. Its waiters (`wait_for`, the REST long poll) wake once the end is
durable: until the end record is committed the job shows the state it ended from, so a crash in
between, which runs the job again after the restart, never takes back an answer a client has seen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from scheduler.core.events import JobEvents, queue_position, queue_positions
from scheduler.core.jobs import ENDED, Job, JobStatus
from scheduler.core.ports import JobJournal
from scheduler.core.table import JobTable
from scheduler.errors import ErrorKind, JobCancelledError, JobFailedError, JournalError, NotRunningError
from workers.logs import about_job

log = logging.getLogger("modelsched.scheduler")
T = TypeVar("T")


class JobEndings:
    """Ends jobs and wakes their waiters.

    table: the job table
    journal: where ends are made durable (None: an end shows at once)
    """

    def __init__(self, table: JobTable, journal: JobJournal | None) -> None:
        self.table = table
        self.journal = journal
        self.observers: list[Callable[[Job], None]] = []  # told of every end, as it happens
        # told, as it happens, of the end of a job that is a pipeline's or part of another (a stage's,
        # a CPU call's: `pipeline` or `parent_id` set); a client's plain job costs them no call
        self.family_observers: list[Callable[[Job], None]] = []
        self.tallies: list[Callable[[list[Job]], None]] = []  # told of the ends in bulk, once a loop turn
        self._untallied: list[Job] = []
        self._unsettled: dict[
            str, JobStatus
        ] = {}  # ended, end not committed yet -> the status shown meanwhile
        self._unsettled_jobs: dict[str, Job] = {}  # the same jobs: the table may trim one meanwhile
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._callbacks: dict[str, list[Callable[[], object]]] = {}  # `when_settled`'s
        self.settle_observers: list[Callable[[Job], None]] = []  # told once an end is durable (webhooks)
        self.events = JobEvents(table, self.shown_status, self.view)  # the live events of listened jobs

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
        if self.tallies:
            untallied = self._untallied
            untallied.append(job)
            if len(untallied) == 1:
                self._tally_soon()
        observers = self.observers
        if job.parent_id is not None or job.pipeline is not None:
            observers = [*self.family_observers, *observers]
        for observer in observers:
            try:
                observer(job)
            except Exception:  # one observer's bug must not stop the end, nor the batch it came in
                log.exception("an observer of a job's end failed", extra=about_job(job.id))
        if self.journal is not None and job.parent_id is None:  # a stage's or CPU call's job is not journaled
            try:
                future = self.journal.record_ended(job)
            except JournalError as exc:  # closed under a late end (stop() is under way): nothing to wait for
                log.warning(
                    "job ended after the journal closed; its end is not recorded: %s",
                    exc,
                    extra=about_job(job.id),
                )
            else:
                self._unsettled[job.id] = before  # waiters wake when it is committed (`ends_committed`)
                self._unsettled_jobs[job.id] = job
                return future
        self._settle(job.id, job)
        return None

    def tally(self) -> None:
        """Tell the tallies of the ends since the last time (the loop calls it once a turn with ends;
        a reader of what they count may call it first)."""
        jobs, self._untallied = self._untallied, []
        if not jobs:
            return
        for tally in self.tallies:
            try:
                tally(jobs)
            except Exception:  # one counter's bug must not keep the others from counting
                log.exception("a tally of %d job ends failed", len(jobs))

    def _tally_soon(self) -> None:
        try:
            asyncio.get_running_loop().call_soon(self.tally)
        except RuntimeError:  # no loop runs (a synchronous caller): at once
            self.tally()

    def fail(self, jobs: list[Job], error: str, kind: ErrorKind) -> None:
        for job in jobs:
            self.finish(job, JobStatus.ERROR, error=error, error_kind=kind)

    # ---- what a client sees ------------------------------------------------------------------

    def view(self, job: Job, positions: dict[str, int] | None = None) -> dict[str, Any]:
        """The job as a client may see it: an end shows once it is durable; a queued job shows how
        many jobs run before it (`positions`: counted for many jobs at once, by `views`)."""
        shown = job.to_dict()
        before = self._unsettled.get(job.id)
        if before is not None:
            shown.update(status=before.value, ended_at=None, result=None, error=None)
        shown["error_kind"] = job.error_kind if before is None else None
        if job.status is JobStatus.QUEUED:
            shown["queue_position"] = (
                queue_position(self.table, job) if positions is None else positions.get(job.id)
            )
        else:
            shown["queue_position"] = None
        return shown

    def views(self, jobs: Iterable[Job]) -> list[dict[str, Any]]:
        """`view` of each job, the queue positions counted once per model."""
        jobs = list(jobs)
        positions: dict[str, int] = {}
        for model in {job.model for job in jobs if job.status is JobStatus.QUEUED}:
            positions.update(queue_positions(self.table, model))
        return [self.view(job, positions) for job in jobs]

    def shown_status(self, job: Job) -> JobStatus:
        """The status a client sees: the one it ended from until its end is durable."""
        return self._unsettled.get(job.id, job.status)

    def settled(self, job: Job) -> bool:
        """Ended, and the end is durable."""
        return job.status in ENDED and job.id not in self._unsettled

    def waiter(self, job: Job, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None] | None:
        """A future done once the job's end is durable; None when it is already. The caller awaits it
        (with its own timeout: not a coroutine more per job here) and then calls `forget_waiter`."""
        if self.settled(job):
            return None
        future: asyncio.Future[None] = loop.create_future()
        _listed(self._waiters, job.id, future)
        return future

    def when_settled(self, job: Job, callback: Callable[[], object]) -> bool:
        """`callback()` once the job's end is durable (or the scheduler stops), called from the
        commit's own callback: no future and no loop turn more per job (the fronts' hot path). False,
        and nothing registered, when it is durable already. `forget_callback` takes it back."""
        if self.settled(job):
            return False
        _listed(self._callbacks, job.id, callback)
        return True

    def forget_callback(self, job_id: str, callback: Callable[[], object]) -> None:
        _unlisted(self._callbacks, job_id, callback)

    async def wait(self, job: Job, timeout: float | None) -> dict[str, Any]:
        """The job's view once its end is durable, or as it stands when `timeout` seconds have passed."""
        future = self.waiter(job, asyncio.get_running_loop())
        if future is not None:
            try:
                await asyncio.wait_for(future, timeout)
            except TimeoutError:
                pass
            finally:
                self.forget_waiter(job.id, future)
        return self.view(job)

    def forget_waiter(self, job_id: str, future: asyncio.Future[None]) -> None:
        _unlisted(self._waiters, job_id, future)

    # ---- durability ----------------------------------------------------------------------------

    def ends_committed(self, job_ids: list[str]) -> None:
        """The journal committed these jobs' end records (its callback)."""
        unsettled, unsettled_jobs, table_get = self._unsettled, self._unsettled_jobs, self.table.get
        for job_id in job_ids:
            unsettled.pop(job_id, None)
            job = unsettled_jobs.pop(job_id, None)
            self._settle(job_id, job if job is not None else table_get(job_id))

    def release_all(self) -> None:
        """The scheduler stops: every waiter returns with the job as it stands, every event stream ends."""
        self.tally()
        self.events.close_all()
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_result(None)
        self._waiters.clear()
        callbacks, self._callbacks = self._callbacks, {}
        for job_id, waiting in callbacks.items():
            self._call(job_id, waiting)
        self._unsettled.clear()
        self._unsettled_jobs.clear()

    def _settle(self, job_id: str, job: Job | None) -> None:
        """The end is durable: waiters wake, listeners get the end, observers are told. (Once per job
        on the hot path: what is usually empty is looked at before anything is called.)"""
        if self._waiters:
            waiters = self._waiters.pop(job_id, None)
            if waiters:
                for future in waiters:
                    if not future.done():
                        future.set_result(None)
        callbacks = self._callbacks.pop(job_id, None)
        if callbacks:
            self._call(job_id, callbacks)
        if job is not None:
            if self.events.listening:
                self.events.settled(job)
            for observer in self.settle_observers:
                try:
                    observer(job)
                except Exception:  # a callback's bug must not keep the other jobs' ends from showing
                    log.exception("an observer of a job's durable end failed", extra=about_job(job.id))

    @staticmethod
    def _call(job_id: str, callbacks: list[Callable[[], object]]) -> None:
        for callback in callbacks:
            try:
                callback()
            except Exception:  # one waiter's bug must not keep the others (or the commit's ends) waiting
                log.exception("a callback waiting for a job's end failed", extra=about_job(job_id))


def _listed(lists: dict[str, list[T]], key: str, item: T) -> None:
    """`item` added to the list under `key` (made for the first)."""
    listed = lists.get(key)
    if listed is None:
        lists[key] = [item]
    else:
        listed.append(item)


def _unlisted(lists: dict[str, list[T]], key: str, item: T) -> None:
    """`item` taken out of the list under `key` (gone with the last)."""
    listed = lists.get(key)
    if listed and item in listed:
        listed.remove(item)
        if not listed:
            del lists[key]


def result_of(view: dict[str, Any], accepting: bool = True) -> Any:
    """The result of a job's view, or why there is none: JobFailedError (with its `ErrorKind`),
    JobCancelledError, TimeoutError when it has not ended (NotRunningError when the wait ended because
    the scheduler stopped: `accepting` is False)."""
    status, job_id = view["status"], view["job_id"]
    if status == JobStatus.COMPLETED:
        return view["result"]
    if status == JobStatus.ERROR:
        raise JobFailedError(view["error"] or "the job failed", view.get("error_kind"), job_id)
    if status == JobStatus.CANCELLED:
        raise JobCancelledError(view["error"] or "the job was cancelled", job_id)
    if not accepting:
        raise NotRunningError(f"the scheduler stopped before job {job_id} ended; it runs after the restart")
    raise TimeoutError(f"job {job_id} has not ended yet ({status})")
