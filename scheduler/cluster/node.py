"""`Cluster`: a daemon's membership of a cluster, composed of the store, the heartbeats (`Hosts`), the
back end (claims), the front (submissions, reads, waits, cancels) and the pub/sub listener.

Every `cluster_heartbeat_s` it tells the cluster its models, free VRAM and room, refreshes the idle
time of the entries it holds (so a long job never looks abandoned while its host lives), reclaims
entries idle past `reclaim_idle_s` (any host's: the host died), ends jobs past their deadline that
nobody holds, and reads the hosts and the queue depth, all in one round trip. At start it refuses to
join a cluster whose live hosts run another model configuration; at stop it hands back the jobs it
holds and has not ended (no attempt counted)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec

from scheduler.cluster.backend import ClusterBackend
from scheduler.cluster.front import ClusterFront
from scheduler.cluster.hosts import Hosts
from scheduler.cluster.journal import RedisJournal
from scheduler.cluster.listener import Listener
from scheduler.cluster.records import as_dict
from scheduler.cluster.store import ClusterStore
from scheduler.core.jobs import Priority
from scheduler.core.status import ClusterStatus, QueueDepth
from scheduler.errors import ConfigError, SchedulerError

log = logging.getLogger("modelsched.cluster")

EXPIRE_GRACE_S = 2.0  # a running job past its deadline is its host's to end; after this, anyone's
SWEEP_IDS = 1000  # ids of the job list's index checked per heartbeat (those of expired jobs leave it)
LEVEL_NAMES = {"rq": "requeued", **{str(int(level)): level.name.lower() for level in Priority}}


class Cluster:
    def __init__(
        self,
        name: str,
        store: ClusterStore,
        journal: RedisJournal,
        hosts: Hosts,
        backend: ClusterBackend,
        front: ClusterFront,
        *,
        config: str,
        reclaim_idle_s: float,
        max_attempts: int,
        retention_s: float,
    ) -> None:
        self.name = name
        self.store = store
        self.journal = journal
        self.hosts = hosts
        self.backend = backend
        self.front = front
        self.config = config
        self.reclaim_idle_s = reclaim_idle_s
        self.max_attempts = max_attempts
        self.retention_s = retention_s
        self.host = backend.host
        self.depth: list[QueueDepth] = []
        self.listener = Listener(
            store, backend.host, self._on_end, self._on_queued, self._on_reclaimed, front.wake_all
        )
        journal.on_end_written.append(backend.forget)
        journal.on_end_written.append(front.ended_here)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Join (the journal is open): one heartbeat first, so that this host's models count at once;
        ConfigError when a live host runs another model configuration."""
        await self.beat()
        other = self.hosts.other_config(self.host, self.config)
        if other is not None:
            raise ConfigError(
                f"refusing to join cluster {self.name!r}: live host {other.host!r} runs another model "
                f"configuration (hash {other.config}, this daemon's {self.config})"
            )
        self.front.closed = False
        self._tasks = [
            loop.create_task(self.listener.run(), name="modelsched-cluster-listener"),
            loop.create_task(self._beats(), name="modelsched-cluster-heartbeat"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.listener.connected.wait(), 5.0)
        self.backend.start(loop)
        log.info("joined cluster %r as %s (%d live host(s))", self.name, self.host, len(self.hosts.live()))

    async def stop(self) -> None:
        """Stop claiming; hand back what this host holds and has not ended; leave."""
        self.backend.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self.journal.release_held()  # (what has not ended is handed back with the rest)
        with contextlib.suppress(SchedulerError):
            handed = await asyncio.wait_for(
                self.store.call(
                    "reclaim", 0, repr(time.time()), self.max_attempts, int(self.retention_s), self.host, 0
                ),
                5.0,
            )
            if handed:
                log.info("%d job(s) this host held go back to the cluster's queue", handed)
        with contextlib.suppress(Exception):
            await self.store.command("HDEL", f"{self.store.prefix}hosts", self.host)
        self.front.release_all()

    async def _beats(self) -> None:
        while True:
            await asyncio.sleep(self.hosts.interval_s)
            try:
                await self.beat()
            except SchedulerError as exc:
                log.debug("heartbeat failed: %s", exc)
            self.backend.schedule_claim()

    async def beat(self) -> None:
        """Heartbeat, refresh, reclaim, deadlines, hosts, depth: one round trip."""
        now = repr(time.time())
        info = self.backend.heartbeat(self.config)
        calls: list[asyncio.Future[Any]] = []
        refresh = self.backend.refresh_args()
        if refresh:
            calls.append(self.store.call("refresh", self.host, *refresh))
        reclaim_ms = int(self.reclaim_idle_s * 1000)
        retention = int(self.retention_s)
        calls.append(self.store.call("reclaim", reclaim_ms, now, self.max_attempts, retention, "", 1))
        calls.append(self.store.call("expire", now, retention, EXPIRE_GRACE_S))
        calls.append(self.store.call("sweep", SWEEP_IDS))
        depth = self.store.call("depth")
        calls.append(
            self.store.command("HSET", f"{self.store.prefix}hosts", self.host, msgspec.json.encode(info))
        )
        hosts = self.store.command("HGETALL", f"{self.store.prefix}hosts")
        outcomes = await asyncio.gather(hosts, depth, *calls, return_exceptions=True)  # each one retrieved
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        self.hosts.update(as_dict(hosts.result()))
        values: list[Any] = depth.result()
        self.depth = [
            QueueDepth(
                model=values[index].decode(),
                priority=LEVEL_NAMES.get(values[index + 1].decode(), values[index + 1].decode()),
                waiting=int(values[index + 2]),
                held=int(values[index + 3]),
            )
            for index in range(0, len(values), 4)
        ]

    def _on_end(self, job_id: str) -> None:
        self.front.ended(job_id)
        self.backend.ended_elsewhere(
            job_id, "ended elsewhere in the cluster (cancelled, or past its deadline)"
        )

    def _on_queued(self, model: str) -> None:
        self.backend.schedule_claim()

    def _on_reclaimed(self, job_id: str, entry: str, why: str) -> None:
        self.backend.ended_elsewhere(job_id, f"taken back by the cluster ({why})", entry)
        self.backend.schedule_claim()

    def status(self) -> ClusterStatus:
        return ClusterStatus(
            name=self.name,
            host=self.host,
            redis_up=self.store.up,
            hosts=self.hosts.status(),
            queues=self.depth,
        )
