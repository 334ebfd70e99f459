"""The render process's fetching under the SSRF guard: connections go to the address that was checked
(never to a second DNS answer), URL spellings that parsers read differently are refused, IPv6
addresses that embed a refused IPv4 address are refused, bodies are capped by their decoded size, and
Chromium's own network reaches nothing (only requests that pass the route handler are fetched).
Everything here talks to 127.0.0.1 only; refused addresses are decided without connecting."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.pages import ServiceThread, needs_chromium, render_settings
from workers.render.browser import fulfil_headers
from workers.render.fetch import GuardedFetcher, ResponseTooLarge, fetch_page, pinned_request, redirect_method
from workers.render.ssrf import UrlVerdict, check_url


def no_resolve(host: str, port: int) -> list[str]:
    raise AssertionError(f"the decision must not resolve {host}")


# ---- the decision: spellings and embedded addresses ------------------------------------------------


@pytest.mark.parametrize(
    "url, why",
    [
        ("http://2130706433/", "loopback"),  # 127.0.0.1 as one number: browsers and inet_aton read it so
        ("http://0x7f.1/", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://0177.0.0.1/", "loopback"),  # octal
        ("http://localhost./", "loopback"),  # a trailing dot names the same host
        ("http://metadata.google.internal./", "metadata"),
        ("http://[2002:7f00:1::]/", "embeds"),  # 6to4 of 127.0.0.1
        ("http://[2002:a9fe:a9fe::]/", "embeds"),  # 6to4 of 169.254.169.254
        ("http://[64:ff9b::a00:1]/", "embeds"),  # NAT64 of 10.0.0.1
        ("http://[::ffff:7f00:1]/", "embeds"),  # IPv4-mapped loopback, hex spelling
        ("http://127.0.0.1\\@example.org/", "backslash"),  # WHATWG: host 127.0.0.1; urlsplit: example.org
        ("http://example.org /", "whitespace"),
        ("http://exa\tmple.org/", "whitespace"),
        ("http://example.org/\r\nHost: 10.0.0.1", "control"),
    ],
)
def test_spellings_that_hide_a_refused_host_are_refused(url: str, why: str) -> None:
    verdict = check_url(url, (), no_resolve)
    assert not verdict.allowed and why in verdict.reason, verdict


def test_embedded_public_addresses_pass_and_the_verdict_carries_what_was_checked() -> None:
    assert check_url("http://[64:ff9b::808:808]/", (), no_resolve).allowed  # NAT64 of 8.8.8.8
    verdict = check_url("https://Example.ORG.:8443/x", (), lambda host, port: ["93.184.216.34"])
    assert verdict.allowed and verdict.host == "example.org" and verdict.port == 8443
    assert verdict.addresses == ("93.184.216.34",)
    assert check_url("http://127.0.0.1./", ["127.0.0.1"], no_resolve).allowed  # the allowlist ignores the dot


# ---- pure pieces of the fetch ---------------------------------------------------------------------


def test_a_pinned_request_goes_to_the_checked_address_under_the_name() -> None:
    url, headers, extensions = pinned_request(httpx.URL("https://example.org:8443/a?b=1"), "93.184.216.34")
    assert str(url) == "https://93.184.216.34:8443/a?b=1"
    assert headers == {"Host": "example.org:8443"} and extensions == {"sni_hostname": "example.org"}
    url, headers, extensions = pinned_request(httpx.URL("http://example.org/"), "2606:2800:220:1::")
    assert str(url) == "http://[2606:2800:220:1::]/" and headers == {"Host": "example.org"} and not extensions
    same = httpx.URL("http://127.0.0.1:81/")
    assert pinned_request(same, "127.0.0.1") == (same, {}, {})  # an IP literal is already pinned
    assert pinned_request(same, None) == (same, {}, {})  # allowlisted: not resolved, not pinned


def test_redirect_methods_and_the_headers_handed_to_chromium() -> None:
    assert redirect_method(303, "POST") == "GET" and redirect_method(302, "POST") == "GET"
    assert redirect_method(307, "POST") == "POST" and redirect_method(301, "GET") == "GET"
    headers = httpx.Headers(
        [
            ("Content-Type", "text/html"),
            ("Content-Encoding", "gzip"),
            ("Content-Length", "9"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("Vary", "Accept"),
            ("Vary", "Cookie"),
        ]
    )
    assert fulfil_headers(headers) == {
        "content-type": "text/html",
        "set-cookie": "a=1\nb=2",
        "vary": "Accept, Cookie",
    }


# ---- against a loopback server --------------------------------------------------------------------


class Recorder(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.seen: list[tuple[str, str]] = []  # (path, Host header)
        self.release = threading.Event()
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def paths(self) -> list[str]:
        with self.lock:
            return [path for path, _ in self.seen]


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    server: Recorder
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.seen.append((self.path, self.headers.get("Host", "")))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up: fine
            self.route()

    def route(self) -> None:
        if self.path == "/chunked":  # no Content-Length: only counting the bytes can stop it
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"x" * 4096
            for _ in range(64):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/bomb":  # 2 MB of zeros in about 2 KB
            self.answer(gzip.compress(b"\0" * 2_000_000), "text/plain", [("Content-Encoding", "gzip")])
        elif self.path == "/empty-404":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/hold":  # holds its page until the test releases it
            self.server.release.wait(60)
            self.answer(b"<html><body>released</body></html>")
        elif self.path == "/sockets":
            ws = self.server.base.replace("http://", "ws://")
            self.answer(
                f"""<html><head><title>sockets</title></head><body><p>socket page</p>
