"""`ClusterFront`: the front of a daemon in a cluster. Any daemon answers any job id: a submission is
checked here as on a single host (`Admission.new_job`), then recorded in Redis (`modelsched_submit`:
the job's hash, its stream entry and its idempotency key at once) and acknowledged once Redis has
it (an infer that runs here at once is written with its end instead: `RedisJournal`'s held
submissions); reads, waits and cancels go to the job's hash. A wait wakes when the job's end is
published (pub/sub) and re-reads the job then, at its deadline and after a reconnect (pub/sub may
drop a message). The jobs a front has seen are kept (bounded) for the synchronous reads of the API."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from scheduler.cluster.hosts import Hosts
from scheduler.cluster.records import as_dict, job_from_hash, page_args, page_of, submit_args, view_of_job
from scheduler.cluster.store import ClusterStore
from scheduler.core.admission import Admission
from scheduler.core.events import JobEvents
from scheduler.core.job_pages import JobFilter
from scheduler.core.jobs import ENDED, Job, JobRequest, JobStatus
from scheduler.errors import (
    InvalidInputError,
    JobEndedError,
    JobNotFoundError,
    JournalError,
    NoFitError,
    NotRunningError,
    SchedulerError,
)

KNOWN_JOBS = 20_000  # jobs a front remembers for the synchronous reads (`Scheduler.get_job`)
REREAD_S = 0.5  # a wait re-reads its job this often while Redis is away
ENDED_NAMES = frozenset(status.value for status in ENDED)


def _time_out(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


class DirectRuns(Protocol):
    """The back end of the front's own daemon: room for a job now, and the job it runs at once."""

    def reserve(self, model: str) -> bool: ...

    def unreserve(self, model: str) -> None: ...

    def take_direct(self, job: Job, entry: tuple[bytes, bytes]) -> None: ...

    def may_hold(self, model: str) -> bool: ...

    def take_held(self, job: Job) -> None: ...


class Holds(Protocol):
    """The journal's held submissions (`RedisJournal`): infers written with their ends."""

    def record_submitted_held(self, job: Job) -> None: ...

    def is_held(self, job_id: str) -> bool: ...

    def release(self, job_id: str) -> asyncio.Future[None] | None: ...


