"""`RenderService`: the main process's side of the render process. It starts it (a `ChildProcess`,
like a model worker), supervises it with the same policy (`scheduler.pool.supervisor`, applied on
the scheduler's tick by `supervise`), hands it renders and counts what comes back.

When the render process dies it is started again, with a back-off while it keeps failing to boot,
and the renders it held are sent to the new one; a render that was in flight on `max_attempts` dead
render processes fails as a poison job.

Two ways in: `submit(job_id, request)` for the scheduler's render jobs (outcomes go to `on_outcome`;
the job table is the scheduler's, see `scheduler.render.executor`), and `await render(inputs)` for a
direct render that returns the page or raises. Both count against `render_queue_max`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from scheduler.errors import (
    ErrorKind,
    InvalidInputError,
    QueueFullError,
    RenderFailedError,
    SchedulerError,
    WorkerState,
)
from scheduler.pool.child import ChildProcess
from scheduler.pool.supervisor import ChildWatch, Kill, Respawn, Timeouts, is_poison, next_action
from scheduler.render.guard import refuse_unless_allowed
from scheduler.settings import Settings
from workers.child import EXIT_BOOT_FAILED
from workers.render import protocol as rp
from workers.render.main import render_main
from workers.render.request import RenderRequest, UrlRefused, parse_render_request

log = logging.getLogger("modelsched.render")

OnOutcome = Callable[[str, dict[str, Any] | None, str | None, ErrorKind | None], None]
STOP_WAIT_S = 5.0


def outcome_error(message: str, kind: str | None) -> SchedulerError:
    """The exception a failed render raises: a refused URL is the caller's input (REST: 422)."""
    if kind == ErrorKind.REFUSED:
        return InvalidInputError(message, field="url")
    return RenderFailedError(message, kind)


@dataclass
class InFlight:
    job: rp.RenderJob
    deaths: int = 0  # render processes that died while holding it


