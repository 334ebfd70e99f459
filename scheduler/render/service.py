"""`RenderService`: the main process's side of the render process. It starts it, supervises it, hands
it render jobs and counts what comes back.

The render process is started like a worker (`spawn`, two pipes, PDEATHSIG) and watched the same
way: its pipe with `add_reader`, its exit through its process sentinel, its heartbeat by a watchdog
that kills it when it goes silent (or never says ready). Writes to it never block the event loop
(what the pipe cannot take waits in a buffer). When it dies it is started again, with back-off when
it keeps dying young, and the renders it held are sent to the new one; a render that was in flight
on `max_attempts` dead render processes fails as a poison job.

Two ways in: `submit(job_id, inputs)` for the scheduler's render jobs (outcomes go to `on_outcome`,
the job table is the scheduler's), and `await render(request)` for a direct render that returns the
page or raises. Both count against `render_queue_max` renders in flight (past it: QueueFullError).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from scheduler.errors import InvalidInputError, QueueFullError, SchedulerError
from scheduler.pool.frames import FrameWriter
from scheduler.pool.workers import _grow_pipe, _main_module_hidden
from scheduler.settings import Settings
from workers.render.ssrf import check_url
from workers.render import protocol as rp

log = logging.getLogger("modelsched.render")

_SPAWN = multiprocessing.get_context("spawn")
OnOutcome = Callable[[str, dict[str, Any] | None, str | None, str | None], None]
RESPAWN_BACKOFF_S = (0.0, 0.5, 1.0, 2.0, 5.0)
WATCHDOG_S = 0.5
YOUNG_DEATH_S = 5.0


class RenderFailedError(SchedulerError):
    """A render ended without a page. `kind`: timeout, failed, too_large, no_browser, poison."""

    def __init__(self, message: str, kind: str | None) -> None:
        super().__init__(message)
        self.kind = kind


def outcome_error(message: str, kind: str | None) -> SchedulerError:
    """The exception a failed render raises: a refused URL is the caller's input (REST: 422)."""
    if kind == "refused":
        return InvalidInputError(message, field="url")
    return RenderFailedError(message, kind)


def respawn_delay(young_deaths: int) -> float:
    """At once after a death in service; longer while the process keeps dying young."""
    return RESPAWN_BACKOFF_S[min(max(young_deaths, 0), len(RESPAWN_BACKOFF_S) - 1)]


@dataclass
class InFlight:
    request: rp.RenderRequest
    deaths: int = 0  # render processes that died while holding it


