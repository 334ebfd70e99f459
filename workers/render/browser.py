"""Chromium for the render process: one browser at a time (launched on demand, relaunched after a
crash, replaced after `recycle_pages` pages) and the rendering of one page in it.

Every request a page makes, its navigation included, is routed through `workers.render.fetch`: the
SSRF guard checks it, the render process fetches it (connecting to the checked address, the body
capped) and hands the response to Chromium. Chromium follows no redirect itself: a redirect of the
navigation comes back here and is navigated to after its check; other redirects are followed hop by
hop in the fetcher. Chromium's own network goes to a proxy that accepts nothing, so whatever does
not pass the route (WebSockets, WebRTC, a request Playwright cannot intercept) reaches no host.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

from workers.render import protocol as rp
from workers.render.fetch import (
    MAX_REDIRECTS,
    RESPONSE_HEADERS_DROPPED,
    GuardedFetcher,
    RefusedUrl,
    ResponseTooLarge,
)
from workers.render.request import RenderRequest

log = logging.getLogger("modelsched.render")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
TEXT_SCRIPT = "() => document.body ? document.body.innerText : ''"
LINKS_SCRIPT = "els => els.map(e => String(e.href || '').split('#')[0]).filter(h => /^https?:/i.test(h))"
PASS_THROUGH = ("data:", "blob:", "about:")


class BrowserManager:
    """One Chromium at a time, driven by Playwright over its pipe. Playwright gives each launch a
    fresh temporary profile, deleted when the browser closes."""

    def __init__(self, config: rp.RenderConfig) -> None:
        self.config = config
        self.playwright: Any = None
        self.browser: Any = None
        self.browser_pid: int | None = None
        self.pages_on_browser = 0
        self.pages_rendered = 0
        self.launches = 0
        self.lock = asyncio.Lock()
        self.closing: set[asyncio.Task[None]] = set()
        self.dead_proxy: socket.socket | None = None

    def launch_args(self) -> list[str]:
        args = list(CHROMIUM_ARGS)
        if self.config.block_direct_network:
            if self.dead_proxy is None:
                # Bound, never listening: a connection to it is refused, and no one else can take the port.
                self.dead_proxy = socket.socket()
                self.dead_proxy.bind(("127.0.0.1", 0))
            port = self.dead_proxy.getsockname()[1]
            args += [
                f"--proxy-server=http://127.0.0.1:{port}",
                "--proxy-bypass-list=<-loopback>",
                "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
            ]
        return args

    async def start(self) -> None:
        from playwright.async_api import async_playwright

        self.playwright = await async_playwright().start()

    async def get(self) -> Any:
        """The browser to open the next page in (launching or replacing it as needed)."""
        async with self.lock:
            if self.browser is not None and (
                not self.browser.is_connected() or self.pages_on_browser >= self.config.recycle_pages
            ):
                old, self.browser, self.browser_pid = self.browser, None, None
                if old.is_connected():
                    log.info("recycling the browser after %d pages", self.pages_on_browser)
                    task = asyncio.get_running_loop().create_task(self._close_when_idle(old))
                    self.closing.add(task)
                    task.add_done_callback(self.closing.discard)
                else:
                    log.warning("the browser is gone (crashed or killed); launching a new one")
            if self.browser is None:
                known = set(self._browser_pids())
                self.browser = await self.playwright.chromium.launch(
                    executable_path=self.config.browser_path,
                    headless=True,
                    args=self.launch_args(),
                    handle_sigint=False,
                    handle_sigterm=False,
                    handle_sighup=False,
                )
                self.launches += 1
                self.pages_on_browser = 0
                self.browser_pid = next((pid for pid in self._browser_pids() if pid not in known), None)
            self.pages_on_browser += 1
            self.pages_rendered += 1
            return self.browser

    async def _close_when_idle(self, browser: Any, grace_s: float = 60.0) -> None:
        """A recycled browser closes once its last page is done (or after a grace period)."""
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and browser.is_connected() and browser.contexts:
            await asyncio.sleep(0.2)
        with contextlib.suppress(Exception):
            await browser.close()

    @staticmethod
    def _browser_pids() -> list[int]:
        """Main processes of the browsers under this process: the ones Playwright drives over a
        debugging pipe (Chromium's helpers carry a `--type=` argument)."""
        pids = []
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                command = child.cmdline()
                if "--remote-debugging-pipe" in command and not any(
                    arg.startswith("--type=") for arg in command
                ):
                    pids.append(child.pid)
        return pids

    async def close(self) -> None:
        for task in list(self.closing):
            task.cancel()
        with contextlib.suppress(Exception):
            if self.browser is not None:
                await self.browser.close()
        with contextlib.suppress(Exception):
            if self.playwright is not None:
                await self.playwright.stop()
        if self.dead_proxy is not None:
            self.dead_proxy.close()


@dataclass
class Navigation:
    """What the route handler saw of the page's own navigation."""

    redirect_to: str | None = None
    status: int | None = None
    url: str | None = None
    refused: list[str] = field(default_factory=list)


def fulfil_headers(headers: Any) -> dict[str, str]:
    """Response headers for Chromium: framing headers dropped (the body is already decoded),
    repeated headers joined (`Set-Cookie` one per line, as Playwright expects)."""
    joined: dict[str, list[str]] = {}
    for name, value in headers.multi_items():
        if name.lower() not in RESPONSE_HEADERS_DROPPED:
            joined.setdefault(name.lower(), []).append(value)
    return {name: ("\n" if name == "set-cookie" else ", ").join(values) for name, values in joined.items()}


async def _settle(action: Awaitable[None]) -> None:
    """Answer a routed request; the page may be gone by now (the render timed out), which is fine."""
    try:
        await action
    except Exception as exc:
        log.debug("a routed request could not be answered: %s", describe_error(exc))


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def is_main_navigation(request: Any) -> bool:
    try:
        return bool(request.is_navigation_request() and request.frame.parent_frame is None)
    except Exception:  # a request without a frame (a service worker's): not the page's navigation
        return False


def route_handler(fetcher: GuardedFetcher, navigation: Navigation) -> Any:
    """The handler for every request of a page: refused ones are aborted, the others fetched here."""

    async def route(route: Any) -> None:
        request = route.request
        url = request.url
        if url.startswith(PASS_THROUGH):
            await _settle(route.continue_())
            return
        main = is_main_navigation(request)
        try:
            headers = {
                name: value
                for name, value in (await request.all_headers()).items()
                if not name.startswith(":")
            }
            fetched = await fetcher.fetch(
                request.method, url, headers, request.post_data_buffer, follow_redirects=not main
            )
        except (RefusedUrl, ResponseTooLarge) as exc:
            if main:
                navigation.refused.append(str(exc))
            elif isinstance(exc, ResponseTooLarge):
                fetcher.refused.append(f"refused {url}: {exc}")
            await _settle(route.abort("blockedbyclient"))
            return
        except Exception as exc:
            log.debug("request %s failed: %s", url, describe_error(exc))
            await _settle(route.abort("failed"))
            return
        if main and fetched.location is not None:
            navigation.redirect_to = fetched.location
            await _settle(route.abort("aborted"))
            return
        if main:
            navigation.status, navigation.url = fetched.status, fetched.url
        await _settle(
            route.fulfill(status=fetched.status, headers=fulfil_headers(fetched.headers), body=fetched.body)
        )

    return route


async def render_in_browser(
    browser: Any, request: RenderRequest, config: rp.RenderConfig, timeout_s: float
) -> dict[str, Any]:
    """Render `request.url` in a fresh context of `browser`: the result dict, or an exception
    (RefusedUrl, ResponseTooLarge, TimeoutError, a Playwright error)."""
    started = time.perf_counter()
    fetcher = GuardedFetcher(config.allow_hosts, config.max_response_bytes, timeout_s)
    await fetcher.verdict(parse_url(request.url))  # refused before a page is opened
    context = await browser.new_context(service_workers="block", accept_downloads=False)
    try:
        async with asyncio.timeout(timeout_s):
            navigation = Navigation()
            await context.route("**/*", route_handler(fetcher, navigation))
            page = await context.new_page()
            response = await _navigate(page, request, navigation, timeout_s)
            if response is None and navigation.status is not None:
                # Chromium shows its own error page for an error status with an empty body: the
                # page answered, it has nothing to show.
                return _result(
                    request,
                    started,
                    navigation.url or request.url,
                    navigation.status,
                    "",
                    "",
                    [],
                    fetcher.refused,
                )
            html = await page.content()
            if len(html.encode()) > config.max_response_bytes:
                raise ResponseTooLarge(f"the page exceeds the limit of {config.max_response_bytes} bytes")
            result = _result(
                request,
                started,
                page.url,
                response.status if response else navigation.status,
                await page.title(),
                await page.evaluate(TEXT_SCRIPT),
                await page.eval_on_selector_all("a[href]", LINKS_SCRIPT),
                fetcher.refused,
            )
            if request.html:
                result["html"] = html
            if request.screenshot:
                result["screenshot_png"] = base64.b64encode(await page.screenshot(type="png")).decode()
            result["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 1)
            return result
    finally:
        with contextlib.suppress(Exception):
            await context.close()
        await fetcher.aclose()


async def _navigate(page: Any, request: RenderRequest, navigation: Navigation, timeout_s: float) -> Any:
    """`page.goto`, going to each redirect target itself after the guard has checked it."""
    target = request.url
    for _ in range(MAX_REDIRECTS + 1):
        navigation.redirect_to = None
        try:
            return await page.goto(target, wait_until=request.wait_until, timeout=timeout_s * 1000)
        except Exception:
            if navigation.refused:
                raise RefusedUrl(navigation.refused[0]) from None
            if navigation.redirect_to is not None:
                target = navigation.redirect_to
                continue
            if navigation.status is not None and navigation.status >= 400:
                return None  # an error status with an empty body (see render_in_browser)
            raise
    raise RefusedUrl(f"more than {MAX_REDIRECTS} redirects from {request.url}")


def _result(
    request: RenderRequest,
    started: float,
    final_url: str,
    status: int | None,
    title: str,
    text: str,
    links: list[str],
    refused: list[str],
) -> dict[str, Any]:
    return {
        "url": request.url,
        "final_url": final_url,
        "status": status,
        "title": title,
        "text": text,
        "links": list(dict.fromkeys(links)),
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
        "engine": "chromium",
        "refused_requests": list(refused),
    }


def parse_url(url: str) -> httpx.URL:
    try:
        return httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise RefusedUrl(f"refused {url}: the URL cannot be parsed: {exc}") from None
