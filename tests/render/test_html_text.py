"""HTML to text for the plain-HTTP render (`workers/render/html_text.py`, selectolax's Lexbor): pages
without `<body>`, table cells and definition lists, what is dropped, whitespace, the charset from the
header, a byte-order mark or `<meta>` (also through `fetch_page` against a loopback server), links
joined exactly as `urljoin` joins them, and a large page converted off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from scripts.bench_html import large_page
from workers.render.fetch import OFF_LOOP_BYTES, fetch_page, html_page
from workers.render.html_text import absolute_link, absolute_links, header_charset, page_text

BASE = "http://site.example/dir/page"


def text_of(html: str | bytes, charset: str | None = None) -> str:
    return page_text(html, BASE, charset).text


def test_a_page_without_body_or_head_tags_gives_its_text() -> None:
    page = page_text("<html><head><title>T</title><p>Hello <b>bold</b> world</p></html>", BASE)
    assert page.title == "T" and page.text == "Hello bold world"
    assert text_of("<title>Only</title>Loose text, no tags at all") == "Loose text, no tags at all"
    assert text_of("<p>one<p>two") == "one\ntwo"  # unclosed paragraphs, as a browser closes them


def test_table_cells_are_separated_and_rows_are_lines() -> None:
    html = """<table><caption>Prices</caption><thead><tr><th>name</th><th>value</th></tr></thead>
    <tbody><tr><td>a</td><td>1</td></tr><tr><td><b>b</b> c</td><td>2</td></tr>
    <tr><td>only</td></tr></tbody></table>after"""
    assert text_of(html).splitlines() == ["Prices", "name | value", "a | 1", "b c | 2", "only", "after"]
    nested = (
        "<table><tr><td>x</td><td><table><tr><td>i</td><td>j</td></tr></table></td><td>z</td></tr></table>"
    )
    assert text_of(nested).splitlines() == ["x |", "i | j", "| z"]  # each row its line, cells still apart
    assert text_of("<table><tr><td>1</td><td></td><td>3</td></tr></table>") == "1 |  | 3"  # columns kept


def test_definition_lists_lists_and_breaks_are_lines() -> None:
    html = "<dl><dt>term</dt><dd>its meaning</dd><dt>other</dt><dd>another</dd></dl><ul><li>a<li>b</ul>x<br>y"
    assert text_of(html).splitlines() == ["term", "its meaning", "other", "another", "a", "b", "x", "y"]
    assert text_of("<div><p>para</p>tail</div><span>in</span>line") == "para\ntail\ninline"


def test_scripts_styles_noscript_templates_and_svg_give_no_text() -> None:
    html = """<head><style>p { color: red }</style><script>var a = "in head";</script></head><body>
    <p>shown</p><script>document.write("script")</script><noscript><p>noscript<script>x</script></p></noscript>
    <template><p>template</p></template><svg><title>svg</title><style>s</style><text>svg text</text></svg>
    <iframe>iframe</iframe><p>end</p></body>"""
    assert text_of(html) == "shown\nend"


def test_whitespace_is_normalised_and_pre_keeps_its_lines() -> None:
    html = (
        "<p>  many\n\n   spaces\there\u00a0and\tthere  </p>\n\n<pre>line one\n  line two\n\nline four</pre>"
    )
    assert text_of(html).splitlines() == ["many spaces here and there", "line one", "line two", "line four"]
    assert text_of("<p>&lt;tag&gt; &amp; &eacute;</p>") == "<tag> & é"


def test_the_charset_from_meta_the_header_or_a_byte_order_mark() -> None:
    cyrillic = "Привет, мир"
    meta = f'<meta charset="windows-1251"><title>{cyrillic}</title><p>{cyrillic}</p>'.encode("cp1251")
    page = page_text(meta, BASE)
    assert page.title == cyrillic and page.text == cyrillic and cyrillic in page.html
    http_equiv = f'<meta http-equiv="Content-Type" content="text/html; charset=koi8-r"><p>{cyrillic}</p>'
    assert text_of(http_equiv.encode("koi8-r")) == cyrillic
    assert text_of(http_equiv.encode("koi8-r"), header_charset("text/html")) == cyrillic  # no charset given
    # The header wins over the page's meta; a byte-order mark wins over both.
    mislabelled = f'<meta charset="koi8-r"><p>{cyrillic}</p>'.encode("cp1251")
    assert text_of(mislabelled, header_charset("text/html; charset=windows-1251")) == cyrillic
    bom = "\ufeff<p>é ü</p>".encode()
    assert text_of(bom, header_charset("text/html; charset=iso-8859-1")) == "é ü"
    assert text_of("<p>é</p>".encode()) == "é"  # nothing declared: UTF-8
    assert header_charset('text/html; charset="UTF-8"') == "utf-8"
    assert header_charset("text/html; charset=no-such-charset") is None
    assert text_of(b"<p>\x80 \xe9</p>", header_charset("text/html; charset=ISO-8859-1")) == "\u20ac \u00e9"
    assert text_of(meta, header_charset("text/html; charset=no-such-charset")) == cyrillic  # meta then


def test_links_are_absolute_without_fragments_each_once() -> None:
    page = page_text(
        """<base href="/other/"><a href="a">a</a><a href="/b#frag">b</a><a href="https://x.example/c?q=1">c</a>
        <a href="javascript:void(0)">js</a><a href="mailto:m@example.org">m</a><a href="a#again">again</a>""",
        BASE,
    )
    assert page.links == ["http://site.example/other/a", "http://site.example/b", "https://x.example/c?q=1"]


HREF_TEXT = st.text(alphabet="ab/.?#:;%@ \tHTPSx0-", max_size=14)
SCHEMED = st.sampled_from(["http://", "https://", "http:", "//", "/"]).flatmap(
    lambda prefix: st.text(alphabet="ab/.?#:;x", max_size=10).map(lambda rest: prefix + rest)
)
BASES = st.sampled_from(
    [
        "http://site.example/dir/page",
        "https://h:8443/",
        "http://h",
        "http://h/d/p?q=1",
        "http://h/a//b/p",
        "http://h/a/./b",
        "https://u@h/x/",
        "http://h/d/p;x",
        "ftp://h/x",
    ]
)


@settings(max_examples=500, deadline=None)
@given(BASES, st.lists(HREF_TEXT | SCHEMED, max_size=5))
def test_links_are_joined_exactly_as_urljoin_joins_them(base: str, hrefs: list[str]) -> None:
    """`absolute_links` joins common shapes by concatenation: it must give `urljoin`'s answer always."""
    expected = list(dict.fromkeys(link for link in (absolute_link(base, href) for href in hrefs) if link))
    assert absolute_links(base, hrefs) == expected


