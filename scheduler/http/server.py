"""uvicorn's server with the daemon's shutdown: drain first, then close.

On the first SIGTERM or SIGINT the scheduler stops accepting jobs at once, so `/readyz` and new
submissions answer 503, while HTTP keeps answering: requests waiting on running jobs get their
results as those jobs end (within `shutdown_grace_s`), then the scheduler stops its workers and
releases every request still waiting (a job that never started stays queued in the journal). Only
then does uvicorn close its sockets and connections. A second signal cuts the grace period short;
a third one is uvicorn's own (SIGINT: exit at once). The exit status after a signal is 0.

The signal handler only records the signal; the server's loop (`on_tick`, ten times a second) acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

import uvicorn

from scheduler.scheduler import Scheduler
from scheduler.core.jobs import JobStatus

log = logging.getLogger("modelsched.server")

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DRAIN_POLL_S = 0.02


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, scheduler: Scheduler) -> None:
        super().__init__(config)
        self.scheduler = scheduler
        self.signals_received = 0
        self.drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.signals_received += 1
        if self.signals_received == 1:
            self.scheduler.accepting = False  # readiness and submissions answer 503 from now on
        elif self.signals_received > 2:
            super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.signals_received and self.drain_task is None:
            self.drain_task = asyncio.create_task(self.drain(), name="modelsched-drain")
        if self.drain_task is not None and self.drain_task.done():
            self.should_exit = True
        return await super().on_tick(counter)

    async def drain(self) -> None:
        scheduler = self.scheduler
        grace_s = scheduler.settings.shutdown_grace_s
        running = scheduler.table.count_by_status[JobStatus.PROCESSING]
        log.info("shutting down: not accepting jobs; %d running job(s) get up to %g s", running, grace_s)
        deadline = time.monotonic() + grace_s
        while (scheduler.table.count_by_status[JobStatus.PROCESSING] and time.monotonic() < deadline
               and self.signals_received < 2):
            await asyncio.sleep(DRAIN_POLL_S)
        try:
            await scheduler.stop(grace_s=0)
        except Exception:  # the sockets must close and the process end even so
            log.exception("the scheduler did not stop cleanly")

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's, less the re-raise of the signal at the end: after a clean shutdown on SIGTERM or
        SIGINT the daemon exits with status 0."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
