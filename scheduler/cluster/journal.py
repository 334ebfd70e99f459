"""`RedisJournal`: the core's `JobJournal` on the cluster's Redis, for the jobs this daemon runs.

In cluster mode Redis is the queue and the journal (the SQLite journal is off: one source of
truth). A submission is recorded by the front (`scheduler.cluster.front`); what the core records here
is what happens to a job this host claimed: its end (`modelsched_finish`, a compare-and-set: written
only while the job is `processing` on this host, so a result after a cancel, a timeout or a reclaim
is dropped) and its tries. Ends wait for Redis when it is away and are written once it is back; the
waiters of an end wake once Redis has answered (with `appendfsync always`, once it is on disk).

An infer submitted here that runs here at once has its submission held back, as on a single host
(`scheduler.core.held`): its client is answered once its end is durable, so the submission is
written with the end, as one hash (`modelsched_record`: one call, no stream, no held set), or on its
own (`modelsched_submit`, released: held by this host) once it has not ended within the hold. What a
host's death loses of it is what its client was never answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from scheduler.cluster.records import finish_args, page_args, page_of, record_args, stream_name, submit_args
from scheduler.cluster.store import ClusterStore
from scheduler.core.held import HeldReleases, HeldSubmissions
from scheduler.core.jobs import Job
from scheduler.core.ports import JournalStatus
from scheduler.errors import JournalError

log = logging.getLogger("modelsched.cluster")


class RedisJournal:
    """store: the connection; host: this daemon's identity; retention_s: how long an end is kept;
    max_attempts: from the settings (a restart counts one for the jobs its old identity held)."""

    def __init__(self, store: ClusterStore, host: str, retention_s: float, max_attempts: int) -> None:
        self.store = store
        self.host = host
        self.retention_s = retention_s
        self.max_attempts = max_attempts
        self.on_ends_committed: Callable[[list[str]], None] = lambda ids: None
        self.on_end_written: list[Callable[[Job, bool], None]] = []  # (the job, its end written by this host)
        self.ends_written = 0
        self.ends_dropped = 0  # results that came after a cancel, timeout or reclaim
        self.opened = False
        self.holds = HeldSubmissions()  # infers submitted here, running here, not written yet
        self.held_ends = 0  # ends written with their held submission (`modelsched_record`)
        self.releases = 0  # held submissions written before their end (the hold ran out, a read, a stop)
        self.on_released: Callable[[Job, bytes], None] = lambda job, stream: None  # (the back end's hold)
        self._releases = HeldReleases(self.holds, self._write_all_released)
        self._unanswered: set[asyncio.Future[None]] = set()  # released submissions not answered yet

    async def open(self, on_ends_committed: Callable[[list[str]], None]) -> list[Job]:
        """Connect, load the functions, and queue again at once what this identity held before a
        restart (an attempt each). Returns no job: the cluster's queue is in Redis."""
        self.on_ends_committed = on_ends_committed
        await self.store.open()
        reclaimed = await self.store.call(
            "reclaim", 0, _now(), self.max_attempts, int(self.retention_s), self.host, 1
        )
        if reclaimed:
            log.warning(
                "%d job(s) this host (%s) held before its restart are queued again", reclaimed, self.host
            )
        self.opened = True
        return []

    async def close(self) -> None:
        await self.release_held()
        await self.store.close()
        self.opened = False

    def record_submitted_nowait(self, job: Job) -> asyncio.Future[None]:
        raise JournalError("in cluster mode a job is submitted through the cluster front")

    # ---- held submissions ------------------------------------------------------------------------

    def record_submitted_held(self, job: Job) -> None:
        """`job` (submitted here, running here, its client waiting for the end) is written with its
        end, or alone once it has not ended within the hold."""
        if not self.opened:
            raise JournalError("the cluster journal is closed")
        self._releases.hold(job, asyncio.get_running_loop())

    def is_held(self, job_id: str) -> bool:
        """Whether `job_id`'s submission is held here: nobody else can read it yet."""
        return job_id in self.holds.held

    def release(self, job_id: str) -> asyncio.Future[None] | None:
        """Write a held submission now (a read or a cancel of it needs it in Redis); None: not held."""
        job = self.holds.release(job_id)
        return None if job is None else self._write_released(job)

    async def release_held(self) -> None:
        """Every held submission written (the daemon stops: a job that has not ended is in Redis, held
        by this host, and goes back to the queue with the rest of what this host holds)."""
        self._write_all_released(self._releases.release_all())
        if self._unanswered:
            await asyncio.wait(set(self._unanswered), timeout=5.0)

    def _write_all_released(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._write_released(job)

    def _write_released(self, job: Job) -> asyncio.Future[None]:
        """The submission of a held job, written as held by this host (if its end is not there yet)."""
        self.releases += 1
        self.on_released(job, stream_name(self.store.prefix, job.model, int(job.priority)))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unanswered.add(done)

        def settled(answer: object, error: BaseException | None) -> None:
            self._unanswered.discard(done)
            if error is not None:
                log.warning("job %s: its held submission could not be written: %s", job.id, error)
            if not done.done():
                done.set_result(None)

        args = submit_args(job, self.host, self.host, released=True)
        self.store.batched_then("submit", settled, *args, retry=True)
        return done

    # ---- ends ------------------------------------------------------------------------------------

    def record_ended(self, job: Job) -> asyncio.Future[None]:
        if not self.opened:
            raise JournalError("the cluster journal is closed")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def settled(answer: object, error: BaseException | None) -> None:
            ok = error is None and answer == 1
            if ok:
                self.ends_written += 1
            else:
                self.ends_dropped += 1
            for observer in self.on_end_written:
                observer(job, ok)
            self.on_ends_committed([job.id])
            if not done.done():
                done.set_result(None)

        self.held_ends += job.id in self.holds.held
        if self.holds.ended(job.id):  # held (or released, maybe not written): an upsert with the submission
            self.store.batched_then(
                "record", settled, *record_args(job, self.host, self.retention_s), retry=True
            )
        else:
            self.store.batched_then(
                "finish", settled, *finish_args(job, self.host, self.retention_s), retry=True
            )
        return done

    def record_attempts(self, job: Job) -> None:
        if self.opened:
            sent = self.store.call("attempts", job.id, self.host, job.attempts, retry=True)
            sent.add_done_callback(lambda done: done.cancelled() or done.exception())

    def record_stage(self, job: Job) -> None:
        """Pipelines run on one host; in cluster mode they are refused at submission."""

    def lookup(self, job_id: str) -> Job | None:
        return None  # the cluster front reads Redis

    def find_by_key(self, idempotency_key: str) -> Job | None:
        return None  # `modelsched_submit` answers a known key

    async def page_ended(
        self, before: str | None, since: str | None, status: str | None, model: str | None, limit: int
    ) -> list[Job]:
        """Every host's ended jobs, from Redis (`modelsched_jobs`, ended only); the job list of a cluster
        reads Redis itself (`ClusterFront.page`), queued and running jobs too."""
        jobs: list[Job] = []
        while len(jobs) < limit:
            reply = await self.store.call(
                "jobs", *page_args(before, since, status, model, limit - len(jobs), True)
            )
            cursor, found = page_of(reply)
            jobs.extend(job for job, _ in found)
            if cursor is None:
                break
            before = cursor
        return jobs

    def prune(self) -> None:
        """Redis expires ended jobs (`result_retention_s`) itself."""

    def problem(self) -> str | None:
        if self.store.down_since is not None:
            return f"the cluster's Redis is unreachable: {self.store.url}"
        return None

    def check_room(self) -> None:
        problem = self.problem()
        if problem is not None:
            raise JournalError(problem + "; retry later")

    def status(self) -> JournalStatus:
        return JournalStatus(
            path=self.store.url,
            size_mb=0.0,
            used_mb=0.0,
            max_mb=0.0,
            pruned_for_size=0,
            pruned_ended_through=None,
            pruned_for_age=0,
            full=False,
            problem=self.problem(),
            commits=self.store.round_trips,
        )


def _now() -> str:
    return repr(time.time())
