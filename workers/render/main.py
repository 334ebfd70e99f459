"""The render process: its entry point and its asyncio loop.

Jobs arrive on a pipe (`workers.render.protocol`); each becomes a task that waits for one of
`max_pages` page slots, renders in Chromium (`workers.render.browser`) within `timeout_s`, and on a
failure (timeout, crash, navigation error) tries again after a back-off, up to `retries` tries; then
it is fetched over plain HTTP (`workers.render.fetch`) when the request allows it. A refused URL or
an oversized page fails at once: trying again would give the same answer. The retry decisions are
the pure functions below. A heartbeat says how many pages are open, for the status and the supervisor.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from workers.backoff import Backoff
from workers.child import begin_child
from workers.logs import job_context
from workers.protocol import ErrorKind
from workers.render import protocol as rp
from workers.render.browser import BrowserManager, render_in_browser
from workers.render.fetch import RefusedUrl, ResponseTooLarge, fetch_page
from workers.render.request import RenderRequest

log = logging.getLogger("modelsched.render")

RETRY_BACKOFF = Backoff(first_s=0.25, cap_s=5.0)
Outcome = tuple[dict[str, Any] | None, str | None, ErrorKind | None]  # (result, error, error kind)
FINAL_KINDS = frozenset({ErrorKind.REFUSED, ErrorKind.TOO_LARGE})  # failures no retry or fallback can change


def error_kind(exc: BaseException) -> ErrorKind:
    """refused | too_large | timeout | failed: what the outcome reports, and what decides retries."""
    if isinstance(exc, RefusedUrl):
        return ErrorKind.REFUSED
    if isinstance(exc, ResponseTooLarge):
        return ErrorKind.TOO_LARGE
    if isinstance(exc, TimeoutError) or type(exc).__name__ == "TimeoutError":  # asyncio's or Playwright's
        return ErrorKind.TIMEOUT
    return ErrorKind.FAILED


def should_retry(kind: ErrorKind, tries: int, max_tries: int) -> bool:
    return kind not in FINAL_KINDS and tries < max_tries


def use_fallback(kind: ErrorKind, fallback: str | None) -> bool:
    return kind not in FINAL_KINDS and fallback == "http"


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class RenderLoop:
    """The render process's state: page slots, the browser, the tasks of the renders in progress."""

    def __init__(self, config: rp.RenderConfig, inbox: Connection, outbox: Connection) -> None:
        self.config = config
        self.inbox = inbox
        self.outbox = outbox
        self.browser = BrowserManager(config)
        self.browser_available = os.path.exists(config.browser_path)
        self.slots = asyncio.Semaphore(config.max_pages)
        self.pages_active = 0
        self.max_pages_active = 0
        self.waiting = 0
        self.browser_error = ""
        self.stopping = asyncio.Event()
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def send(self, message: rp.FromRender) -> None:
        self.outbox.send_bytes(rp.encode(message))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        error = None
        if self.browser_available:
            try:
                await self.browser.start()
            except Exception as exc:  # the Playwright driver cannot start: only the HTTP path is left
                error, self.browser_available = describe(exc), False
        else:
            error = f"no browser at {self.config.browser_path}"
        if error:
            self.browser_error = error
            log.warning("render process without a browser (%s); renders can use the plain HTTP fetch", error)
        loop.add_reader(self.inbox.fileno(), self.on_readable)
        self.send(rp.RenderReady(os.getpid(), self.browser_available, error))
        heartbeat = loop.create_task(self.heartbeat_forever())
        await self.stopping.wait()
        heartbeat.cancel()
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        await self.browser.close()

    def on_readable(self) -> None:
        try:
            data = self.inbox.recv_bytes()
        except (EOFError, OSError):
            self.stopping.set()
            return
        message = rp.decode_to_render(data)
        if isinstance(message, rp.RenderShutdown):
            self.stopping.set()
        elif isinstance(message, rp.RenderCancel):
            task = self.tasks.get(message.job_id)
            if task is not None:
                task.cancel()
        elif message.job_id not in self.tasks:  # a job sent again after a restart may repeat
            task = asyncio.get_running_loop().create_task(self.serve(message))
            self.tasks[message.job_id] = task
            task.add_done_callback(functools.partial(self.forget, message.job_id))

    def forget(self, job_id: str, task: asyncio.Task[None]) -> None:
        self.tasks.pop(job_id, None)

    async def heartbeat_forever(self) -> None:
        while True:
            self.send(
                rp.RenderHeartbeat(
                    pages_active=self.pages_active,
                    max_pages_active=self.max_pages_active,
                    waiting=self.waiting,
                    pages_rendered=self.browser.pages_rendered,
                    browser_pid=self.browser.browser_pid,
                    browser_launches=self.browser.launches,
                )
            )
            await asyncio.sleep(self.config.heartbeat_interval_s)

    async def serve(self, job: rp.RenderJob) -> None:
        with job_context(job.job_id):  # this task's lines (the fetcher's, the browser's) name the job
            try:
                result, error, kind = await self.render(job.request)
            except asyncio.CancelledError:
                return  # cancelled by the main process: it wants no answer
            except Exception as exc:  # a bug here must still answer the job
                log.exception("render of %s failed unexpectedly", job.request.url)
                result, error, kind = None, f"render failed: {describe(exc)}", ErrorKind.FAILED
        self.send(rp.RenderOutcome(job.job_id, result, error, kind))

    async def render(self, request: RenderRequest) -> Outcome:
        """The browser with its retries, then the HTTP fallback where the request allows it."""
        timeout_s = request.timeout_s or self.config.timeout_s
        if request.engine == "http":
            return await self.fetch(request, timeout_s, None)
        if self.browser_available:
            outcome = await self.render_with_retries(request, timeout_s)
            result, error, kind = outcome
            if error is None or not use_fallback(kind or ErrorKind.FAILED, request.fallback):
                return outcome
            reason = error
        else:
            reason = f"no browser is available ({self.browser_error})"
            if request.fallback != "http":
                return None, reason, ErrorKind.NO_BROWSER
        return await self.fetch(request, timeout_s, reason)

    async def render_with_retries(self, request: RenderRequest, timeout_s: float) -> Outcome:
        tries = max(1, self.config.retries)
        kind, reason = ErrorKind.FAILED, "not tried"
        for attempt in range(1, tries + 1):
            try:
                return await self.render_page(request, timeout_s), None, None
            except Exception as exc:
                kind, reason = error_kind(exc), describe(exc)
                log.info("render of %s failed (try %d of %d): %s", request.url, attempt, tries, reason)
            if not should_retry(kind, attempt, tries):
                break
            await asyncio.sleep(RETRY_BACKOFF.delay(attempt))
        if kind not in FINAL_KINDS:
            reason = f"the browser failed after {attempt} {'try' if attempt == 1 else 'tries'}: {reason}"
        return None, reason, kind

    async def render_page(self, request: RenderRequest, timeout_s: float) -> dict[str, Any]:
        """One try in the browser, on one page slot."""
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        self.pages_active += 1
        self.max_pages_active = max(self.max_pages_active, self.pages_active)
        try:
            browser = await self.browser.get()
            return await render_in_browser(browser, request, self.config, timeout_s)
        finally:
            self.pages_active -= 1
            self.slots.release()

    async def fetch(self, request: RenderRequest, timeout_s: float, reason: str | None) -> Outcome:
        """The plain-HTTP path; `reason` says why it was taken instead of the browser."""
        try:
            result = await fetch_page(
                request.url,
                self.config.allow_hosts,
                timeout_s,
                self.config.max_response_bytes,
                want_html=request.html,
            )
        except Exception as exc:
            before = f" (after: {reason})" if reason else ""
            return None, f"HTTP fetch failed: {describe(exc)}{before}", error_kind(exc)
        if reason is not None:
            result["fallback_reason"] = reason
        return result, None, None


def render_main(config_bytes: bytes, inbox: Connection, outbox: Connection) -> None:
    """The render process's entry (started with `spawn` by `scheduler.render.service`)."""
    config = msgspec.msgpack.decode(config_bytes, type=rp.RenderConfig)
    begin_child(config.parent_pid, "render", config.log_level, config.log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        asyncio.run(RenderLoop(config, inbox, outbox).run())
    except (BrokenPipeError, EOFError, OSError) as exc:
        log.info("render process: main process gone (%s); exiting", exc)
    os._exit(0)
