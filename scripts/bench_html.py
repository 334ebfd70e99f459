#!/usr/bin/env python
"""HTML to text in the render process's plain-HTTP path: the standard-library parser it had before
(kept here, and only here, to be measured against) and `workers.render.html_text` (selectolax's
Lexbor engine), on the same generated page of about 1.4 MB.

    .venv/bin/python scripts/bench_html.py              # 15 rounds, alternating; the minimum and median of each
    .venv/bin/python scripts/bench_html.py --mb 5 --rounds 5

Each round turns the page's bytes into {title, text, links} both ways (decoding included: the old
path decoded with the header's charset, the new one lets Lexbor read the bytes). The rounds alternate
old and new, so a neighbour's load on a shared machine weighs on both alike. Then the render process's
view: how long an asyncio loop ticking every 5 ms goes without a tick while the page is converted on
the loop, and while `fetch.html_page` converts it (in a thread: the page is over `OFF_LOOP_BYTES`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.render.fetch import OFF_LOOP_BYTES, html_page  # noqa: E402
from workers.render.html_text import page_text  # noqa: E402

WORDS = [
    "the",
    "scheduler",
    "places",
    "jobs",
    "onto",
    "workers",
    "of",
    "every",
    "card",
    "while",
    "a",
    "queue",
    "holds",
    "what",
    "waits",
    "and",
    "a",
    "journal",
    "keeps",
    "what",
    "was",
    "acknowledged",
    "latency",
    "throughput",
    "model",
    "batch",
    "render",
    "page",
]


def large_page(size: int, seed: int = 7) -> bytes:
    """An article-like page of about `size` bytes: a navigation list, headings, paragraphs with links
    and inline markup, tables, lists, definition lists, inline scripts and styles."""
    rng = random.Random(seed)

    def sentence(words: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>A large page</title>"
        "<style>p { color: #333 }</style><script>var config = {a: 1};</script></head><body><nav><ul>",
        *(f"<li><a href='/nav/{n}'>Section {n}</a></li>" for n in range(200)),
        "</ul></nav><main>",
    ]
    size_so_far, section = sum(map(len, parts)), 0
    while size_so_far < size:
        section += 1
        block = [f"<h2 id='s{section}'>Heading {section}</h2>"]
        block += [
            f"<p>{sentence(20)} <a href='/wiki/{section}_{rng.randrange(999)}#x'>{sentence(3)}</a> "
            f"<b>{sentence(4)}</b>\n  {sentence(12)}</p>"
            for _ in range(4)
        ]
        rows = "".join(
            f"<tr><td>{rng.choice(WORDS)}</td><td>{rng.random():.4f}</td><td>ms</td></tr>" for _ in range(8)
        )
        block.append(f"<table><tr><th>name</th><th>value</th><th>unit</th></tr>{rows}</table>")
        block.append("<ul>" + "".join(f"<li>{sentence(6)}</li>" for _ in range(5)) + "</ul>")
        block.append(f"<dl><dt>term</dt><dd>{sentence(8)}</dd></dl><script>console.log({section})</script>")
        size_so_far += sum(map(len, block))
        parts += block
    parts.append("</main></body></html>")
    return "".join(parts).encode()


# ---- the implementation before (workers/render/html_text.py at main 79be4cb), for comparison only --

OLD_LINK_SCHEMES = ("http:", "https:")


def old_absolute_link(base_url: str, href: str) -> str | None:
    link = urldefrag(urljoin(base_url, href.strip()))[0]
    return link if link.lower().startswith(OLD_LINK_SCHEMES) else None


OLD_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "head", "svg"})
OLD_BLOCK_TAGS = frozenset(
    {
        "p",
        "div",
        "br",
        "li",
        "tr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "section",
        "article",
        "header",
        "footer",
        "table",
        "ul",
        "ol",
        "pre",
        "blockquote",
        "main",
        "nav",
        "aside",
    }
)


class OldPageText(HTMLParser):
    """Collects title, visible text and links while parsing."""

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
        elif tag == "body":
            self.skipping = 0  # a <head> left open (its end tag is optional) ends here
        elif tag in OLD_SKIPPED_TAGS:
            self.skipping += 1
        elif tag == "base":
            href = dict(attrs).get("href")
            if href:
                self.base_url = urljoin(self.base_url, href)
        elif tag == "a":
            href = dict(attrs).get("href")
            link = old_absolute_link(self.base_url, href) if href else None
            if link:
                self.links.append(link)
        if tag in OLD_BLOCK_TAGS:
            self.text_parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in OLD_SKIPPED_TAGS:  # <svg/> opens nothing to skip
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in OLD_SKIPPED_TAGS and self.skipping:
            self.skipping -= 1
        if tag in OLD_BLOCK_TAGS:
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


def old_extract(body: bytes, base_url: str) -> dict[str, Any]:
    parser = OldPageText(base_url)
    parser.feed(body.decode("utf-8", errors="replace"))
    parser.close()
    return {"title": parser.title, "text": parser.text, "links": list(dict.fromkeys(parser.links))}


def new_extract(body: bytes, base_url: str) -> dict[str, Any]:
    page = page_text(body, base_url)
    return {"title": page.title, "text": page.text, "links": page.links}


# ---- measuring ---------------------------------------------------------------------------------


def timed(convert: Callable[[bytes, str], dict[str, Any]], body: bytes) -> tuple[float, float]:
    """(wall, CPU) seconds of one conversion; CPU time is what a busy shared machine distorts least."""
    began, began_cpu = time.perf_counter(), time.process_time()
    convert(body, "http://site.example/article")
    return time.perf_counter() - began, time.process_time() - began_cpu


async def longest_stall(convert: Callable[[], Any]) -> tuple[float, int]:
    """(longest gap between ticks of a 5 ms ticker, ticks) while `convert()` is awaited."""
    ticks: list[float] = []
    running = True

    async def ticker() -> None:
        while running:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    began = time.perf_counter()
    await convert()
    ended = time.perf_counter()
    running = False
    await task
    during = [began] + [tick for tick in ticks if began <= tick <= ended] + [ended]
    return max(b - a for a, b in zip(during, during[1:], strict=False)), len(during) - 2


async def stalls(body: bytes) -> dict[str, Any]:
    async def on_loop() -> None:
        page_text(body, "http://site.example/article")

    async def off_loop() -> None:
        await html_page(body, "http://site.example/article", None)

    inline, inline_ticks = await longest_stall(on_loop)
    threaded, threaded_ticks = await longest_stall(off_loop)
    return {
        "on_loop_longest_gap_ms": round(inline * 1000, 1),
        "on_loop_ticks": inline_ticks,
        "html_page_longest_gap_ms": round(threaded * 1000, 1),
        "html_page_ticks": threaded_ticks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=1.4, help="page size in MB (default 1.4)")
    parser.add_argument("--rounds", type=int, default=15, help="rounds of old then new (default 15)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    body = large_page(int(args.mb * 1_000_000))
    old_page, new_page = old_extract(body, "http://x/"), new_extract(body, "http://x/")
    old_runs: list[tuple[float, float]] = []
    new_runs: list[tuple[float, float]] = []
    for _ in range(args.rounds):
        old_runs.append(timed(old_extract, body))
        new_runs.append(timed(new_extract, body))
    figures: dict[str, Any] = {
        "page_bytes": len(body),
        "links": len(new_page["links"]),
        "text_chars_old": len(old_page["text"]),
        "text_chars_new": len(new_page["text"]),
        "rounds": args.rounds,
    }
    for kind, index in (("wall", 0), ("cpu", 1)):
        old_s = [run[index] for run in old_runs]
        new_s = [run[index] for run in new_runs]
        figures[kind] = {
            "old_min_ms": round(min(old_s) * 1000, 1),
            "old_median_ms": round(statistics.median(old_s) * 1000, 1),
            "new_min_ms": round(min(new_s) * 1000, 1),
            "new_median_ms": round(statistics.median(new_s) * 1000, 1),
            "speedup_min": round(min(old_s) / min(new_s), 1),
            "speedup_median": round(statistics.median(old_s) / statistics.median(new_s), 1),
        }
    figures["off_loop_bytes"] = OFF_LOOP_BYTES
    figures.update(asyncio.run(stalls(body)))
    print(f"page {figures['page_bytes']:,} bytes, {figures['links']:,} links, {args.rounds} rounds")
    print("                 old (html.parser)     new (selectolax)      speed-up")
    print("                 min      median       min      median       min   median")
    for kind in ("wall", "cpu"):
        row = figures[kind]
        print(
            f"{kind + ' ms':<16} {row['old_min_ms']:<8} {row['old_median_ms']:<12} {row['new_min_ms']:<8} "
            f"{row['new_median_ms']:<12} {row['speedup_min']:<5} {row['speedup_median']}"
        )
    print(
        f"a 5 ms ticker's longest gap: converted on the loop {figures['on_loop_longest_gap_ms']} ms "
        f"({figures['on_loop_ticks']} ticks), by fetch.html_page {figures['html_page_longest_gap_ms']} ms "
        f"({figures['html_page_ticks']} ticks)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
