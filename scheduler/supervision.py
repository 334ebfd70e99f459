"""The main process's one supervision tick, ten times a second: it converges toward the wanted state.
Kill the silent and respawn the dead (model workers and the render process alike, by the one policy
in `scheduler.pool.supervisor`), grow or shrink the elastic CPU pool and unload idle models
(`scheduler.core.cpu_pool`), keep preloaded models loaded (`scheduler.core.readiness`), end jobs past their deadline, forget what is past its retention, and
sample the dashboard's history (`scheduler.core.history`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from scheduler.core.cpu_pool import CpuPool
from scheduler.core.deadlines import Deadlines
from scheduler.core.history import History
from scheduler.core.ports import JobJournal
from scheduler.core.readiness import Preloader
from scheduler.core.table import JobTable
from scheduler.core.workers import WorkerSet
from scheduler.render.service import RenderService

log = logging.getLogger("modelsched.scheduler")

TICK_S = 0.1
RETENTION_EVERY_S = 60.0


class Supervision:
    """worker_set, cpu_pool, preloader, render (None when off), deadlines: what the tick drives; table, journal:
    what retention prunes; retention_s: from the settings; history: sampled by the tick (None: not kept)."""

    def __init__(
        self,
        worker_set: WorkerSet,
        cpu_pool: CpuPool,
        preloader: Preloader,
        render: RenderService | None,
        deadlines: Deadlines,
        table: JobTable,
        journal: JobJournal | None,
        retention_s: float,
        history: History | None = None,
    ) -> None:
        self.worker_set = worker_set
        self.cpu_pool = cpu_pool
        self.preloader = preloader
        self.render = render
        self.deadlines = deadlines
        self.table = table
        self.journal = journal
        self.retention_s = retention_s
        self.history = history
        self._last_retention = 0.0

    async def run(self, running: Callable[[], bool]) -> None:
        """Tick while `running()`; a failing tick is logged and the next one comes all the same."""
        while running():
            try:
                self.tick(time.monotonic())
            except Exception:
                log.exception("supervision tick failed")
            await asyncio.sleep(TICK_S)

    def tick(self, now: float) -> None:
        self.worker_set.supervise(now)
        self.cpu_pool.tick(now)
        self.preloader.tick(now)
        if self.render is not None:
            self.render.supervise(now)
        self.deadlines.expire(now)
        if self.history is not None:
            self.history.tick(now)
        if now - self._last_retention > RETENTION_EVERY_S:
            self._last_retention = now
            self.table.forget_older_than(time.time() - self.retention_s)
            if self.journal is not None:
                self.journal.prune()