class ClusterFront:
    """store: Redis; admission: the checks of a submission; hosts: which live host can run a model;
    precheck: the checks that may do I/O (a callback URL's DNS); retention_s: how long an end is kept."""

    def __init__(
        self,
        store: ClusterStore,
        admission: Admission,
        hosts: Hosts,
        host: str,
        retention_s: float,
        unsupported: Callable[[str], str | None],
        events: JobEvents,
    ) -> None:
        self.store = store
        self.admission = admission
        self.hosts = hosts
        self.host = host
        self.retention_s = retention_s
        self.unsupported = unsupported  # why a model cannot run through the cluster (render), or None
        self.events = events  # the job event streams (SSE) of this daemon: told of ends heard here
        self.runs_here: DirectRuns | None = None  # this daemon's back end, which may run a job at once
        self.holds: Holds | None = None  # this daemon's journal, which may hold an infer's submission
        self._reads: set[asyncio.Task[None]] = set()
        self.known: OrderedDict[str, tuple[Job, str | None]] = OrderedDict()
        self._waiters: dict[str, list[asyncio.Future[bool]]] = {}
        # Round trips saved: a job this front just submitted is known to be queued until an end of it
        # is heard (`heard_ends`), and one that ended on this host is known as it was written (`final`)
        self.heard_ends: OrderedDict[str, None] = OrderedDict()
        self.final: set[str] = set()
        self.closed = False  # the daemon stops: waits return the job as it stands

    # ---- submissions ---------------------------------------------------------------------------

    async def schedule(self, request: JobRequest, held: bool = False) -> str:
        """The job's id once Redis has it; `held`: its client waits for its end (an infer), so a job
        that can run here at once is not written before its end (`RedisJournal.record_submitted_held`)."""
        if not self.admission.accepting:
            raise NotRunningError("the scheduler is not accepting jobs (not started, or shutting down)")
        if request.pipeline:
            raise InvalidInputError("pipelines run on one host: not in cluster mode", field="pipeline")
        why = self.unsupported(request.model_name)
        if why is not None:
            raise InvalidInputError(why, field="model")
        job = self.admission.new_job(request, check_fit=False)
        refusal = self.hosts.refusal(job.model)
        if refusal is not None:
            raise NoFitError(f"model {job.model!r} cannot run in this cluster: {refusal}")
        if (
            held
            and self.store.up  # (Redis away: the submission is refused below, as any other)
            and self.holds is not None
            and self.runs_here is not None
            and job.idempotency_key is None  # (the key is Redis's to check)
            and job.callback_url is None
            and self.runs_here.may_hold(job.model)
        ):
            self.holds.record_submitted_held(job)
            self.runs_here.take_held(job)
            self._remember(job, None)
            self.admission.announce(job)
            return job.id
        direct = self.runs_here is not None and self.runs_here.reserve(job.model)
        try:
            answer = await self.store.batched(
                "submit", *submit_args(job, self.host if direct else "", self.host)
            )
        finally:
            if direct and self.runs_here is not None:
                self.runs_here.unreserve(job.model)
        created, job_id = int(answer[0]), answer[1].decode()
        if created == 1 and len(answer) == 4 and self.runs_here is not None:  # held here at once
            self.runs_here.take_direct(job, (answer[2], answer[3]))
        if created == 1:
            self._remember(job, None)
            self.admission.announce(job)  # counted once (the metrics), as `Admission.admit` does
        elif job_id not in self.known:
            await self.read(job_id)
        return str(job_id)

    async def schedule_many(self, requests: list[JobRequest]) -> list[str | SchedulerError]:
        """Each alone; their calls go to Redis in one round trip (made in one loop turn)."""
        outcomes = await asyncio.gather(*(self.schedule(one) for one in requests), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, SchedulerError):
                raise outcome
        return [one if isinstance(one, str | SchedulerError) else str(one) for one in outcomes]

    # ---- reads, waits, cancels -------------------------------------------------------------------

    def cached(self, job_id: str) -> Job:
        """The job as this front last read it (JobNotFoundError when it has not seen it)."""
        known = self.known.get(job_id)
        if known is None:
            raise JobNotFoundError(f"no job with id {job_id!r} (read it with GET /jobs/{job_id})")
        return known[0]

    def cached_view(self, job_id: str) -> dict[str, Any]:
        self.cached(job_id)
        return view_of_job(*self.known[job_id])

    async def read(self, job_id: str, watch: bool = True) -> dict[str, Any]:
        """The job as Redis holds it; `watch`: and, while it has not ended, this host is told of its
        end (`modelsched_watch`: the read and the watch in one step, so no end falls between)."""
        await self._written(job_id)
        if watch:
            reply = await self.store.call("watch", job_id, self.host)
        else:
            reply = await self.store.command("HGETALL", f"{self.store.prefix}job:{job_id}")
        fields = as_dict(reply)
        if not fields:
            self.known.pop(job_id, None)
            raise JobNotFoundError(f"no job with id {job_id!r}")
        job, host = job_from_hash(fields)
        self.final.discard(job_id)
        self._remember(job, host)
        return view_of_job(job, host)

    async def views(self, job_ids: list[str]) -> dict[str, Any]:
        """`GET /jobs?ids=`: the jobs' views in order (read in one round trip), and the ids not found."""
        found: list[dict[str, Any]] = []
        missing: list[str] = []
        for job_id, outcome in zip(
            job_ids,
            await asyncio.gather(*(self.read(one, watch=False) for one in job_ids), return_exceptions=True),
            strict=True,
        ):
            if isinstance(outcome, JobNotFoundError):
                missing.append(job_id)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                found.append(outcome)
        return {"jobs": found, "not_found": missing}

    async def page(self, where: JobFilter, limit: int) -> dict[str, Any]:
        """`GET /jobs` in a cluster: every host's jobs as Redis holds them, newest first. A page that
        looked at `MAX_SCAN` ids without filling up ends early; its `next_before` pages on."""
        reply = await self.store.call(
            "jobs", *page_args(where.before, where.since, where.status, where.model, limit, False)
        )
        cursor, jobs = page_of(reply)
        next_before = jobs[-1][0].id if len(jobs) == limit else cursor
        return {"jobs": [view_of_job(*one) for one in jobs], "not_found": [], "next_before": next_before}

    async def wait(self, job_id: str, timeout: float | None) -> dict[str, Any]:
        """The job once it has ended, or as it stands when `timeout` seconds have passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        while True:
            known = self._known(job_id)
            if known is not None and known[0].ended:  # (it ended here: no registration, no read)
                return view_of_job(*known)
            future: asyncio.Future[bool] = loop.create_future()  # True: an end was heard (or a reconnect)
            self._waiters.setdefault(job_id, []).append(future)  # before the read: no end is missed
            try:
                left = None if deadline is None else deadline - time.monotonic()
                try:
                    known = self._known(job_id)
                    view = await self.read(job_id) if known is None else None
                except JournalError:  # Redis away: wait for the reconnect (or the deadline), read again
                    if (left is not None and left <= 0) or self.closed:
                        raise
                    await asyncio.wait({future}, timeout=REREAD_S if left is None else min(left, REREAD_S))
                    continue
                if view is None and known is not None and (known[0].ended or self.closed):
                    view = view_of_job(*known)  # (built only when it is the answer)
                if view is None:
                    pass  # known, queued here: wait
                elif view["status"] in ENDED_NAMES or self.closed:
                    return view
                if left is not None and left <= 0:
                    return view if view is not None else await self.read(job_id)
                if left is not None:  # (a timer, not `wait_for`: this is every waiter's path)
                    timer = loop.call_later(left, _time_out, future)
                    if not await future:
                        return await self.read(job_id)
                    timer.cancel()
                else:
                    await future
            finally:
                self._forget(job_id, future)

    def _known(self, job_id: str) -> tuple[Job, str | None] | None:
        """The job as known without a read: one that ended here, or one submitted here and not ended."""
        known = self.known.get(job_id)
        if known is None:
            return None
        if job_id in self.final or (known[0].status is JobStatus.QUEUED and job_id not in self.heard_ends):
            return known
        if self.holds is not None and self.holds.is_held(job_id):  # (nobody else knows of it)
            return known
        return None

    async def _written(self, job_id: str) -> None:
        """A job whose submission is held here is written first (a read or a cancel needs it in Redis)."""
        release = self.holds.release(job_id) if self.holds is not None else None
        if release is not None:
            await release

    async def cancel(self, job_id: str) -> dict[str, Any]:
        await self._written(job_id)
        outcome = await self.store.call("cancel", job_id, repr(time.time()), int(self.retention_s))
        code, detail = int(outcome[0]), outcome[1].decode()
        if code < 0:
            raise JobNotFoundError(f"no job with id {job_id!r}")
        if code == 0:
            raise JobEndedError(f"job {job_id} already ended ({detail})")
        return await self.read(job_id)

    # ---- pub/sub -------------------------------------------------------------------------------

    def ended_here(self, job: Job, written: bool) -> None:
        """This host wrote the end of `job` (`written`; else another end came first): no read needed."""
        if written and job.parent_id is None:
            self._remember(job, self.host)
            self.final.add(job.id)
        self.ended(job.id)

    def ended(self, job_id: str) -> None:
        if self.events.listened(job_id):
            read = asyncio.ensure_future(self._settle_listeners(job_id))
            self._reads.add(read)
            read.add_done_callback(self._reads.discard)
        self.heard_ends[job_id] = None
        while len(self.heard_ends) > KNOWN_JOBS:
            self.heard_ends.popitem(last=False)
        waiters = self._waiters.pop(job_id, None)
        for future in waiters or ():
            if not future.done():
                future.set_result(True)

    async def _settle_listeners(self, job_id: str) -> None:
        """The job's event streams on this daemon get its end (read from Redis: any host may have run it)."""
        try:
            await self.read(job_id)
        except (JournalError, JobNotFoundError):
            return
        job = self.known[job_id][0]
        if job.ended:
            self.events.settled(job)

    def wake_all(self) -> None:
        """After a reconnect: every waiter re-reads its job."""
        for job_id in list(self._waiters):
            self.ended(job_id)

    def release_all(self) -> None:
        self.closed = True
        self.wake_all()

    def _forget(self, job_id: str, future: asyncio.Future[bool]) -> None:
        waiters = self._waiters.get(job_id)
        if waiters and future in waiters:
            waiters.remove(future)
            if not waiters:
                del self._waiters[job_id]

    def _remember(self, job: Job, host: str | None) -> None:
        self.known[job.id] = (job, host)
        self.known.move_to_end(job.id)
        while len(self.known) > KNOWN_JOBS:
            self.final.discard(self.known.popitem(last=False)[0])
