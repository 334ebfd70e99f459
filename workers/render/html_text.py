"""HTML to text for the render process's plain-HTTP path: title, visible text and absolute links of
a document, parsed by selectolax's Lexbor engine (an HTML5 parser, so a page without `<head>` or
`<body>` tags is read the way a browser reads it; no JavaScript runs: text that a page builds in
the browser is not there).

The text is what a reader sees, one block a line: paragraphs, headings, list items, table rows,
`dt` and `dd` each on their own line, a row's cells joined by " | ", whitespace collapsed (a `<pre>`
keeps its lines); scripts, styles, `noscript`, templates, SVG and iframes give none.

The bytes are decoded with the charset of the HTTP header when it names one (a byte-order mark
wins over it, as in a browser), else with the `<meta charset>` or `<meta http-equiv=content-type>`
of the page's first 1024 bytes (Lexbor's detection, which follows the HTML Standard), else as UTF-8.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urldefrag, urljoin, urlsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode

DROPPED_TAGS = ["script", "style", "noscript", "template", "svg", "iframe"]
BLOCK_TAGS = [  # a line of their own: a marker before and at their end
    "address",
    "article",
    "aside",
    "blockquote",
    "body",
    "caption",
    "details",
    "dialog",
    "div",
    "dl",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hgroup",
    "legend",
    "main",
    "menu",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "select",
    "summary",
    "table",
    "ul",
]
# Items of a list-like parent (which has its own end marker), and void breaks: a marker before them.
ITEM_TAGS = ["li", "dt", "dd", "tr", "option", "br", "hr"]
CELL_TAGS = ["td", "th"]
PREFORMATTED_TAGS = ["pre", "textarea", "listing", "xmp"]  # their line ends are lines
LINK_SCHEMES = ("http:", "https:")
UNUSUAL_IN_HREF = re.compile(r"[\t\r\n\\;]")  # characters urljoin treats apart
BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# The Encoding Standard reads these labels as windows-1252 (browsers do; pages labelled so use it).
AS_WINDOWS_1252 = frozenset({"iso8859-1", "ascii"})
# Markers put into the tree where lines and cells end: Unicode noncharacters, never text of a page.
LINE = "\ufdd0"
CELL = "\ufdd1"


def _tag_ids(tags: list[str]) -> frozenset[int]:
    factory = LexborHTMLParser("")
    return frozenset(factory.create_node(tag).tag_id for tag in tags)


BLOCK_IDS = _tag_ids(BLOCK_TAGS)
ITEM_IDS = _tag_ids(ITEM_TAGS)
CELL_IDS = _tag_ids(CELL_TAGS)
PREFORMATTED_IDS = _tag_ids(PREFORMATTED_TAGS)
ROW_ID = LexborHTMLParser("").create_node("tr").tag_id


@dataclass(frozen=True)
class PageText:
    """What the plain-HTTP render keeps of a page: its title, its text, its http(s) links (absolute,
    without fragments, each once, in order) and the document as decoded text."""

    title: str
    text: str
    links: list[str]
    html: str


def absolute_link(base_url: str, href: str) -> str | None:
    """`href` made absolute against `base_url`, without its fragment; None unless http(s)."""
    link = urldefrag(urljoin(base_url, href.strip()))[0]
    return link if link.lower().startswith(LINK_SCHEMES) else None


def _joined(href: str, origin: str, directory: str) -> str | None:
    """`href` (no fragment, no character `urljoin` treats apart) joined by concatenation when it has
    one of the common shapes, with no dot or empty segment; None otherwise."""
    if href.startswith(("http://", "https://")):
        host_at = href.index("//") + 2
        slash = href.find("/", host_at)
        if slash <= host_at or "?" in href[host_at:slash]:
            return None
        path, joined = href[slash:], href
    elif href[0] == "/":
        path, joined = href, origin + href
    elif href[0].isalnum() and ":" not in href.partition("/")[0]:
        path, joined = "/" + href, directory + href
    else:
        return None
    return None if "//" in path or "/." in path or href.endswith("?") else joined


def absolute_links(base_url: str, hrefs: Iterable[str]) -> list[str]:
    """`absolute_link` of each href, each link once, in order. The common shapes (`/path`, `path`,
    `https://host/path`, each with a query or not) are joined by concatenation, which gives what
    `urljoin` gives for them at a fraction of its cost (a page has thousands of links); anything else
    (dot segments, empty segments, `?q` alone, `//host`, other schemes) goes to `urljoin`."""
    base = urlsplit(base_url)
    origin = f"{base.scheme}://{base.netloc}"
    directory = origin + (base.path[: base.path.rfind("/") + 1] or "/")
    plain_base = base.scheme in ("http", "https") and "//" not in base.path and "/." not in base.path
    links: dict[str, None] = {}
    for raw in hrefs:
        href = raw.strip().partition("#")[0]
        plain = plain_base and href and UNUSUAL_IN_HREF.search(href) is None
        link = (_joined(href, origin, directory) if plain else None) or absolute_link(base_url, raw)
        if link:
            links[link] = None
    return list(links)


def header_charset(content_type: str) -> str | None:
    """The charset a `Content-Type` header names, when Python has a codec of that name (ISO-8859-1 and
    US-ASCII read as windows-1252, as browsers read them)."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip("'\"")
            try:
                codec = codecs.lookup(charset).name if charset else None
            except LookupError:
                return None
            return "cp1252" if codec in AS_WINDOWS_1252 else codec
    return None