class CharsetPages(http.server.BaseHTTPRequestHandler):
    """`/meta`: windows-1251 bytes, the charset only in `<meta>`; `/header`: the charset in the header."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        text = "Привет"
        if self.path == "/meta":
            body = f'<meta charset="windows-1251"><title>{text}</title><p>{text}</p>'.encode("cp1251")
            content_type = "text/html"
        else:
            body = f"<title>{text}</title><p>{text}</p>".encode("koi8-r")
            content_type = "text/html; charset=KOI8-R"
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def charset_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CharsetPages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_plain_fetch_decodes_by_meta_when_the_header_names_no_charset() -> None:
    with charset_server() as base:

        async def scenario() -> None:
            for path in ("/meta", "/header"):
                page = await fetch_page(f"{base}{path}", ["127.0.0.1"], 10, 1 << 20, want_html=True)
                assert (page["title"], page["text"]) == ("Привет", "Привет"), path
                assert "Привет" in page["html"], path

        asyncio.run(scenario())


def test_a_large_page_is_converted_off_the_event_loop() -> None:
    """A 5 ms ticker (the render process's heartbeats stand for it) keeps ticking while `html_page`
    converts a page over `OFF_LOOP_BYTES`; the same conversion run on the loop stops it (so the
    measure can tell the two apart)."""
    body = large_page(3_000_000)
    assert len(body) > OFF_LOOP_BYTES

    async def ticks_during(convert: Any) -> tuple[int, float]:
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
        return sum(1 for tick in ticks if began < tick < ended), ended - began

    async def on_loop() -> None:
        page_text(body, BASE)

    async def off_loop() -> None:
        page = await html_page(body, BASE, None)
        assert page.title == "A large page" and len(page.links) > 1000

    async def scenario() -> None:
        blocked, _ = await ticks_during(on_loop)
        ticked, took = await ticks_during(off_loop)
        assert blocked == 0
        assert ticked >= 3, f"{ticked} ticks in {took:.3f} s of conversion"

    asyncio.run(scenario())
