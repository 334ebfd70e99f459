"""The daemon's HTTP server: uvicorn (uvloop, httptools) with the daemon's shutdown, drain first, then
close; and the daemon's logging (`workers.logs`, `log_format` text or json): uvicorn gets no logging
config of its own, so its lines (`uvicorn.error`) go through the same handler and format as ours;
uvicorn's access log stays off, the daemon's own (`access_log`) has the duration.

On the first SIGTERM or SIGINT the scheduler begins its shutdown (`begin_shutdown`): `/readyz` and
new submissions answer 503 at once, while HTTP keeps answering; requests waiting on running jobs get
their results as those jobs end (`drain`, within `shutdown_grace_s`), then the workers stop and every
request still waiting is released (a job that never started stays queued in the journal). Only then
does uvicorn close its sockets. A second signal cuts the grace short (`cut_grace_short`); a third is
uvicorn's own (it closes the connections within a 3 s grace; a fourth SIGINT ends it at once). The
exit status after a signal is 0.

The signal handler does no work: `begin_shutdown` and `cut_grace_short` only set flags; the server's
loop (`on_tick`, ten times a second) starts the drain.

With `http_workers >= 1` the main process binds the port and hands the socket to its front processes
(`scheduler.http.fronts`); uvicorn then serves no socket here but runs the same lifespan, signals,
tick (which supervises the fronts too) and drain, after which the fronts are stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from types import FrameType

import uvicorn

from scheduler.http.app import create_app
from scheduler.http.fronts.metrics import FrontCollector
from scheduler.http.fronts.serving import FrontRequests
from scheduler.http.fronts.supervision import FrontSet
from scheduler.journal import SqliteJournal
from scheduler.scheduler import Scheduler
from scheduler.settings import Settings
from workers.logs import configure_logging

log = logging.getLogger("modelsched.server")

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
HTTP_CLOSE_GRACE_S = 3  # after the drain: how long uvicorn waits for open connections


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, scheduler: Scheduler, fronts: FrontSet | None = None) -> None:
        super().__init__(config)
        self.scheduler = scheduler
        self.fronts = fronts
        self.signals_received = 0
        self.drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.signals_received += 1
        if self.signals_received == 1:
            self.scheduler.begin_shutdown()
        elif self.signals_received == 2:
            self.scheduler.cut_grace_short()
        else:
            super().handle_exit(sig, frame)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.fronts is not None and self.started:
            self.fronts.start(asyncio.get_running_loop())

    async def on_tick(self, counter: int) -> bool:
        if self.fronts is not None:
            self.fronts.supervise(time.monotonic())
        if self.signals_received and self.drain_task is None:
            self.drain_task = asyncio.create_task(self.drain(), name="modelsched-drain")
        if self.drain_task is not None and self.drain_task.done():
            self.should_exit = True
        return await super().on_tick(counter)

    async def drain(self) -> None:
        try:
            await self.scheduler.drain()
        except Exception:  # the sockets must close and the process end even so
            log.exception("the scheduler did not stop cleanly")
        if self.fronts is not None:
            await self.fronts.stop()

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


def serve(settings: Settings) -> int:
    """Run the daemon until a signal ends it; the exit status. A damaged journal raises
    JournalDamagedError before anything starts (the command line prints its one line)."""
    configure_logging(settings.log_level, settings.log_format)
    scheduler = Scheduler(settings)
    if isinstance(scheduler.journal, SqliteJournal):
        scheduler.journal.check_file()  # a damaged journal: JournalDamagedError, before a socket is bound
    scheduler.inventory.discover(
        scheduler.environ
    )  # a `gpus` entry that names no card: ConfigError, as early
    app = create_app(scheduler)
    fronts: FrontSet | None = None
    listener: socket.socket | None = None
    if settings.cluster_url and settings.http_workers not in (0, "auto"):
        log.warning(
            "http_workers = %s ignored: a cluster daemon serves HTTP in its main process",
            settings.http_workers,
        )
    if settings.front_count:
        listener = bind_listener(settings.host, settings.port)
        requests = FrontRequests(scheduler, app, (settings.host, settings.port))
        fronts = FrontSet(settings, settings.front_count, listener, requests)
        app.metrics.registry.register(FrontCollector(fronts))
        app.metrics.request_sources.append(fronts.request_tallies)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,  # the daemon's own (`access_log`): with the duration, in our format
        log_config=None,  # uvicorn's loggers propagate to the root handler `configure_logging` set
        log_level=settings.log_level.lower(),
        lifespan="on",
        timeout_graceful_shutdown=HTTP_CLOSE_GRACE_S,
        server_header=False,  # the drain has had the grace
    )
    server = DrainingServer(config, scheduler, fronts)
    log.info(
        "modelsched %s preset: http://%s:%d (models: %s; %s)",
        settings.preset,
        settings.host,
        settings.port,
        ", ".join(model.name for model in settings.models),
        f"{settings.front_count} HTTP fronts" if fronts else "HTTP in the main process",
    )
    try:
        server.run(sockets=[] if fronts is not None else None)
    finally:
        if listener is not None:
            listener.close()
    return 0 if server.started else 1


def bind_listener(host: str, port: int) -> socket.socket:
    """The daemon's listening socket, for its fronts to share (the main process never accepts on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)