class RenderService:
    """settings: the render settings; on_outcome(job_id, result, error, kind): told of each ended
    render job (direct renders answer their caller instead)."""

    def __init__(self, settings: Settings, on_outcome: OnOutcome | None = None) -> None:
        self.settings = settings
        self.on_outcome = on_outcome
        self.timeouts = Timeouts(settings.worker_start_timeout_s, settings.heartbeat_timeout_s)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.child: ChildProcess | None = None
        self.watch = ChildWatch("render", state=WorkerState.STOPPED)
        self.running = False
        self.respawning = True  # False once the shutdown has begun: no render is sent to a new process
        self.browser_available: bool | None = None
        self.browser_error: str | None = None
        self.in_flight: dict[str, InFlight] = {}
        self.direct: dict[str, asyncio.Future[dict[str, Any]]] = {}  # direct renders waiting for an outcome
        self.last_heartbeat: rp.RenderHeartbeat | None = None
        self.pages_before_restart = 0
        self.peak_pages_active = 0
        self.renders_done = 0
        self.renders_ok = 0
        self.renders_failed = 0
        self.http_fallbacks = 0

    @property
    def ready(self) -> bool:
        return self.watch.state is WorkerState.READY

    @property
    def load(self) -> int:
        """Renders handed over and not answered yet (waiting for a page or rendering)."""
        return len(self.in_flight)

    # ---- life ----------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.running = True
        self._spawn(ChildWatch("render"))

    def _config(self) -> rp.RenderConfig:
        settings = self.settings
        return rp.RenderConfig(
            parent_pid=os.getpid(),
            browser_path=settings.render_browser_path,
            max_pages=settings.render_max_pages,
            timeout_s=settings.render_timeout_s,
            retries=settings.render_retries,
            recycle_pages=settings.render_recycle_pages,
            allow_hosts=list(settings.render_allow_hosts),
            max_response_bytes=settings.render_max_response_bytes,
            log_level=settings.log_level.upper(),
            log_format=settings.log_format,
            heartbeat_interval_s=settings.heartbeat_interval_s,
        )

    def _spawn(self, watch: ChildWatch) -> None:
        """A new render process. When it cannot even be started (no memory, no file descriptors) it
        is dead with a boot failure counted, and `supervise` tries again after the back-off."""
        assert self.loop is not None
        self.watch = watch
        self.last_heartbeat = None
        child = ChildProcess(
            "render",
            render_main,
            msgspec.msgpack.encode(self._config()),
            self.loop,
            self._on_message,
            self._on_exit,
        )
        try:
            child.start()
        except Exception:
            log.exception("the render process could not be started; it is tried again after a back-off")
            watch.exited(time.monotonic(), EXIT_BOOT_FAILED)
            self.child = None
            return
        self.child = child

    def supervise(self, now: float) -> None:
        """The supervision policy applied to the render process (called on the scheduler's tick); a
        dead one is not respawned once the shutdown has begun (`respawning`)."""
        if not self.running:
            return
        action = next_action(self.watch, now, self.timeouts)
        if isinstance(action, Kill):
            log.error("the render process (pid %s) %s", self.child.pid if self.child else None, action.reason)
            self.kill()
        elif isinstance(action, Respawn) and self.respawning:
            self._spawn(self.watch.successor(now))

    async def stop(self) -> None:
        """Ask the render process to end (it closes its browser); kill it if it has not within 5 s."""
        self.running = False
        child = self.child
        if child is not None:
            if self.watch.state is not WorkerState.DEAD:
                self.watch.state = WorkerState.STOPPING
            self._send(rp.RenderShutdown())
            deadline = time.monotonic() + STOP_WAIT_S
            while child.alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if child.alive():
                log.warning("the render process did not stop in time; killing pid %s", child.pid)
                child.kill()
            child.join(timeout=5)
            child.close()
        self.watch.state = WorkerState.STOPPED
        for job_id in list(self.direct):
            self.in_flight.pop(job_id, None)
            self._answer(job_id, None, "the render service stopped", ErrorKind.FAILED)

    def kill(self) -> None:
        if self.child is not None:
            self.child.kill()

    # ---- renders -------------------------------------------------------------------------------

    def submit(self, job_id: str, request: RenderRequest) -> None:
        """Hand a validated render to the render process (sent when it says ready, if it has not)."""
        job = rp.RenderJob(job_id, request)
        self.in_flight[job_id] = InFlight(job)
        if self.ready:
            self._send(job)

    def check_room(self, waiting: int = 0) -> None:
        """QueueFullError when `render_queue_max` renders are in flight (with `waiting` more queued)."""
        if self.load + waiting >= self.settings.render_queue_max:
            raise QueueFullError(
                f"the render queue is full ({self.settings.render_queue_max} renders waiting "
                "or running); retry later"
            )

    async def render(self, inputs: RenderRequest | dict[str, Any] | str) -> dict[str, Any]:
        """Render one page outside the job table: validated, the URL checked with DNS, then rendered.
        Returns the result, or raises InvalidInputError (a bad request or a refused URL, redirects and
        the page's requests included), QueueFullError or RenderFailedError."""
        if not self.running or self.loop is None:
            raise RenderFailedError("the render service is not running", ErrorKind.FAILED)
        allow_hosts = tuple(self.settings.render_allow_hosts)
        try:
            request = parse_render_request(inputs, allow_hosts)
        except UrlRefused as exc:
            raise InvalidInputError(str(exc), field="url") from None
        except ValueError as exc:
            raise InvalidInputError(str(exc), field="inputs") from None
        self.check_room()
        await refuse_unless_allowed(request.url, allow_hosts)
        self.check_room()  # again: others may have come in while DNS answered
        job_id = f"direct-{secrets.token_hex(8)}"
        future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self.direct[job_id] = future
        self.submit(job_id, request)
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
        if self.child is not None:  # while it is dead nothing is sent: what it held goes to the next one
            self.child.send(rp.encode(message))

    # ---- from the render process ---------------------------------------------------------------

    def _on_message(self, data: bytes) -> None:
        message = rp.decode_from_render(data)
        if isinstance(message, rp.RenderOutcome):
            self._deliver(message)
        elif isinstance(message, rp.RenderHeartbeat):
            self.last_heartbeat = message
            self.watch.heartbeat(time.monotonic())
            self.peak_pages_active = max(self.peak_pages_active, message.max_pages_active)
        elif isinstance(message, rp.RenderReady):
            self.watch.ready(time.monotonic())
            self.browser_available = message.browser_available
            self.browser_error = message.browser_error
            log.info(
                "render process ready (pid %s, browser %s)",
                message.pid,
                "available" if message.browser_available else f"unavailable: {message.browser_error}",
            )
            for entry in self.in_flight.values():
                self._send(entry.job)

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

    def _answer(
        self, job_id: str, result: dict[str, Any] | None, error: str | None, kind: ErrorKind | None
    ) -> None:
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
        child = self.child
        if child is None or not self.running:
            return
        child.join(timeout=1)
        was = self.watch.exited(time.monotonic(), child.exit_code, held_work=bool(self.in_flight))
        child.close()
        lived_s = time.monotonic() - self.watch.started_at
        log.warning(
            "render process (pid %s) exited with code %s after %.1fs while %s; %d render(s) in flight",
            child.pid,
            self.watch.exit_code,
            lived_s,
            was,
            len(self.in_flight),
        )
        if self.last_heartbeat is not None:
            self.pages_before_restart += self.last_heartbeat.pages_rendered
            self.last_heartbeat = None
        for job_id, entry in list(self.in_flight.items()):
            entry.deaths += 1
            if is_poison(entry.deaths, self.settings.max_attempts):
                del self.in_flight[job_id]
                self._count(False)
                self._answer(
                    job_id,
                    None,
                    f"the render process died {entry.deaths} times while rendering it",
                    ErrorKind.POISON,
                )

    # ---- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The render process as `/system/status` shows it."""
        heartbeat = self.last_heartbeat
        child = self.child
        alive = child is not None and child.alive() and self.watch.state is not WorkerState.STOPPED
        return {
            "state": self.watch.state.value,
            "pid": child.pid if alive and child is not None else None,
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
            "restarts": self.watch.restarts,
            "heartbeat_age_s": round(time.monotonic() - self.watch.last_heartbeat, 3) if heartbeat else None,
        }
