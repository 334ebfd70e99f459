"""`FrontLink`: the main process's side of one front process: its `ChildProcess` and `ChildWatch`,
the answers it is owed (sent once per loop turn, all in one pipe frame), and the requests it has in
flight, so that its death releases them: a wait for a job's end is cancelled (the job goes on: it is
in the journal), a forwarded request sees its client go away."""

from __future__ import annotations

import asyncio
import logging
import time

from scheduler.core.endings import JobEndings
from scheduler.http.answers import Answer, error_answer
from scheduler.http.fronts import protocol as wire
from scheduler.http.fronts.waits import Waits
from scheduler.http.request_tally import TallySnapshot
from scheduler.pool.child import ChildProcess
from scheduler.pool.supervisor import ChildWatch

log = logging.getLogger("modelsched.fronts")


class FrontLink:
    """One incarnation of a front: `child` is set by whoever spawns it; `requests` is the count the
    front last reported (its heartbeats)."""

    def __init__(self, watch: ChildWatch, loop: asyncio.AbstractEventLoop, endings: JobEndings) -> None:
        self.watch = watch
        self.loop = loop
        self.child: ChildProcess | None = None
        self.alive = True
        self.requests = 0
        self.tally: TallySnapshot | None = None  # its requests, as of its last heartbeat
        self.outbox: list[wire.ToFront] = []
        self.waits: Waits[FrontLink] = Waits(self, loop, endings, self._wait_failed)  # for jobs' ends
        self.forwarded: dict[int, asyncio.Future[None]] = {}  # done when the client went away
        self.checked: dict[str, object] = {}  # models whose inputs it validates: their adapter objects

    @property
    def name(self) -> str:
        return self.watch.name

    @property
    def in_flight(self) -> int:
        return len(self.waits) + len(self.forwarded)

    def reply(self, message: wire.ToFront) -> None:
        """Queue an answer; the queue goes to the front in one frame at the end of this loop turn."""
        if not self.alive:
            return
        if not self.outbox:
            self.loop.call_soon(self.flush)
        self.outbox.append(message)

    def answer(self, request_id: int, answer: Answer) -> None:
        """A whole response, already encoded (an error, say), as its start and its one chunk."""
        self.reply(wire.Start(request_id, answer.status_code, answer.raw_headers))
        self.reply(wire.Chunk(request_id, bytes(answer.body), False))

    def _wait_failed(self, request_id: int, exc: Exception) -> None:
        self.answer(request_id, error_answer(exc))

    def flush(self) -> None:
        outbox, self.outbox = self.outbox, []
        if not outbox or self.child is None or not self.alive:
            return
        try:
            self.child.send(wire.encode(outbox))
        except (OverflowError, TypeError, ValueError):  # an answer msgpack cannot carry: it alone fails
            for message in outbox:
                try:
                    self.child.send(wire.encode([message]))
                except (OverflowError, TypeError, ValueError) as exc:
                    log.error("%s: an answer could not be sent: %r", self.name, exc)
                    if isinstance(message, wire.Content):
                        failed = error_answer(exc)
                        self.child.send(
                            wire.encode(
                                [
                                    wire.Start(message.request_id, failed.status_code, failed.raw_headers),
                                    wire.Chunk(message.request_id, bytes(failed.body), False),
                                ]
                            )
                        )

    def on_message(self, message: wire.FromFront) -> None:
        """What the link itself handles (the rest is the request handler's)."""
        now = time.monotonic()
        if isinstance(message, wire.Heartbeat):
            self.watch.heartbeat(now)
            self.requests = message.requests
            self.tally = message.tally
        elif isinstance(message, wire.Ready):
            self.watch.ready(now)
            log.info("%s serving (pid %d, start %d)", self.name, message.pid, self.watch.restarts)
        elif isinstance(message, wire.Disconnect):
            gone = self.forwarded.get(message.request_id)
            if gone is not None and not gone.done():
                gone.set_result(None)

    def release(self) -> None:
        """The front is gone: nothing more is sent to it; its waits end, its forwarded requests see
        their clients go."""
        self.alive = False
        self.outbox = []
        self.waits.release()
        for gone in self.forwarded.values():
            if not gone.done():
                gone.set_result(None)
