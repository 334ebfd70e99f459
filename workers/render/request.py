"""`RenderRequest`: the one shape of a render request, with its validation.

It is `POST /render`'s body, a `render` job's inputs (which may also be a bare URL), what the
Python client builds from its arguments, and what the render process receives (inside
`workers.render.protocol.RenderJob`). A new render option is a field here, read in
`workers.render.main` (and in `workers.render.browser` when the browser uses it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

import msgspec

from workers.render.ssrf import check_url_offline

MAX_RENDER_TIMEOUT_S = 300.0
WaitUntil = Literal["load", "domcontentloaded", "networkidle"]
Engine = Literal["browser", "http"]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=MAX_RENDER_TIMEOUT_S)]


class UrlRefused(ValueError):
    """The SSRF guard refused the request's URL."""


class RenderRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One page to render.

    url: http(s) URL; refused unless the SSRF guard lets it through (`workers.render.ssrf`)
    wait_until: the browser's notion of loaded: load | domcontentloaded | networkidle
    screenshot: add a PNG screenshot (base64) to the result
    html: add the page's HTML to the result
    engine: browser (Chromium) | http (a plain fetch; no JavaScript runs)
    fallback: "http" to fetch the page plainly when the browser fails; None for no fallback
    timeout_s: time one try may take (default: `render_timeout_s`)
    """

    url: str
    wait_until: WaitUntil = "load"
    screenshot: bool = False
    html: bool = False
    engine: Engine = "browser"
    fallback: Literal["http"] | None = "http"
    timeout_s: Seconds | None = None

    def check(self, allow_hosts: Iterable[str] = ()) -> RenderRequest:
        """The checks a type cannot make: a URL that is there, and the SSRF guard without DNS (the render
        process checks the URL again, resolved, before every request it makes). ValueError names the
        field; a refused URL raises UrlRefused."""
        if not self.url:
            raise ValueError("inputs.url must be a non-empty string")
        verdict = check_url_offline(self.url, allow_hosts)
        if not verdict.allowed:
            raise UrlRefused(f"the URL is refused: {verdict.reason}")
        return self


FIELDS = frozenset(RenderRequest.__struct_fields__)
CHOICES = {
    "wait_until": "load, domcontentloaded or networkidle",
    "engine": "browser or http",
    "fallback": "http or null",
}


def parse_render_request(inputs: Any, allow_hosts: Iterable[str] = ()) -> RenderRequest:
    """A URL, or an object with the fields of `RenderRequest` -> the request; ValueError naming the
    field at fault (`inputs.url`, `inputs.timeout_s` ...)."""
    if isinstance(inputs, RenderRequest):
        return inputs.check(allow_hosts)
    fields = {"url": inputs} if isinstance(inputs, str) else inputs
    if not isinstance(fields, dict):
        raise ValueError("inputs must be a URL or an object with a 'url'")
    unknown = set(fields) - FIELDS
    if unknown:
        raise ValueError(f"inputs has unknown fields {sorted(unknown)}; known: {sorted(FIELDS)}")
    try:
        request = msgspec.convert(fields, RenderRequest)
    except msgspec.ValidationError as exc:
        raise ValueError(_name_field(str(exc))) from None
    return request.check(allow_hosts)


def _name_field(message: str) -> str:
    """msgspec's "Expected `bool`, got `str` - at `$.html`" as "inputs.html: expected bool, got str"."""
    text, _, where = message.partition(" - at `$.")
    field = where.rstrip("`")
    if not field and "missing required field `" in text:
        field = text.split("`")[1]
    text = text.replace("`", "")
    if field in CHOICES:
        text = f"{text}; must be {CHOICES[field]}"
    return f"inputs.{field}: {text[:1].lower()}{text[1:]}" if field else f"inputs: {text}"
