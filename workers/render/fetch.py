"""Fetching for the render process, with the SSRF guard on every hop: the plain-HTTP path (httpx,
then `workers.render.html_text`) and the fetches that the browser's requests are routed through.

Each URL is checked by `workers.render.ssrf.check_url` before it is requested; the host is resolved once
per fetcher (one render) and the connection goes to an address that was checked (the request is sent
to the IP, with the name in `Host` and as the TLS server name, so a DNS answer that changes between
the check and the connect is never used). Redirects are followed by hand, each hop checked; the
body is read in chunks and refused past `max_bytes` (decoded size, so a compressed bomb stops too).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import httpx

from workers.render.html_text import PageText, header_charset, page_text
from workers.render.ssrf import UrlVerdict, check_url, normalized_host

MAX_REDIRECTS = 10
USER_AGENT = "modelsched-render/0.1"
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml", "+xml", "+json")
# Hop-by-hop and framing headers: never forwarded from the browser, never handed back to it.
REQUEST_HEADERS_DROPPED = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "transfer-encoding",
        "content-length",
        "te",
        "upgrade",
        "accept-encoding",
    }
)
RESPONSE_HEADERS_DROPPED = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "proxy-authenticate",
        "trailer",
        "upgrade",
    }
)

OFF_LOOP_BYTES = 256 * 1024  # a larger page is turned into text in a thread: heartbeats go on meanwhile

Checker = Callable[[str], Awaitable[UrlVerdict]]


class RefusedUrl(Exception):
    """The SSRF guard refused a URL (the first one, or a redirect hop)."""


class ResponseTooLarge(Exception):
    """A response body is larger than the render process keeps."""


@dataclass
class Fetched:
    """One response: the URL that answered, its status, headers and (decoded) body. `location` is
    set when the fetch stopped at a redirect instead of following it."""

    url: str
    status: int
    headers: httpx.Headers
    body: bytes
    location: str | None = None


def pinned_request(url: httpx.URL, address: str | None) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
    """(URL to send to, extra headers, httpx extensions) for a request to `url` that must connect to
    `address`: the address replaces the host, the name goes in `Host` and as the TLS server name
    (certificates are still checked against the name). No address: the URL as it is."""
    name = url.raw_host.decode("ascii")
    if address is None or normalized_host(name) == normalized_host(address):
        return url, {}, {}
    target = url.copy_with(host=address.split("%", 1)[0])
    extensions: dict[str, Any] = {"sni_hostname": name} if url.scheme == "https" else {}
    return target, {"Host": url.netloc.decode("ascii")}, extensions


def redirect_method(status: int, method: str) -> str:
    """The method of the request that follows a redirect (as browsers do)."""
    if status == 303 and method != "HEAD" or status in (301, 302) and method == "POST":
        return "GET"
    return method


def is_text(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return not kind or any(marker in kind for marker in TEXT_TYPES)


async def read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLarge(
            f"the response of {response.request.url} is {declared} bytes; the limit is {max_bytes}"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise ResponseTooLarge(f"the response exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class GuardedFetcher:
    """The fetches of one render. Verdicts are kept per scheme, host and port (one DNS query per
    host); each host gets its own connection pool, so a connection made for one name is never
    reused for another name on the same address."""

    allow_hosts: Iterable[str]
    max_bytes: int
    timeout_s: float
    check: Checker | None = None
    refused: list[str] = field(default_factory=list)
    verdicts: dict[tuple[str, str, int], UrlVerdict] = field(default_factory=dict)
    clients: dict[tuple[str, str, int], httpx.AsyncClient] = field(default_factory=dict)

    async def _check(self, url: str) -> UrlVerdict:
        if self.check is not None:
            return await self.check(url)
        return await asyncio.to_thread(check_url, url, tuple(self.allow_hosts))

    async def verdict(self, url: httpx.URL) -> UrlVerdict:
        """The guard's verdict for `url` (cached per origin); raises RefusedUrl when refused."""
        host = normalized_host(url.raw_host.decode("ascii"))
        key = (url.scheme, host, url.port or (443 if url.scheme == "https" else 80))
        verdict = self.verdicts.get(key)
        if verdict is None:
            verdict = await self._check(str(url))
            if verdict.allowed and verdict.host and verdict.host != host:
                verdict = UrlVerdict(False, f"the URL's host reads both as {verdict.host!r} and as {host!r}")
            self.verdicts[key] = verdict
        if not verdict.allowed:
            message = f"refused {url}: {verdict.reason}"
            if message not in self.refused:
                self.refused.append(message)
            raise RefusedUrl(message)
        return verdict

    def _client(self, url: httpx.URL) -> httpx.AsyncClient:
        key = (url.scheme, url.raw_host.decode("ascii"), url.port or 0)
        client = self.clients.get(key)
        if client is None:
            client = httpx.AsyncClient(
                follow_redirects=False,
                timeout=self.timeout_s,
                trust_env=False,
                headers={"User-Agent": USER_AGENT},
            )
            self.clients[key] = client
        return client

    async def fetch(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        follow_redirects: bool = True,
    ) -> Fetched:
        """One request (and, when following, its redirects), every hop checked before it is sent."""
        current = httpx.URL(url)
        for _ in range(MAX_REDIRECTS + 1):
            response_headers, status, body = await self._send(method, current, headers, content)
            location = response_headers.get("location")
            if not (300 <= status < 400 and location):
                return Fetched(str(current), status, response_headers, body)
            target = urljoin(str(current), location)
            if not follow_redirects:
                return Fetched(str(current), status, response_headers, body, location=target)
            method = redirect_method(status, method)
            if method == "GET":
                content = None
            current = httpx.URL(target)
        raise RefusedUrl(f"more than {MAX_REDIRECTS} redirects from {url}")

    async def _send(
        self, method: str, url: httpx.URL, headers: Mapping[str, str] | None, content: bytes | None
    ) -> tuple[httpx.Headers, int, bytes]:
        verdict = await self.verdict(url)
        client = self._client(url)
        forwarded = {
            name: value
            for name, value in (headers or {}).items()
            if name.lower() not in REQUEST_HEADERS_DROPPED
        }
        addresses: list[str | None] = list(verdict.addresses) or [None]
        for index, address in enumerate(addresses):
            target, pin_headers, extensions = pinned_request(url, address)
            request = client.build_request(
                method, target, headers={**forwarded, **pin_headers}, content=content, extensions=extensions
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.ConnectError:
                if index + 1 < len(addresses):
                    continue  # the next checked address
                raise
            try:
                body = await read_capped(response, self.max_bytes)
            finally:
                await response.aclose()
            return response.headers, response.status_code, body
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                await client.aclose()
        self.clients.clear()


async def html_page(body: bytes, url: str, charset: str | None) -> PageText:
    """`body` as text (`workers.render.html_text`): on the loop when small, in a thread past
    `OFF_LOOP_BYTES`, so the render process's loop (its heartbeats, its other pages) is not held up."""
    if len(body) > OFF_LOOP_BYTES:
        return await asyncio.to_thread(page_text, body, url, charset)
    return page_text(body, url, charset)


async def fetch_page(
    url: str,
    allow_hosts: Iterable[str],
    timeout_s: float,
    max_bytes: int,
    want_html: bool = False,
    check: Checker | None = None,
) -> dict[str, Any]:
    """The plain-HTTP render of `url`: GET it (redirects followed by hand, each hop checked) within
    `timeout_s` in all, and extract title, text and links."""
    started = time.perf_counter()
    fetcher = GuardedFetcher(allow_hosts, max_bytes, timeout_s, check)
    try:
        async with asyncio.timeout(timeout_s):
            fetched = await fetcher.fetch("GET", url)
    finally:
        await fetcher.aclose()
    content_type = fetched.headers.get("content-type", "")
    charset = header_charset(content_type)
    if "html" in content_type.lower() or not content_type:
        page = await html_page(fetched.body, fetched.url, charset)
        html, found = page.html, {"title": page.title, "text": page.text, "links": page.links}
    else:
        html = fetched.body.decode(charset or "utf-8", errors="replace")
        found = {"title": "", "text": html if is_text(content_type) else "", "links": []}
    result: dict[str, Any] = {
        "url": url,
        "final_url": fetched.url,
        "status": fetched.status,
        **found,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
        "engine": "http",
    }
    if want_html:
        result["html"] = html
    return result