<img src="/pixel.png"><script>try {{ new WebSocket("{ws}/ws"); }} catch (e) {{}}</script></body></html>""".encode()
            )
        else:
            self.answer(b"<html><head><title>t</title></head><body>hello</body></html>")

    def answer(self, body: bytes, content_type: str = "text/html", extra: list[tuple[str, str]] = ()) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


def test_the_fetch_connects_to_the_checked_address_and_resolves_once(recorder: Recorder) -> None:
    """`pinned.test` resolves nowhere: the requests can only have reached the server because they went
    to the address the check returned, with the name in Host (a forwarded Host header cannot change it)."""
    checks: list[str] = []

    async def check(url: str) -> UrlVerdict:
        checks.append(url)
        return UrlVerdict(True, "checked", "pinned.test", ("127.0.0.1",), recorder.server_port)

    async def scenario() -> list[int]:
        fetcher = GuardedFetcher((), 1 << 20, 10.0, check)
        try:
            first = await fetcher.fetch("GET", f"http://pinned.test:{recorder.server_port}/one")
            second = await fetcher.fetch(
                "GET",
                f"http://pinned.test:{recorder.server_port}/two",
                headers={"host": "evil.test", "connection": "close"},
            )
            return [first.status, second.status]
        finally:
            await fetcher.aclose()

    assert asyncio.run(scenario()) == [200, 200]
    assert len(checks) == 1  # one check (one DNS query) per origin and render
    hosts = {path: host for path, host in recorder.seen}
    assert hosts["/one"] == hosts["/two"] == f"pinned.test:{recorder.server_port}"


def test_bodies_are_capped_by_their_decoded_size(recorder: Recorder) -> None:
    allow = ["127.0.0.1"]
    with pytest.raises(ResponseTooLarge):
        asyncio.run(fetch_page(f"{recorder.base}/chunked", allow, 10.0, 100_000))
    with pytest.raises(ResponseTooLarge):
        asyncio.run(fetch_page(f"{recorder.base}/bomb", allow, 10.0, 100_000))
    page = asyncio.run(fetch_page(f"{recorder.base}/chunked", allow, 10.0, 1 << 20))
    assert page["status"] == 200 and len(page["text"]) == 64 * 4096


@pytest.fixture(scope="module")
def renderer() -> Iterator[ServiceThread]:
    if needs_chromium.args[0]:
        pytest.skip(needs_chromium.kwargs["reason"])
    with ServiceThread(render_settings(render_max_pages=2, render_timeout_s=30)) as running:
        yield running


@needs_chromium
def test_chromium_reaches_nothing_but_through_the_route(recorder: Recorder, renderer: ServiceThread) -> None:
    """A WebSocket is not routed by Playwright; Chromium's own network goes to a proxy that refuses
    every connection, so even to an allowed host it never arrives. The routed image does."""
    page = renderer.render({"url": f"{recorder.base}/sockets", "wait_until": "networkidle", "fallback": None})
    assert page["engine"] == "chromium" and page["text"] == "socket page"
    paths = recorder.paths()
    assert "/pixel.png" in paths and "/ws" not in paths


@needs_chromium
def test_an_empty_error_page_answers_its_status_without_retries(
    recorder: Recorder, renderer: ServiceThread
) -> None:
    before = recorder.paths().count("/empty-404")
    page = renderer.render({"url": f"{recorder.base}/empty-404", "fallback": None})
    assert page["engine"] == "chromium" and page["status"] == 404 and page["text"] == ""
    assert recorder.paths().count("/empty-404") - before == 1


@needs_chromium
def test_a_cancelled_render_frees_its_page(recorder: Recorder, renderer: ServiceThread) -> None:
    service = renderer.service

    async def scenario() -> None:
        task = asyncio.get_running_loop().create_task(
            service.render({"url": f"{recorder.base}/hold", "fallback": None})
        )
        deadline = time.monotonic() + 30
        while not (service.status()["pages_active"] >= 1 and "/hold" in recorder.paths()):
            assert time.monotonic() < deadline, "the held render never started"
            await asyncio.sleep(0.05)
        task.cancel()
        deadline = time.monotonic() + 10
        while service.status()["pages_active"] or service.load:
            assert time.monotonic() < deadline, f"the page was not freed: {service.status()}"
            await asyncio.sleep(0.05)

    renderer.call(scenario(), 60)
    recorder.release.set()