class RenderService:
    def __init__(self, settings: Settings, on_outcome: OnOutcome | None = None, max_attempts: int = 3) -> None:
        self.settings = settings
        self.on_outcome = on_outcome
        self.max_attempts = max_attempts
        self.loop: asyncio.AbstractEventLoop | None = None
        self.process: Any = None
        self.writer: FrameWriter | None = None
        self.reader: Any = None
        self.state = "stopped"  # starting | ready | dead | stopped
        self.running = False
        self.browser_available: bool | None = None
        self.browser_error: str | None = None
        self.in_flight: dict[str, InFlight] = {}
        self.direct: dict[str, asyncio.Future[dict[str, Any]]] = {}  # direct renders waiting for an outcome
        self.last_heartbeat: rp.RenderHeartbeat | None = None
        self.last_heartbeat_at = 0.0
        self.started_at = 0.0
        self.restarts = 0
        self.young_deaths = 0
        self.pages_before_restart = 0
        self.peak_pages_active = 0
        self.renders_done = 0
        self.renders_ok = 0
        self.renders_failed = 0
        self.http_fallbacks = 0
        self._watchdog: asyncio.TimerHandle | None = None
        self._respawn: asyncio.TimerHandle | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def load(self) -> int:
        """Renders handed over and not answered yet (waiting for a page or rendering)."""
        return len(self.in_flight)

    # ---- life ----------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.running = True
        self._spawn()
        self._watchdog = loop.call_later(WATCHDOG_S, self._watch)

    def _config(self) -> rp.RenderConfig:
        settings = self.settings
        return rp.RenderConfig(
            parent_pid=os.getpid(), browser_path=settings.render_browser_path, max_pages=settings.render_max_pages,
            timeout_s=settings.render_timeout_s, retries=settings.render_retries,
            recycle_pages=settings.render_recycle_pages, allow_hosts=list(settings.render_allow_hosts),
            max_response_bytes=settings.render_max_response_bytes, log_level=settings.log_level.upper(),
            heartbeat_interval_s=settings.heartbeat_interval_s,
        )

    def _spawn(self) -> None:
        assert self.loop is not None
        from workers.render.main import render_main  # here: workers.render.main imports scheduler modules

        inbox, writer = _SPAWN.Pipe(duplex=False)
        self.reader, outbox = _SPAWN.Pipe(duplex=False)
        self.process = _SPAWN.Process(target=render_main, args=(msgspec.msgpack.encode(self._config()), inbox, outbox),
                                      name="modelsched-render", daemon=True)
        with _main_module_hidden():
            self.process.start()
        inbox.close()
        outbox.close()
        for connection in (writer, self.reader):
            _grow_pipe(connection.fileno())
        self.writer = FrameWriter(writer, self.loop)
        self.state = "starting"
        self.started_at = time.monotonic()
        self.last_heartbeat = None
        self.loop.add_reader(self.reader.fileno(), self._on_readable)
        self.loop.add_reader(self.process.sentinel, self._on_exit)

    async def stop(self) -> None:
        """Ask the render process to end (it closes its browser), kill it if it has not within 5 s."""
        self.running = False
        for timer in (self._watchdog, self._respawn):
            if timer is not None:
                timer.cancel()
        if self.process is None:
            return
        self._send(rp.RenderShutdown())
        deadline = time.monotonic() + 5.0
        while self.process.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.process.is_alive():
            log.warning("the render process did not stop in time; killing pid %s", self.process.pid)
            self.kill()
        self.process.join(timeout=5)
        self._detach()
        self.state = "stopped"
        for job_id in list(self.direct):
            self.in_flight.pop(job_id, None)
            self._answer(job_id, None, "the render service stopped", "failed")

    def kill(self) -> None:
        if self.process is not None and self.process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)

    def _detach(self) -> None:
        if self.loop is not None:
            for fd in (self.reader.fileno() if self.reader is not None else None,
                       self.process.sentinel if self.process is not None else None):
                if fd is not None:
                    with contextlib.suppress(OSError, ValueError):
                        self.loop.remove_reader(fd)
        if self.writer is not None:
            self.writer.close()
        if self.reader is not None:
            with contextlib.suppress(OSError):
                self.reader.close()
        self.reader = self.writer = None

    def _watch(self) -> None:
        """The watchdog: kill a render process that never got ready or went silent (its exit then
        restarts it like any death)."""
        if not self.running or self.loop is None:
            return
        now = time.monotonic()
        if self.state == "starting" and now - self.started_at > self.settings.worker_start_timeout_s:
            log.error("the render process did not report ready within %ss; killing it",
                      self.settings.worker_start_timeout_s)
            self.kill()
        elif self.state == "ready" and now - self.last_heartbeat_at > self.settings.heartbeat_timeout_s:
            log.error("the render process sent no heartbeat for %.1fs; killing pid %s as hung",
                      now - self.last_heartbeat_at, self.process.pid if self.process else None)
            self.kill()
        self._watchdog = self.loop.call_later(WATCHDOG_S, self._watch)

    # ---- jobs ----------------------------------------------------------------------------------

    def submit(self, job_id: str, inputs: dict[str, Any] | str) -> None:
        """Hand a render job (inputs already validated by `scheduler.render.model`) to the render process."""
        if isinstance(inputs, str):
            inputs = {"url": inputs}
        request = rp.RenderRequest(
            job_id=job_id, url=inputs["url"], wait_until=inputs.get("wait_until") or "load",
            screenshot=bool(inputs.get("screenshot", False)), html=bool(inputs.get("html", False)),
            engine=inputs.get("engine") or "browser", fallback=inputs.get("fallback", "http"),
            timeout_s=inputs.get("timeout_s"),
        )
        self.in_flight[job_id] = InFlight(request)
        if self.ready:
            self._send(request)  # otherwise sent when the (new) render process says ready

    def check_room(self) -> None:
        if self.load >= self.settings.render_queue_max:
            raise QueueFullError(f"the render queue is full ({self.settings.render_queue_max} renders waiting "
                                 "or running); retry later")

    async def render(self, request: dict[str, Any] | str) -> dict[str, Any]:
        """Render one page outside the job table: validated (`scheduler.render.model.render_inputs`), the URL
        checked with DNS, then rendered; returns the result, or raises InvalidInputError (a bad
        request or a refused URL, redirects and the page's requests included), QueueFullError or
        RenderFailedError."""
        from scheduler.render.model import render_inputs  # here: adapters import scheduler modules

        if not self.running or self.loop is None:
            raise RenderFailedError("the render service is not running", "failed")
        allow_hosts = tuple(self.settings.render_allow_hosts)
        try:
            inputs = render_inputs(request, allow_hosts)
        except ValueError as exc:
            raise InvalidInputError(str(exc), field="inputs") from None
        self.check_room()
        verdict = await asyncio.to_thread(check_url, inputs["url"], allow_hosts)
        if not verdict.allowed:
            raise InvalidInputError(f"the URL is refused: {verdict.reason}", field="url")
        self.check_room()  # again: others may have come in while DNS answered
        job_id = f"direct-{secrets.token_hex(8)}"
        future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self.direct[job_id] = future
        self.submit(job_id, inputs)
        try:
            return await future
        finally:
            self.direct.pop(job_id, None)
            if job_id in self.in_flight:  # the caller gave up (cancelled): stop the render too
                self.cancel(job_id)

    def cancel(self, job_id: str) -> None:
        """The job ended elsewhere (cancelled, timed out): the render process stops it, its page is freed."""
        if self.in_flight.pop(job_id, None) is not None and self.ready:
            self._send(rp.RenderCancel(job_id))

    def _send(self, message: rp.ToRender) -> None:
        if self.writer is not None:  # none while it is dead: what it held is sent to the next one
            self.writer.send(rp.encode(message))

    # ---- messages ------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            data = self.reader.recv_bytes()
        except (EOFError, OSError):
            self._on_exit()
            return
        self._handle(rp.decode_from_render(data))

    def _handle(self, message: rp.FromRender) -> None:
        if isinstance(message, rp.RenderOutcome):
            self._deliver(message)
        elif isinstance(message, rp.RenderHeartbeat):
            self.last_heartbeat = message
            self.last_heartbeat_at = time.monotonic()
            self.peak_pages_active = max(self.peak_pages_active, message.max_pages_active)
        elif isinstance(message, rp.RenderReady):
            self.state = "ready"
            self.last_heartbeat_at = time.monotonic()
            self.browser_available = message.browser_available
            self.browser_error = message.browser_error
            log.info("render process ready (pid %s, browser %s)", message.pid,
                     "available" if message.browser_available else f"unavailable: {message.browser_error}")
            for entry in self.in_flight.values():
                self._send(entry.request)

    def _deliver(self, outcome: rp.RenderOutcome) -> None:
        if self.in_flight.pop(outcome.job_id, None) is None:
            return  # cancelled meanwhile
        self._count(outcome.error is None, outcome.result)
        self._answer(outcome.job_id, outcome.result, outcome.error, outcome.error_kind)

    def _count(self, ok: bool, result: dict[str, Any] | None = None) -> None:
        self.renders_done += 1
        if ok:
            self.renders_ok += 1
            if result is not None and "fallback_reason" in result:
                self.http_fallbacks += 1
        else:
            self.renders_failed += 1

    def _answer(self, job_id: str, result: dict[str, Any] | None, error: str | None, kind: str | None) -> None:
        future = self.direct.get(job_id)
        if future is not None:
            if not future.done():
                if error is None:
                    future.set_result(result or {})
                else:
                    future.set_exception(outcome_error(error, kind))
        elif self.on_outcome is not None:
            self.on_outcome(job_id, result, error, kind)

    def _on_exit(self) -> None:
        if self.reader is None:
            return
        with contextlib.suppress(EOFError, OSError):  # what it sent before it died still counts
            while self.reader.poll(0):
                self._handle(rp.decode_from_render(self.reader.recv_bytes()))
        self._detach()
        if self.process is not None:
            self.process.join(timeout=1)
        if not self.running:
            return
        self.state = "dead"
        lived_s = time.monotonic() - self.started_at
        log.warning("render process (pid %s) exited with code %s after %.1fs; %d render(s) in flight",
                    self.process.pid, self.process.exitcode, lived_s, len(self.in_flight))
        if self.last_heartbeat is not None:
            self.pages_before_restart += self.last_heartbeat.pages_rendered
            self.last_heartbeat = None
        for job_id, entry in list(self.in_flight.items()):
            entry.deaths += 1
            if entry.deaths >= self.max_attempts:
                del self.in_flight[job_id]
                self._count(False)
                self._answer(job_id, None, f"the render process died {entry.deaths} times while rendering it",
                             "poison")
        self.restarts += 1
        self.young_deaths = self.young_deaths + 1 if lived_s < YOUNG_DEATH_S else 0
        assert self.loop is not None
        self._respawn = self.loop.call_later(respawn_delay(self.young_deaths), self._respawn_now)

    def _respawn_now(self) -> None:
        if self.running:
            self._spawn()

    # ---- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The render process as `/system/status` shows it."""
        heartbeat = self.last_heartbeat
        alive = bool(self.process is not None and self.process.exitcode is None and self.state != "stopped")
        return {
            "state": self.state,
            "pid": self.process.pid if alive else None,
            "alive": alive,
            "browser_available": self.browser_available,
            "browser_error": self.browser_error,
            "browser_path": self.settings.render_browser_path,
            "browser_pid": heartbeat.browser_pid if heartbeat else None,
            "browser_launches": heartbeat.browser_launches if heartbeat else 0,
            "pages_active": heartbeat.pages_active if heartbeat else 0,
            "pages_waiting": heartbeat.waiting if heartbeat else 0,
            "max_pages": self.settings.render_max_pages,
            "peak_pages_active": max(self.peak_pages_active, heartbeat.max_pages_active if heartbeat else 0),
            "pages_rendered": self.pages_before_restart + (heartbeat.pages_rendered if heartbeat else 0),
            "in_flight": len(self.in_flight),
            "queue_max": self.settings.render_queue_max,
            "renders_done": self.renders_done,
            "renders_ok": self.renders_ok,
            "renders_failed": self.renders_failed,
            "fallbacks": self.http_fallbacks,
            "success_rate": round(self.renders_ok / self.renders_done, 4) if self.renders_done else None,
            "restarts": self.restarts,
            "heartbeat_age_s": round(time.monotonic() - self.last_heartbeat_at, 3) if heartbeat else None,
        }