def parse(document: bytes | str, charset: str | None = None) -> LexborHTMLParser:
    """The parsed document: `charset` (the HTTP header's) decodes the bytes unless they begin with a
    byte-order mark; without one, Lexbor reads the charset from the page's `<meta>`."""
    if isinstance(document, str):
        return LexborHTMLParser(document)
    if charset is not None and not document.startswith(BOMS):
        return LexborHTMLParser(document.decode(charset, errors="replace"))
    return LexborHTMLParser(document, encoding=True)


def title_of(tree: LexborHTMLParser) -> str:
    title = tree.css_first("title")
    return " ".join(title.text().split()) if title is not None else ""


def links_of(tree: LexborHTMLParser, base_url: str) -> list[str]:
    base = tree.css_first("base[href]")
    base_href = base.attributes.get("href") if base is not None else None
    if base_href:
        base_url = urljoin(base_url, base_href.strip())
    return absolute_links(base_url, (anchor.attributes.get("href") or "" for anchor in tree.css("a[href]")))


def _for_text(method: Callable[..., None]) -> Callable[[LexborNode, str], None]:
    """A selectolax insertion method bound to its `str` signature: a Cython fused function picks its
    signature on every call otherwise, which costs more than the insertion itself."""
    specialised: Callable[[LexborNode, str], None] = getattr(method, "__signatures__", {}).get("str", method)
    return specialised


insert_before = _for_text(LexborNode.insert_before)
insert_child = _for_text(LexborNode.insert_child)


def mark_lines(tree: LexborHTMLParser) -> None:
    """Put LINE markers around every block and before every list item, row and break, a CELL marker
    between the cells of a row, and LINE markers for the line ends of preformatted text."""
    body = tree.body
    if body is None:
        return
    blocks: list[LexborNode] = []
    items: list[LexborNode] = []
    cells: list[LexborNode] = []
    preformatted: list[LexborNode] = []
    first_cell = False
    for node in body.traverse():  # the tree is changed once the walk is over
        tag_id = node.tag_id
        if tag_id in BLOCK_IDS:
            blocks.append(node)
            if tag_id in PREFORMATTED_IDS:
                preformatted.append(node)
        elif tag_id in CELL_IDS:
            if not first_cell:
                cells.append(node)
            first_cell = False
        elif tag_id in ITEM_IDS:
            items.append(node)
            if tag_id == ROW_ID:
                first_cell = True
        elif tag_id in PREFORMATTED_IDS:
            preformatted.append(node)
    for node in blocks:
        insert_before(node, LINE)
        insert_child(node, LINE)
    for node in items:
        insert_before(node, LINE)
    for node in cells:
        insert_before(node, CELL)
    for pre in preformatted:
        texts = [node for node in pre.traverse(include_text=True) if node.is_text_node]
        for node in texts:
            content = node.text_content
            if content and "\n" in content:
                node.replace_with(content.replace("\n", LINE))


def lines_of(marked: str) -> str:
    """The text of a marked tree: whitespace collapsed, one line per block, cells joined by " | "."""
    lines = []
    for piece in marked.split(LINE):
        words = piece.split()
        if not words:
            continue
        line = " ".join(words)
        if CELL in line:
            line = " | ".join(cell.strip() for cell in line.split(CELL)).strip()
        if line:
            lines.append(line)
    return "\n".join(lines)


def page_text(document: bytes | str, base_url: str, charset: str | None = None) -> PageText:
    """Title, text and links of an HTML document fetched from `base_url` (`charset`: the HTTP
    header's, if it gave one)."""
    tree = parse(document, charset)
    html = document if isinstance(document, str) else tree.raw_html.decode("utf-8", errors="replace")
    tree.strip_tags(DROPPED_TAGS)  # a tag at a time: one inside another is gone with it, never freed twice
    title = title_of(tree)
    links = links_of(tree, base_url)
    mark_lines(tree)
    text = lines_of(tree.body.text(deep=True)) if tree.body is not None else ""
    return PageText(title, text, links, html)


def extract(document: bytes | str, base_url: str, charset: str | None = None) -> dict[str, object]:
    """{title, text, links} of an HTML document fetched from `base_url`."""
    page = page_text(document, base_url, charset)
    return {"title": page.title, "text": page.text, "links": page.links}
