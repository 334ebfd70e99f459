"""`FrontSet`: the main process's front processes, started, watched and stopped with the one
`ChildProcess` and the one supervision policy (`pool/supervisor.next_action`) the workers use.

A front that dies (or stops sending heartbeats, and is killed) is respawned on the next tick, after
the policy's back-off if it keeps failing to boot. Its requests in flight are released
(`FrontLink.release`): their clients' connections died with it, so they get an error, never a hang;
the jobs they submitted go on (they are in the journal and the job table). At shutdown, after the
scheduler's drain, `stop()` asks every front to close its socket and finish its connections.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from functools import partial

from scheduler.errors import WorkerState
from scheduler.http.fronts import protocol as wire
from scheduler.http.fronts.link import FrontLink
from scheduler.http.fronts.process import front_main
from scheduler.http.fronts.serving import FrontRequests
from scheduler.http.request_tally import RequestTally, TallySnapshot
from scheduler.pool.child import ChildProcess
from scheduler.pool.supervisor import ChildWatch, Kill, Respawn, Timeouts, next_action
from scheduler.settings import Settings

log = logging.getLogger("modelsched.fronts")

STOP_GRACE_S = 5.0  # after `Stop`: how long fronts may take to exit before they are killed


class FrontSet:
    """`count` fronts over `listener` (bound and listening; the main process never accepts on it)."""

    def __init__(
        self, settings: Settings, count: int, listener: socket.socket, requests: FrontRequests
    ) -> None:
        self.settings = settings
        self.count = count
        self.listener = listener
        self.requests = requests
        self.timeouts = Timeouts(settings.worker_start_timeout_s, settings.heartbeat_timeout_s)
        self.links: list[FrontLink] = []
        self.stopping = False
        self.restarts = 0
        self.retired_requests = 0  # answered by fronts that have since ended
        self.retired_tally = RequestTally()  # what they answered themselves, by route and code

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.links = [self.spawn(ChildWatch(f"front{index}"), loop) for index in range(self.count)]

    def spawn(self, watch: ChildWatch, loop: asyncio.AbstractEventLoop) -> FrontLink:
        link = FrontLink(watch, loop, self.requests.scheduler.endings)
        config = wire.FrontConfig(
            name=watch.name,
            parent_pid=os.getpid(),
            token=self.settings.token,
            max_body_bytes=self.settings.max_body_bytes,
            log_level=self.settings.log_level,
            log_format=self.settings.log_format,
            access_log=self.settings.access_log,
            heartbeat_interval_s=self.settings.heartbeat_interval_s,
            graceful_close_s=int(STOP_GRACE_S) - 1,
            checks=self.input_checks(link),
        )
        link.child = ChildProcess(
            watch.name,
            front_main,
            wire.encode(config),
            loop,
            partial(self.on_frame, link),
            partial(self.on_exit, link),
            inherited=(self.listener,),
        )
        try:
            link.child.start()
        except Exception as exc:  # no memory, no file descriptors: the back-off applies
            log.error("could not start %s: %s", watch.name, exc)
            link.alive = False
            watch.exited(time.monotonic(), None, held_work=False)
        return link

    def input_checks(self, link: FrontLink) -> list[wire.InputCheck]:
        """The models whose inputs this front validates (`BaseAdapter.validate_in_fronts`), as they are
        registered now; `link.checked` keeps their adapters, so that a model registered again since
        (another adapter object) is validated here again."""
        checks: list[wire.InputCheck] = []
        for name, registered in self.requests.scheduler.registry.models.items():
            adapter = registered.adapter
            if not type(adapter).validate_in_fronts:
                continue
            check = wire.InputCheck(
                name, f"{type(adapter).__module__}:{type(adapter).__qualname__}", adapter.options
            )
            try:
                wire.encode(check)
            except (TypeError, ValueError, OverflowError):  # options msgpack cannot carry: validated here
                continue
            checks.append(check)
            link.checked[name] = adapter
        return checks

    def on_frame(self, link: FrontLink, data: bytes) -> None:
        self.requests.handle_all(link, wire.from_front.decode(data))

    def on_exit(self, link: FrontLink) -> None:
        assert link.child is not None
        link.child.join(0.5)  # its sentinel fired: it has ended; reap it to read how
        exit_code = link.child.exit_code
        held = link.in_flight
        link.release()
        link.watch.exited(time.monotonic(), exit_code, held_work=held > 0)
        self.retired_requests += link.requests
        if link.tally is not None:
            self.retired_tally.add(link.tally)
        link.child.close()
        if not self.stopping:
            log.warning(
                "%s (pid %s) exited with %s holding %d requests; their clients' connections are gone",
                link.name,
                link.child.pid,
                exit_code,
                held,
            )

    def supervise(self, now: float) -> None:
        """The tick: kill the silent, respawn the dead (never while stopping)."""
        if self.stopping:
            return
        for index, link in enumerate(self.links):
            action = next_action(link.watch, now, self.timeouts)
            if isinstance(action, Kill) and link.child is not None:
                log.warning("%s %s", link.name, action.reason)
                link.child.kill()
            elif isinstance(action, Respawn):
                self.restarts += 1
                self.links[index] = self.spawn(link.watch.successor(now), link.loop)

    def up(self) -> int:
        return sum(1 for link in self.links if link.alive and link.watch.state is WorkerState.READY)

    def requests_answered(self) -> int:
        return self.retired_requests + sum(link.requests for link in self.links if link.alive)

    def request_tallies(self) -> list[TallySnapshot]:
        """The requests the fronts answered themselves (as of their last heartbeats), ended ones too."""
        live = [link.tally for link in self.links if link.alive and link.tally is not None]
        return [self.retired_tally.snapshot(), *live]

    async def stop(self) -> None:
        """Every front closes its socket and finishes its connections; one that takes too long is killed."""
        self.stopping = True
        for link in self.links:
            link.reply(wire.Stop())
        deadline = time.monotonic() + STOP_GRACE_S
        while any(link.alive for link in self.links) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for link in self.links:
            if link.alive and link.child is not None:
                log.warning("%s did not stop within %g s; killing it", link.name, STOP_GRACE_S)
                link.child.kill()
                link.child.join(2.0)
                link.child.close()
                link.release()
