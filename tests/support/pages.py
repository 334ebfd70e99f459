"""For the render tests: a small threaded HTTP server on 127.0.0.1 with the pages they render, and a
`RenderService` running on an event loop in a background thread, so one render process can serve a
whole test module.

Pages: `/js` (its text is written by JavaScript), `/slow?s=N`, `/redirect?to=URL`, `/links?n=N`,
`/pool?ms=N` (counts how many are being served at once), `/browser-hangs` (answers the HTTP fallback's
user agent at once, a browser only after 5 s), `/subresources?to=URL` (an image, a fetch and a
WebSocket to URL), `/big?kb=N`; anything else is a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import http.server
import os
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest

from scheduler.render.service import RenderService
from scheduler.scheduler import ASYNC, TICK_S, Scheduler
from scheduler.settings import Settings
from tests.support.polling import until_sync
from workers.render.fetch import USER_AGENT

T = TypeVar("T")
CHROMIUM = "/usr/bin/chromium"
JS_TEXT = "written by javascript"
needs_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"no Chromium at {CHROMIUM} (install Debian's chromium package; CI does)",
)

JS_PAGE = f"""<!doctype html><html><head><title>JS page</title></head><body>
<p>static text</p><div id="out"></div>
<script>document.getElementById("out").textContent = "{JS_TEXT}";</script></body></html>"""


class PageServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), PageHandler)
        self.lock = threading.Lock()
        self.concurrent: dict[str, int] = {}
        self.max_concurrent: dict[str, int] = {}
        self.requests: list[str] = []

    @property
    def base(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_port}"

    def served(self, path: str) -> int:
        with self.lock:
            return sum(1 for seen in self.requests if urlsplit(seen).path == path)


class PageHandler(http.server.BaseHTTPRequestHandler):
    server: PageServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        with self.server.lock:
            self.server.requests.append(self.path)
            count = self.server.concurrent[parts.path] = self.server.concurrent.get(parts.path, 0) + 1
            self.server.max_concurrent[parts.path] = max(self.server.max_concurrent.get(parts.path, 0), count)
        try:
            self.answer(parts.path, query)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with self.server.lock:
                self.server.concurrent[parts.path] -= 1

    def answer(self, path: str, query: dict[str, str]) -> None:
        if path == "/js":
            self.page(JS_PAGE)
        elif path == "/slow":
            time.sleep(float(query.get("s", "3")))  # the page is slow on purpose
            self.page("<html><head><title>slow</title></head><body>finally</body></html>")
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query["to"])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/links":
            count = int(query.get("n", "100"))
            links = "".join(f'<li><a href="/page/{i}">page {i}</a></li>' for i in range(count))
            self.page(f"<html><head><title>links</title></head><body><ul>{links}</ul></body></html>")
        elif path == "/pool":
            time.sleep(int(query.get("ms", "300")) / 1000)
            self.page(
                f"<html><head><title>pool {html.escape(query.get('i', ''))}</title></head><body>ok</body></html>"
            )
        elif path == "/browser-hangs":
            if USER_AGENT not in self.headers.get("User-Agent", ""):
                time.sleep(5)
            self.page("<html><head><title>plain</title></head><body>served to the fallback</body></html>")
        elif path == "/subresources":
            target = html.escape(query["to"], quote=True)
            socket_url = target.replace("http://", "ws://")
            self.page(f"""<html><head><title>subresources</title></head><body>
<img src="{target}/pixel.png"><p>page with subresources</p>
<script>fetch("{target}/api").catch(() => 0); try {{ new WebSocket("{socket_url}/ws"); }} catch (e) {{}}</script>
</body></html>""")
        elif path == "/big":
            self.page("<html><body>" + "x" * (int(query.get("kb", "64")) * 1024) + "</body></html>")
        else:
            self.send_response(404)
            body = b"<html><head><title>Not found</title></head><body>no such page</body></html>"
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def page(self, text: str) -> None:
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def page_server(host: str = "127.0.0.1") -> Iterator[PageServer]:
    server = PageServer(host)
    thread = threading.Thread(target=server.serve_forever, name="page-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def render_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "render_enabled": True,
        "render_allow_hosts": ["127.0.0.1"],
        "render_retries": 2,
        "heartbeat_interval_s": 0.2,
        "journal_path": "",
        "log_level": "warning",
        "cpu_workers": 0,
    }
    values.update(overrides)
    return Settings(**values)


class LoopThread:
    """An event loop running in a background thread; `call` runs a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="render-test-loop", daemon=True)
        self.thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    @staticmethod
    def wait(condition: Any, timeout: float, message: str) -> None:
        until_sync(condition, timeout=timeout, interval=0.05, message=message)


class ServiceThread(LoopThread):
    """A `RenderService` (the render process and its supervision, no scheduler) on a `LoopThread`."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.service = RenderService(settings)
        self.supervisor: asyncio.Task[None] | None = None

    def __enter__(self) -> ServiceThread:
        async def supervise() -> None:  # what the scheduler's tick does for it
            while True:
                self.service.supervise(time.monotonic())
                await asyncio.sleep(TICK_S)

        async def start() -> None:
            self.service.start(asyncio.get_running_loop())
            self.supervisor = asyncio.get_running_loop().create_task(supervise())

        self.call(start())
        self.wait(lambda: self.service.ready, 60, "render process ready")
        return self

    def __exit__(self, *exc_info: object) -> None:
        async def stop() -> None:
            if self.supervisor is not None:
                self.supervisor.cancel()
            await self.service.stop()

        with contextlib.suppress(Exception):
            self.call(stop(), 30)
        self.close()

    def render(self, request: dict[str, Any] | str, timeout: float = 120) -> dict[str, Any]:
        return self.call(self.service.render(request), timeout)

    def status(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            return self.service.status()

        return self.call(read())


class SchedulerThread(LoopThread):
    """A started `Scheduler` (ASYNC type, no model workers, no journal) with rendering on."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.scheduler = Scheduler(settings, scheduler_type=ASYNC)

    def __enter__(self) -> SchedulerThread:
        self.call(self.scheduler.start())
        self.wait(
            lambda: self.scheduler.render is not None and self.scheduler.render.ready,
            60,
            "render process ready",
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(Exception):
            self.call(self.scheduler.stop(grace_s=0), 60)
        self.close()

    def render_status(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            return self.scheduler.system_status()["render"]

        return self.call(read())
