"""`ClusterBackend`: the back end of a daemon in a cluster, which pulls work for its own workers.

A claim asks Redis (`modelsched_claim`) for as many jobs per model as this host's placement pass has
room for (`scheduler.cluster.rooms`), strict priority first; the jobs it gets join the local job
table as queued and the dispatch pass sends them to workers as on a single host. Their ends go back
through the journal (`RedisJournal`, a compare-and-set). A claim runs at most once at a time, when a
job is queued anywhere (pub/sub), when a job here ends, and on every tick. A job here whose end was
written elsewhere (a cancel, a deadline, a reclaim) ends here too; its result, if any, is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping

from scheduler.cluster.hosts import HostInfo, Hosts
from scheduler.cluster.records import claimed_entries, remaining_s
from scheduler.cluster.rooms import Claimable, ClaimRoom, claim_rooms
from scheduler.cluster.store import ClusterStore
from scheduler.core.deadlines import Deadlines
from scheduler.core.devices import Inventory
from scheduler.core.dispatch import PIPELINE_BATCHES, Dispatcher, demand_of
from scheduler.core.endings import JobEndings
from scheduler.core.jobs import Job, JobStatus
from scheduler.core.models import ModelRegistry
from scheduler.core.placement import used_mb_by_gpu
from scheduler.core.table import JobTable
from scheduler.core.workers import Worker
from scheduler.errors import ErrorKind, SchedulerError

log = logging.getLogger("modelsched.cluster")


class ClusterBackend:
    """store: Redis; host: this daemon's identity; hosts: the heartbeats (who has what warm); the
    rest: the local parts a claimed job goes through; cold_claim_delay_ms, max_models_per_worker:
    from the settings."""

    def __init__(
        self,
        store: ClusterStore,
        host: str,
        hosts: Hosts,
        registry: ModelRegistry,
        table: JobTable,
        workers: Mapping[str, Worker],
        inventory: Inventory,
        dispatcher: Dispatcher,
        deadlines: Deadlines,
        endings: JobEndings,
        *,
        cold_claim_delay_ms: float,
        max_models_per_worker: int,
    ) -> None:
        self.store = store
        self.host = host
        self.hosts = hosts
        self.registry = registry
        self.table = table
        self.workers = workers
        self.inventory = inventory
        self.dispatcher = dispatcher
        self.deadlines = deadlines
        self.endings = endings
        self.cold_claim_delay_ms = cold_claim_delay_ms
        self.max_models_per_worker = max_models_per_worker
        # job id -> its (stream, entry), refreshed by beats (entry b"": held where submitted, no entry)
        self.held: dict[str, tuple[bytes, bytes]] = {}
        self.enabled = False
        self.claims = 0
        self.claimed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._running = False
        self._again = False
        self._reserved: dict[str, int] = {}  # jobs being submitted here to run here at once, per model
        self._spare: dict[str, int] | None = None  # this loop turn's room for them, per model (warm only)
        # Jobs may wait in Redis for this host: set by a `queued` or `reclaimed` message and on every
        # tick; cleared by a claim that got less than it asked for, none of it cold. A job ending here
        # claims again only while it is set (else every end would cost a round trip for nothing).
        self.maybe_waiting = True
        # Models none of whose jobs wait in Redis, as far as this host knows: those a claim got less of
        # than it asked (warm, so no cold delay held them back); emptied by any sign that a job may
        # wait (a `queued` or `reclaimed` message, a tick) until the next claim. An infer of one of
        # them may run here with its submission held back (`may_hold`).
        self.none_waiting: set[str] = set()
        self._signs = 0  # signs that a job may wait, counted: a claim's findings older than one are old news
        endings.observers.append(self._ended)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.enabled = True
        self.schedule_claim()

    def stop(self) -> None:
        self.enabled = False

    # ---- claims --------------------------------------------------------------------------------

    def schedule_claim(self, maybe_waiting: bool = True) -> None:
        """Claim soon (once per loop turn, one claim at a time); `maybe_waiting`: a job may wait."""
        self.maybe_waiting = self.maybe_waiting or maybe_waiting
        if maybe_waiting:
            self.none_waiting.clear()
            self._signs += 1
        if not self.enabled or self._loop is None:
            return
        if self._running:
            self._again = True
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._start_claim)

    def _start_claim(self) -> None:
        self._scheduled = False
        if not self.enabled or self._running:
            return
        total, rooms = self.rooms()
        if total <= 0 or not rooms:
            return
        self._running = True
        task = asyncio.ensure_future(self._claim(total, rooms))
        task.add_done_callback(self._claim_done)

    # ---- jobs submitted here that run here at once (no claim round trip) ----------------------

    def reserve(self, model: str) -> bool:
        """Room now for a job of `model` submitted on this daemon, on a worker that has it loaded."""
        if not self.enabled or self._loop is None:
            return False
        if self._spare is None:
            total, rooms = self.rooms()
            self._spare = {room.model: min(room.room, total) for room in rooms if not room.cold}
            self._loop.call_soon(self._forget_spare)
        if self._spare.get(model, 0) <= 0:
            return False
        self._spare[model] -= 1
        self._reserved[model] = self._reserved.get(model, 0) + 1
        return True

    def unreserve(self, model: str) -> None:
        self._reserved[model] -= 1

    def _forget_spare(self) -> None:
        self._spare = None

    def may_hold(self, model: str) -> bool:
        """Whether an infer of `model` submitted here may run here with its submission held back (not
        in Redis until it ends): room now on a worker with it warm, and no job of it heard of waiting in
        the cluster (`none_waiting`), so that it jumps no job of the cluster's queues."""
        if model not in self.none_waiting or not self.reserve(model):
            return False
        self._reserved[model] -= 1  # (taken at once: `take_held` puts it in the table)
        return True

    def take_held(self, job: Job) -> None:
        """A job submitted here whose submission is held back (`may_hold`): it runs here; Redis has
        none of it until its end or its release (`take_released`)."""
        self.table.add(job)
        self.claimed += 1
        left = remaining_s(job)
        if left is not None:
            self.deadlines.watch(job, time.monotonic() + max(0.0, left))
        self.dispatcher.schedule()

    def take_released(self, job: Job, stream: bytes) -> None:
        """A held job's submission is written (held by this host, no stream entry): refreshed by the
        heartbeat from now on, as a direct hold."""
        if not job.ended:
            self.held[job.id] = (stream, b"")

    def take_direct(self, job: Job, entry: tuple[bytes, bytes]) -> None:
        """A job submitted here and held here at once (`modelsched_submit` found nothing before it)."""
        self._add(job, entry)
        self.claimed += 1
        self.dispatcher.schedule()

    def _add(self, job: Job, entry: tuple[bytes, bytes]) -> None:
        self.held[job.id] = entry
        self.table.add(job)
        left = remaining_s(job)
        if left is not None:
            self.deadlines.watch(job, time.monotonic() + max(0.0, left))

    def rooms(self) -> tuple[int, list[ClaimRoom]]:
        models = [
            Claimable(demand_of(registered), registered.spec.max_batch_size * PIPELINE_BATCHES)
            for registered in self.registry.models.values()
            if registered.no_fit is None
            and not (registered.failed_error is not None and time.monotonic() < registered.failed_until)
        ]
        waiting = dict(self.table.queued_count_by_model)
        for model, count in self._reserved.items():
            waiting[model] = waiting.get(model, 0) + count
        return claim_rooms(
            models,
            list(self.workers.values()),
            self.inventory.capacities(),
            waiting,
            max_models_per_worker=self.max_models_per_worker,
        )

    async def _claim(self, total: int, rooms: list[ClaimRoom]) -> None:
        warm_elsewhere = self.hosts.warm_elsewhere([room.model for room in rooms if room.cold], self.host)
        args: list[object] = []
        for room in rooms:
            args += [room.model, room.room, 1 if room.model in warm_elsewhere else 0]
        now = time.time()
        self.claims += 1
        signs = self._signs
        values = await self.store.call(
            "claim", self.host, repr(now), int(now * 1000), total, int(self.cold_claim_delay_ms), *args
        )
        taken = Counter(self.take(values))
        short = {room.model for room in rooms if not room.cold and taken[room.model] < room.room}
        if sum(taken.values()) >= total:
            return
        if len(short) == len(rooms):
            self.maybe_waiting = False  # it got less than it asked of each: nothing waits (for now)
        if self._signs == signs:  # (a sign that a job may wait came while it ran: it may be old news)
            self.none_waiting |= short

    def take(self, values: list[object]) -> list[str]:
        """The claimed jobs join the local table (queued); the dispatch pass runs them. Their models."""
        taken = claimed_entries(values)
        if not taken:
            return []
        for job, entry in taken:
            if job.model in self.registry.models:  # (always, with one model configuration)
                self._add(job, entry)
        self.claimed += len(taken)
        self.dispatcher.schedule()
        return [job.model for job, _ in taken]

    def _claim_done(self, task: asyncio.Future[None]) -> None:
        self._running = False
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            if isinstance(error, SchedulerError):
                log.debug("claim failed: %s", error)
            else:
                log.error("claim failed", exc_info=error)
        if self._again:
            self._again = False
            self.schedule_claim(maybe_waiting=False)  # (a sign that came meanwhile has been counted)

    # ---- ends ----------------------------------------------------------------------------------

    def _ended(self, job: Job) -> None:
        if job.id in self.held and self.maybe_waiting:
            self.schedule_claim(maybe_waiting=False)

    def forget(self, job: Job, written: bool) -> None:
        """The end of a job this host held reached Redis (`written`: by this host): nothing to refresh."""
        self.held.pop(job.id, None)

    def ended_elsewhere(self, job_id: str, why: str, entry: str | None = None) -> None:
        """Another host (a cancel, a deadline, a reclaim) ended or took back a job this host holds. A
        reclaim names the stream entry it took back: a job this host has claimed again since (a new
        entry on the re-queue stream) is not dropped by the news of an earlier hold's reclaim."""
        job = self.table.get(job_id)
        if job is None or job.ended or job_id not in self.held:
            return
        if entry is not None and self.held[job_id][1].decode() != entry:
            log.debug("job %s: a reclaim of its entry %s, not of this host's hold", job_id, entry)
            return
        log.info("job %s %s; this host drops it", job_id, why)
        self.endings.finish(job, JobStatus.CANCELLED, error=why, error_kind=ErrorKind.CANCELLED)

    # ---- what the heartbeat says -------------------------------------------------------------------

    def heartbeat(self, config: str) -> HostInfo:
        workers = list(self.workers.values())
        used = used_mb_by_gpu(workers)
        total, _ = self.rooms() if self.enabled else (0, [])
        return HostInfo(
            host=self.host,
            at=time.time(),
            config=config,
            warm=sorted({name for worker in workers if worker.ready for name in worker.models}),
            fits=sorted(
                name for name, registered in self.registry.models.items() if registered.no_fit is None
            )
            if workers
            else [],
            free_vram_mb=[
                round(capacity.usable_mb - used.get(capacity.index, 0.0), 1)
                for capacity in self.inventory.capacities()
            ],
            room=total,
            workers=len(workers),
        )

    def refresh_args(self) -> list[bytes | str]:
        """`modelsched_refresh`'s (stream, entry, job id) of every job held here (entry b"": a job
        held where it was submitted, without a stream entry)."""
        args: list[bytes | str] = []
        for job_id, (stream, entry) in self.held.items():
            args += [stream, entry, job_id]
        return args
