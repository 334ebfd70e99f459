"""HTML to text for the render process's plain-HTTP path: title, visible text and absolute links of
a document, with the standard library's `html.parser` (no JavaScript runs: text that a page builds
in the browser is not there)."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import urldefrag, urljoin

SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "head", "svg"})
BLOCK_TAGS = frozenset(
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
LINK_SCHEMES = ("http:", "https:")


def absolute_link(base_url: str, href: str) -> str | None:
    """`href` made absolute against `base_url`, without its fragment; None unless http(s)."""
    link = urldefrag(urljoin(base_url, href.strip()))[0]
    return link if link.lower().startswith(LINK_SCHEMES) else None


class PageText(HTMLParser):
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
        elif tag in SKIPPED_TAGS:
            self.skipping += 1
        elif tag == "base":
            href = dict(attrs).get("href")
            if href:
                self.base_url = urljoin(self.base_url, href)
        elif tag == "a":
            href = dict(attrs).get("href")
            link = absolute_link(self.base_url, href) if href else None
            if link:
                self.links.append(link)
        if tag in BLOCK_TAGS:
            self.text_parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in SKIPPED_TAGS:  # <svg/> opens nothing to skip
            self.handle_starttag(tag, attrs)

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
    """{title, text, links} of an HTML document fetched from `base_url`."""
    parser = PageText(base_url)
    parser.feed(html)
    parser.close()
    return {"title": parser.title, "text": parser.text, "links": list(dict.fromkeys(parser.links))}
