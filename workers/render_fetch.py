"""The plain-HTTP path of the render process: fetch with httpx (every redirect hop checked by the
SSRF guard, the body size capped) and turn HTML into title, text and links with the stdlib parser.
It runs no JavaScript: a page that builds its text in the browser shows none of it here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urldefrag, urljoin

import httpx

from scheduler.ssrf import check_url

MAX_REDIRECTS = 10
SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "head"})
BLOCK_TAGS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
                        "header", "footer", "table", "ul", "ol", "pre", "blockquote"})


class RefusedUrl(Exception):
    """The SSRF guard refused a URL (the first one, or a redirect hop)."""


class ResponseTooLarge(Exception):
    pass


class PageText(HTMLParser):
    """Title, visible text and absolute links of an HTML document."""

    def __init__(self, base_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.title_parts: list[str] = []
        self.text_parts: list[str] = []
        self.links: list[str] = []
        self.skipping = 0
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        elif tag in SKIPPED_TAGS:
            self.skipping += 1
        elif tag == "base":
            href = dict(attrs).get("href")
            if href:
                self.base_url = urljoin(self.base_url, href)
        elif tag == "a":
            href = dict(attrs).get("href")
            if href and not href.startswith(("javascript:", "mailto:", "#")):
                self.links.append(urldefrag(urljoin(self.base_url, href))[0])
        if tag in BLOCK_TAGS:
            self.text_parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in SKIPPED_TAGS and self.skipping:
            self.skipping -= 1
        if tag in BLOCK_TAGS:
            self.text_parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title_parts.append(data)
        elif not self.skipping:
            self.text_parts.append(data)

    @property
    def title(self) -> str:
        return " ".join("".join(self.title_parts).split())

    @property
    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self.text_parts).splitlines())
        return "\n".join(line for line in lines if line)


def extract(html: str, base_url: str) -> dict[str, Any]:
    parser = PageText(base_url)
    parser.feed(html)
    parser.close()
    return {"title": parser.title, "text": parser.text, "links": list(dict.fromkeys(parser.links))}


async def guarded(url: str, allow_hosts: Iterable[str]) -> None:
    verdict = await asyncio.to_thread(check_url, url, tuple(allow_hosts))
    if not verdict.allowed:
        raise RefusedUrl(f"refused {url}: {verdict.reason}")


async def fetch_page(url: str, allow_hosts: Iterable[str], timeout_s: float, max_bytes: int,
                     want_html: bool = False) -> dict[str, Any]:
    """GET `url` following redirects by hand, each hop checked; the render result of the page."""
    started = time.perf_counter()
    allow = tuple(allow_hosts)
    current = url
    async with httpx.AsyncClient(follow_redirects=False, timeout=timeout_s, trust_env=False,
                                 headers={"User-Agent": "modelsched-render/0.1 (+http fallback)"}) as client:
        for _ in range(MAX_REDIRECTS + 1):
            await guarded(current, allow)
            async with client.stream("GET", current) as response:
                if response.is_redirect and "location" in response.headers:
                    current = urljoin(current, response.headers["location"])
                    continue
                body = await _read_capped(response, max_bytes)
                status = response.status_code
                content_type = response.headers.get("content-type", "")
                encoding = response.encoding or "utf-8"
                break
        else:
            raise RefusedUrl(f"more than {MAX_REDIRECTS} redirects from {url}")
    html = body.decode(encoding, errors="replace")
    page = extract(html, current) if "html" in content_type or not content_type else {
        "title": "", "text": html, "links": []}
    result = {"url": url, "final_url": current, "status": status, **page,
              "elapsed_ms": round((time.perf_counter() - started) * 1000, 1), "engine": "http"}
    if want_html:
        result["html"] = html
    return result


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLarge(f"the response is {declared} bytes; the limit is {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise ResponseTooLarge(f"the response exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
