"""`RedisJournal`: the core's `JobJournal` on the cluster's Redis, for the jobs this daemon runs.

In cluster mode Redis is the queue and the journal (the SQLite journal is off: one source of
truth). A submission is recorded by the front (`scheduler.cluster.front`); what the core records here
is what happens to a job this host claimed: its end (`modelsched_finish`, a compare-and-set: written
only while the job is `processing` on this host, so a result after a cancel, a timeout or a reclaim
is dropped) and its tries. Ends wait for Redis when it is away and are written once it is back; the
waiters of an end wake once Redis has answered (with `appendfsync always`, once it is on disk).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from scheduler.cluster.records import finish_args, page_args, page_of
from scheduler.cluster.store import ClusterStore
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
        await self.store.close()
        self.opened = False

    def record_submitted_nowait(self, job: Job) -> asyncio.Future[None]:
        raise JournalError("in cluster mode a job is submitted through the cluster front")

    def record_submitted_held(self, job: Job) -> None:
        raise JournalError("in cluster mode a job is submitted through the cluster front")

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

        self.store.batched_then("finish", settled, *finish_args(job, self.host, self.retention_s), retry=True)
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
