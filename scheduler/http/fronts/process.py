"""The entry point of a front process (started with `spawn` by `ChildProcess`, with the listening
socket the main process bound): uvicorn (uvloop, httptools) serving `FrontApp` on that socket, which
every front shares, so the kernel hands each new connection to one of them.

The pipe to the main process is read on the loop (`add_reader`, a frame holds a loop turn's answers)
and written by a `FrameWriter` (the messages of one loop turn in one frame). The front says `Ready`
once it serves, then a `Heartbeat` every `heartbeat_interval_s`. It ignores SIGINT and SIGTERM (the
main process decides): on `Stop` it closes its socket and finishes its open connections within
`graceful_close_s`; when the main process is gone (the pipe ends) every waiting request gets 503 and
the front exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterator
from multiprocessing.connection import Connection

import msgspec
import uvicorn

from scheduler.http.access_log import AccessLog
from scheduler.http.fronts import protocol as wire
from scheduler.http.fronts.front_app import FrontApp
from scheduler.pool.frames import FrameWriter
from workers.child import EXIT_BOOT_FAILED, begin_child
from workers.gc_tuning import tune_gc

log = logging.getLogger("modelsched.front")


class FrontServer(uvicorn.Server):
    """uvicorn that says `Ready` once it serves and leaves the signals to the main process."""

    def __init__(self, config: uvicorn.Config, link: PipeLink) -> None:
        super().__init__(config)
        self.link = link

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.link.send(wire.Ready(os.getpid()))

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class PipeLink:
    """The front's side of its two pipes: messages out batched per loop turn, answers in."""

    def __init__(self, inbox: Connection, outbox: Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.inbox = inbox
        self.loop = loop
        self.writer = FrameWriter(outbox, loop)
        self.queued: list[wire.FromFront] = []
        self.app: FrontApp | None = None
        self.server: FrontServer | None = None

    def send(self, message: wire.FromFront) -> None:
        if not self.queued:
            self.loop.call_soon(self.flush)
        self.queued.append(message)

    def flush(self) -> None:
        queued, self.queued = self.queued, []
        if not queued:
            return
        try:
            self.writer.send(wire.encode(queued))
        except (OverflowError, TypeError, ValueError):  # one request holds what msgpack cannot carry
            self.writer.send(wire.encode([message for message in queued if self.encodable(message)]))

    def encodable(self, message: wire.FromFront) -> bool:
        """Whether the message can travel; a request that cannot is refused (422) here."""
        try:
            wire.encode(message)
            return True
        except (OverflowError, TypeError, ValueError) as exc:
            if self.app is not None:
                self.app.refuse(message, exc)
            return False

    def attach(self, app: FrontApp, server: FrontServer) -> None:
        self.app, self.server = app, server
        self.loop.add_reader(self.inbox.fileno(), self.on_readable)
        os.set_blocking(self.inbox.fileno(), True)  # a frame is read whole (see ChildProcess)

    def on_readable(self) -> None:
        assert self.app is not None and self.server is not None
        try:
            while True:
                for message in wire.to_front.decode(self.inbox.recv_bytes()):
                    if isinstance(message, wire.Stop):
                        self.server.should_exit = True
                    else:
                        self.app.deliver(message)
                if not self.inbox.poll(0):
                    return
        except (EOFError, OSError):  # the main process is gone
            self.loop.remove_reader(self.inbox.fileno())
            self.app.fail_all()
            self.server.should_exit = True


async def heartbeats(link: PipeLink, app: FrontApp, interval_s: float) -> None:
    while True:
        link.send(wire.Heartbeat(app.answered, app.tally.snapshot()))
        await asyncio.sleep(interval_s)


def front_main(config_bytes: bytes, inbox: Connection, outbox: Connection, listener: socket.socket) -> None:
    try:
        config = msgspec.msgpack.decode(config_bytes, type=wire.FrontConfig)
    except msgspec.DecodeError as exc:
        print(f"modelsched front: unreadable config: {exc}", file=sys.stderr, flush=True)
        os._exit(EXIT_BOOT_FAILED)
    begin_child(config.parent_pid, config.name, config.log_level, config.log_format)  # ignores SIGTERM
    try:
        import uvloop

        uvloop.run(serve(config, inbox, outbox, listener))
    except Exception:
        log.exception("front %s failed", config.name)
        os._exit(EXIT_BOOT_FAILED)
    os._exit(0)


async def serve(
    config: wire.FrontConfig, inbox: Connection, outbox: Connection, listener: socket.socket
) -> None:
    loop = asyncio.get_running_loop()
    link = PipeLink(inbox, outbox, loop)
    app = FrontApp(config, link.send)
    server = FrontServer(
        uvicorn.Config(
            AccessLog(app) if config.access_log else app,  # a forwarded request: the main process logs it
            loop="none",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_config=None,  # uvicorn's loggers propagate to the handler `configure_logging` set
            log_level=config.log_level.lower(),
            timeout_graceful_shutdown=config.graceful_close_s,
            server_header=False,
        ),
        link,
    )
    link.attach(app, server)
    beating = asyncio.create_task(heartbeats(link, app, config.heartbeat_interval_s))
    tune_gc()
    try:
        await server.serve(sockets=[listener])
    finally:
        beating.cancel()
        link.flush()
