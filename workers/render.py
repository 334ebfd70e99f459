"""The render process: Playwright's async API driving one headless Chromium, a bounded pool of pages.

Requests arrive on a pipe; each runs in its own browser context (fresh cookies and storage) once a
page slot is free (`max_pages`). Every request the page makes, the navigation and each redirect
included, passes the SSRF guard first or is aborted. A failure (timeout, crash, navigation error) is
retried with back-off up to `retries` times, then the plain-HTTP fetch is tried when the job allows
it. A browser that dies is launched again on the next render; after `recycle_pages` pages the
browser is replaced, so its memory cannot grow without bound.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urljoin

import msgspec
import psutil

from scheduler.ssrf import check_url
from workers import render_protocol as rp
from workers.process import die_with_parent, watch_parent
from workers.render_fetch import MAX_REDIRECTS, RefusedUrl, ResponseTooLarge, fetch_page

log = logging.getLogger("modelsched.render")

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage", "--disable-quic",
]
WAIT_UNTIL = ("load", "domcontentloaded", "networkidle")
TEXT_SCRIPT = "() => document.body ? document.body.innerText : ''"
LINKS_SCRIPT = "els => els.map(e => e.href).filter(h => h && !h.startsWith('javascript:'))"


class BrowserManager:
    """One Chromium at a time: launched on demand, relaunched after a crash, recycled after N pages."""

    def __init__(self, config: rp.RenderConfig) -> None:
        self.config = config
        self.playwright: Any = None
        self.browser: Any = None
        self.pages_on_browser = 0
        self.launches = 0
        self.profile_dir: tempfile.TemporaryDirectory[str] | None = None
        self.lock = asyncio.Lock()
        self.retiring: list[tuple[Any, int]] = []  # (browser, pages still open on it)

    async def start(self) -> None:
        from playwright.async_api import async_playwright

        self.playwright = await async_playwright().start()

    async def get(self) -> Any:
        async with self.lock:
            if self.browser is not None and (
                not self.browser.is_connected() or self.pages_on_browser >= self.config.recycle_pages
            ):
                old, self.browser = self.browser, None
                if old.is_connected():
                    log.info("recycling the browser after %d pages", self.pages_on_browser)
                    asyncio.get_running_loop().create_task(self._close_later(old))
            if self.browser is None:
                self.browser = await self.playwright.chromium.launch(
                    executable_path=self.config.browser_path, headless=True, args=CHROMIUM_ARGS,
                    handle_sigint=False, handle_sigterm=False, handle_sighup=False,
                )
                self.launches += 1
                self.pages_on_browser = 0
            self.pages_on_browser += 1
            return self.browser

    async def _close_later(self, browser: Any, grace_s: float = 60.0) -> None:
        # Pages still rendering on the old browser get a grace period, then it closes.
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and browser.contexts:
            await asyncio.sleep(0.2)
        with contextlib.suppress(Exception):
            await browser.close()

    def browser_pid(self) -> int | None:
        """The pid of the browser's main process: the descendant that Playwright drives over its
        debugging pipe (child processes of the browser carry a `--type=` argument)."""
        if self.browser is None:
            return None
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                command = child.cmdline()
                if "--remote-debugging-pipe" in command and not any(arg.startswith("--type=") for arg in command):
                    return child.pid
        return None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.browser is not None:
                await self.browser.close()
        with contextlib.suppress(Exception):
            if self.playwright is not None:
                await self.playwright.stop()


class RenderLoop:
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
        self.done = 0
        self.ok = 0
        self.failed = 0
        self.stopping = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    def send(self, message: rp.FromRender) -> None:
        self.outbox.send_bytes(rp.encode(message))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        error = None
        if self.browser_available:
            try:
                await self.browser.start()
            except Exception as exc:  # the playwright driver cannot start: serve the HTTP path only
                error, self.browser_available = f"{type(exc).__name__}: {exc}", False
        else:
            error = f"no browser at {self.config.browser_path}"
        if error:
            log.warning("render process without a browser (%s); renders use the plain HTTP fetch", error)
        loop.add_reader(self.inbox.fileno(), self.on_readable)
        self.send(rp.RenderReady(os.getpid(), self.browser_available, error))
        heartbeat = loop.create_task(self.heartbeat_forever())
        await self.stopping.wait()
        heartbeat.cancel()
        for task in list(self.tasks):
            task.cancel()
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
            return
        task = asyncio.get_running_loop().create_task(self.serve(message))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def heartbeat_forever(self) -> None:
        while True:
            self.send(rp.RenderHeartbeat(
                self.pages_active, self.max_pages_active, self.done, self.ok, self.failed,
                self.browser.browser_pid(), self.browser.launches, self.waiting,
            ))
            await asyncio.sleep(self.config.heartbeat_interval_s)

    async def serve(self, request: rp.RenderRequest) -> None:
        self.waiting += 1
        async with self.slots:
            self.waiting -= 1
            self.pages_active += 1
            self.max_pages_active = max(self.max_pages_active, self.pages_active)
            try:
                outcome = await self.render_with_retries(request)
            finally:
                self.pages_active -= 1
        self.done += 1
        if outcome.error is None:
            self.ok += 1
        else:
            self.failed += 1
        self.send(outcome)

    async def render_with_retries(self, request: rp.RenderRequest) -> rp.RenderOutcome:
        timeout_s = request.timeout_s or self.config.timeout_s
        if request.engine == "browser" and self.browser_available:
            last_error = "render failed"
            for attempt in range(max(1, self.config.retries)):
                try:
                    result = await self.render_in_browser(request, timeout_s)
                    return rp.RenderOutcome(request.job_id, result)
                except RefusedUrl as exc:
                    return rp.RenderOutcome(request.job_id, None, str(exc), "refused")
                except ResponseTooLarge as exc:
                    return rp.RenderOutcome(request.job_id, None, str(exc), "too_large")
                except Exception as exc:
                    last_error = _describe(exc)
                    log.info("render of %s failed (try %d): %s", request.url, attempt + 1, last_error)
                if attempt + 1 < self.config.retries:
                    await asyncio.sleep(min(5.0, 0.25 * 2**attempt))
            if request.fallback != "http":
                kind = "timeout" if "Timeout" in last_error else "failed"
                return rp.RenderOutcome(request.job_id, None, f"browser render failed: {last_error}", kind)
        try:
            result = await fetch_page(request.url, self.config.allow_hosts, timeout_s,
                                      self.config.max_response_bytes, want_html=request.html)
            return rp.RenderOutcome(request.job_id, result)
        except RefusedUrl as exc:
            return rp.RenderOutcome(request.job_id, None, str(exc), "refused")
        except Exception as exc:
            kind = "timeout" if "Timeout" in type(exc).__name__ else "failed"
            return rp.RenderOutcome(request.job_id, None, f"HTTP fetch failed: {_describe(exc)}", kind)

    async def render_in_browser(self, request: rp.RenderRequest, timeout_s: float) -> dict[str, Any]:
        started = time.perf_counter()
        verdict = await asyncio.to_thread(check_url, request.url, tuple(self.config.allow_hosts))
        if not verdict.allowed:
            raise RefusedUrl(f"refused {request.url}: {verdict.reason}")
        browser = await self.browser.get()
        context = await browser.new_context(service_workers="block", accept_downloads=False)
        refused: list[str] = []
        redirects: list[str] = []
        try:
            await context.route("**/*", self.guard(refused, redirects))
            page = await context.new_page()
            target = request.url
            for _ in range(MAX_REDIRECTS + 1):
                redirects.clear()
                try:
                    response = await page.goto(target, wait_until=request.wait_until, timeout=timeout_s * 1000)
                except Exception:
                    if redirects:  # our guard stopped a redirect of the navigation: check it, go there
                        target = redirects[-1]
                        continue
                    if refused:  # the navigation itself was refused by the guard
                        raise RefusedUrl(refused[0]) from None
                    raise
                break
            else:
                raise RefusedUrl(f"more than {MAX_REDIRECTS} redirects from {request.url}")
            if refused and (response is None or page.url in {"about:blank", "chrome-error://chromewebdata/"}):
                raise RefusedUrl(refused[0])
            html = await page.content()
            if len(html.encode()) > self.config.max_response_bytes:
                raise ResponseTooLarge(f"the page exceeds the limit of {self.config.max_response_bytes} bytes")
            result: dict[str, Any] = {
                "url": request.url, "final_url": page.url, "status": response.status if response else None,
                "title": await page.title(), "text": await page.evaluate(TEXT_SCRIPT),
                "links": list(dict.fromkeys(await page.eval_on_selector_all("a[href]", LINKS_SCRIPT))),
                "engine": "chromium", "refused_requests": refused,
            }
            if request.html:
                result["html"] = html
            if request.screenshot:
                result["screenshot_png"] = base64.b64encode(await page.screenshot(type="png")).decode()
            result["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 1)
            return result
        finally:
            with contextlib.suppress(Exception):
                await context.close()

    def guard(self, refused: list[str], redirects: list[str]) -> Any:
        """A route handler for every request of the page. Refused URLs are aborted. Allowed ones are
        fetched by Playwright with redirects off, because Chromium follows redirects without passing
        them through routes: a redirect of the page's own navigation is handed back to
        `render_in_browser` (which checks the target and navigates there); a redirect of any other
        request is followed here hop by hop, each hop checked."""
        allow = tuple(self.config.allow_hosts)
        verdicts: dict[str, bool] = {}
        max_bytes = self.config.max_response_bytes
        timeout_ms = self.config.timeout_s * 1000

        async def allowed(url: str) -> bool:
            key = "/".join(url.split("/", 3)[:3])  # scheme://host:port
            if key not in verdicts:
                verdict = await asyncio.to_thread(check_url, url, allow)
                verdicts[key] = verdict.allowed
                if not verdict.allowed:
                    refused.append(f"refused {url}: {verdict.reason}")
            return verdicts[key]

        async def route(route: Any) -> None:
            url = route.request.url
            if url.startswith(("data:", "blob:", "about:")):
                await route.continue_()
                return
            if not await allowed(url):
                await route.abort("blockedbyclient")
                return
            navigation = _is_main_navigation(route.request)
            try:
                response = await route.fetch(max_redirects=0, timeout=timeout_ms)
                for _ in range(MAX_REDIRECTS):
                    location = response.headers.get("location")
                    if not (300 <= response.status < 400 and location):
                        break
                    target = urljoin(url, location)
                    if navigation:
                        redirects.append(target)
                        await route.abort("aborted")
                        return
                    if not await allowed(target):
                        await route.abort("blockedbyclient")
                        return
                    url = target
                    response = await route.fetch(url=target, max_redirects=0, timeout=timeout_ms)
            except Exception:
                await route.abort("failed")
                return
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > max_bytes:
                refused.append(f"refused {url}: the response is {length} bytes; the limit is {max_bytes}")
                await route.abort("blockedbyclient")
                return
            await route.fulfill(response=response)

        return route


def _is_main_navigation(request: Any) -> bool:
    try:
        return bool(request.is_navigation_request() and request.frame.parent_frame is None)
    except Exception:  # a request without a frame (service worker): not the page's navigation
        return False


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def render_main(config_bytes: bytes, inbox: Connection, outbox: Connection) -> None:
    config = msgspec.msgpack.decode(config_bytes, type=rp.RenderConfig)
    die_with_parent(config.parent_pid)
    watch_parent(config.parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [render] %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        asyncio.run(RenderLoop(config, inbox, outbox).run())
    except (BrokenPipeError, EOFError, OSError) as exc:
        log.info("render process: main process gone (%s); exiting", exc)
    os._exit(0)
