"""The main process's side of the render process: spawn it, supervise it, hand it render jobs.

The render process is started like a worker (`spawn`, two pipes, PDEATHSIG) and watched the same
way: its pipe with `add_reader`, its exit through its process sentinel. When it dies, it is started
again and the renders it held are sent to the new one; a render that was in flight on
`max_attempts` dead render processes fails. Outcomes go to the scheduler through `on_outcome`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import msgspec

from scheduler.pool import _grow_pipe, _main_module_hidden
from scheduler.settings import Settings
from workers import render_protocol as rp

log = logging.getLogger("modelsched.render")

_SPAWN = multiprocessing.get_context("spawn")
OnOutcome = Callable[[str, dict[str, Any] | None, str | None, str | None], None]
RESPAWN_BACKOFF_S = (0.0, 0.5, 1.0, 2.0, 5.0)


class RenderService:
    def __init__(self, settings: Settings, on_outcome: OnOutcome, max_attempts: int = 3) -> None:
        self.settings = settings
        self.on_outcome = on_outcome
        self.max_attempts = max_attempts
        self.loop: asyncio.AbstractEventLoop | None = None
        self.process: Any = None
        self.writer: Any = None
        self.reader: Any = None
        self.ready = False
        self.running = False
        self.browser_available: bool | None = None
        self.browser_error: str | None = None
        self.in_flight: dict[str, tuple[rp.RenderRequest, int]] = {}  # job id -> (request, attempts)
        self.last_heartbeat: rp.RenderHeartbeat | None = None
        self.last_heartbeat_at = 0.0
        self.restarts = 0
        self.quick_deaths = 0
        self.started_at = 0.0
        self.done_before_restart = (0, 0, 0)

    # ---- life ----------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.running = True
        self._spawn()

    def _spawn(self) -> None:
        assert self.loop is not None
        settings = self.settings
        config = rp.RenderConfig(
            parent_pid=os.getpid(), browser_path=settings.render_browser_path, max_pages=settings.render_max_pages,
            timeout_s=settings.render_timeout_s, retries=settings.render_retries,
            recycle_pages=settings.render_recycle_pages, allow_hosts=list(settings.render_allow_hosts),
            max_response_bytes=settings.render_max_response_bytes, log_level=settings.log_level.upper(),
        )
        from workers.render import render_main  # here: workers.render imports scheduler modules

        inbox, self.writer = _SPAWN.Pipe(duplex=False)
        self.reader, outbox = _SPAWN.Pipe(duplex=False)
        self.process = _SPAWN.Process(target=render_main, args=(msgspec.msgpack.encode(config), inbox, outbox),
                                      name="modelsched-render", daemon=True)
        with _main_module_hidden():
            self.process.start()
        inbox.close()
        outbox.close()
        for connection in (self.writer, self.reader):
            _grow_pipe(connection.fileno())
        self.ready = False
        self.started_at = time.monotonic()
        self.loop.add_reader(self.reader.fileno(), self._on_readable)
        self.loop.add_reader(self.process.sentinel, self._on_exit)

    async def stop(self) -> None:
        self.running = False
        if self.process is None:
            return
        if self.writer is not None:
            with contextlib.suppress(OSError, ValueError):
                self.writer.send_bytes(rp.encode(rp.RenderShutdown()))
        deadline = time.monotonic() + 5.0
        while self.process.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.process.is_alive():
            self.kill()
            self.process.join(timeout=5)
        self._detach()

    def kill(self) -> None:
        if self.process is not None and self.process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)

    def _detach(self) -> None:
        if self.loop is not None:
            for fd_owner in (self.reader, ):
                if fd_owner is not None:
                    with contextlib.suppress(OSError, ValueError):
                        self.loop.remove_reader(fd_owner.fileno())
            if self.process is not None:
                with contextlib.suppress(OSError, ValueError):
                    self.loop.remove_reader(self.process.sentinel)
        for connection in (self.reader, self.writer):
            if connection is not None:
                with contextlib.suppress(OSError):
                    connection.close()
        self.reader = self.writer = None

    # ---- jobs ----------------------------------------------------------------------------------

    def submit(self, job_id: str, inputs: dict[str, Any] | str) -> None:
        if isinstance(inputs, str):
            inputs = {"url": inputs}
        request = rp.RenderRequest(
            job_id=job_id, url=inputs["url"], wait_until=inputs.get("wait_until", "load"),
            screenshot=bool(inputs.get("screenshot", False)), html=bool(inputs.get("html", False)),
            engine=inputs.get("engine", "browser"), fallback=inputs.get("fallback", "http"),
            timeout_s=inputs.get("timeout_s"),
        )
        self.in_flight[job_id] = (request, 1)
        self._send(request)

    def forget(self, job_id: str) -> None:
        """The job ended elsewhere (cancelled, timed out): drop its outcome when it comes."""
        self.in_flight.pop(job_id, None)

    def _send(self, request: rp.RenderRequest) -> None:
        if self.writer is None or not self.ready:
            return  # sent when the (new) render process reports ready
        with contextlib.suppress(OSError):  # if it died, its sentinel reports it and the request goes again
            self.writer.send_bytes(rp.encode(request))

    @property
    def load(self) -> int:
        return len(self.in_flight)

    # ---- messages ------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            data = self.reader.recv_bytes()
        except (EOFError, OSError):
            self._on_exit()
            return
        message = rp.decode_from_render(data)
        if isinstance(message, rp.RenderOutcome):
            if self.in_flight.pop(message.job_id, None) is not None:
                self.on_outcome(message.job_id, message.result, message.error, message.error_kind)
        elif isinstance(message, rp.RenderHeartbeat):
            self.last_heartbeat = message
            self.last_heartbeat_at = time.monotonic()
        elif isinstance(message, rp.RenderReady):
            self.ready = True
            self.quick_deaths = 0
            self.browser_available = message.browser_available
            self.browser_error = message.browser_error
            log.info("render process ready (pid %s, browser %s)", message.pid,
                     "available" if message.browser_available else f"unavailable: {message.browser_error}")
            for request, _ in list(self.in_flight.values()):
                self._send(request)

    def _on_exit(self) -> None:
        if self.reader is None:
            return
        with contextlib.suppress(EOFError, OSError):
            while self.reader.poll(0):
                message = rp.decode_from_render(self.reader.recv_bytes())
                if isinstance(message, rp.RenderOutcome) and self.in_flight.pop(message.job_id, None):
                    self.on_outcome(message.job_id, message.result, message.error, message.error_kind)
        self._detach()
        if self.process is not None:
            self.process.join(timeout=1)
        if not self.running:
            return
        lived_s = time.monotonic() - self.started_at
        log.warning("render process (pid %s) exited with code %s after %.1fs; %d render(s) in flight",
                    self.process.pid if self.process else None, self.process.exitcode if self.process else None,
                    lived_s, len(self.in_flight))
        if self.last_heartbeat is not None:
            hb = self.last_heartbeat
            done, ok, failed = self.done_before_restart
            self.done_before_restart = (done + hb.renders_done, ok + hb.renders_ok, failed + hb.renders_failed)
            self.last_heartbeat = None
        for job_id, (request, attempts) in list(self.in_flight.items()):
            if attempts >= self.max_attempts:
                del self.in_flight[job_id]
                self.on_outcome(job_id, None, f"the render process died {attempts} times while rendering it",
                                "poison")
            else:
                self.in_flight[job_id] = (request, attempts + 1)
        self.restarts += 1
        self.quick_deaths = self.quick_deaths + 1 if lived_s < 5 else 0
        delay = RESPAWN_BACKOFF_S[min(self.quick_deaths, len(RESPAWN_BACKOFF_S) - 1)]
        assert self.loop is not None
        self.loop.call_later(delay, self._respawn)

    def _respawn(self) -> None:
        if self.running:
            self._spawn()

    def status(self) -> dict[str, Any]:
        hb = self.last_heartbeat
        done, ok, failed = self.done_before_restart
        if hb is not None:
            done, ok, failed = done + hb.renders_done, ok + hb.renders_ok, failed + hb.renders_failed
        return {
            "pid": self.process.pid if self.process is not None else None,
            "alive": bool(self.process is not None and self.process.is_alive()),
            "ready": self.ready,
            "browser_available": self.browser_available,
            "browser_error": self.browser_error,
            "browser_pid": hb.browser_pid if hb else None,
            "browser_launches": hb.browser_launches if hb else 0,
            "pages_active": hb.pages_active if hb else 0,
            "max_pages": self.settings.render_max_pages,
            "peak_pages_active": hb.max_pages_active if hb else 0,
            "in_flight": len(self.in_flight),
            "renders_done": done,
            "renders_ok": ok,
            "renders_failed": failed,
            "success_rate": round(ok / done, 4) if done else None,
            "restarts": self.restarts,
        }
