"""The `render` model's adapter: it only validates. Render jobs never reach a model worker: the
scheduler hands them to the render process (`scheduler/render_service.py`, `workers/render.py`).

`render_inputs` is the one validation of a render request, shared by the job path (`POST /jobs`
with `model: "render"`), the direct path (`RenderService.render`) and `POST /render`; each message
names the field that is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from adapters.base import BaseAdapter
from workers.render.ssrf import check_url_offline

WAIT_UNTIL = ("load", "domcontentloaded", "networkidle")
ENGINES = ("browser", "http")
RENDER_FIELDS = {"url", "wait_until", "screenshot", "html", "engine", "fallback", "timeout_s"}
MAX_RENDER_TIMEOUT_S = 300.0


def render_inputs(inputs: Any, allow_hosts: Iterable[str] = ()) -> dict[str, Any]:
    """A URL or `{url, wait_until?, screenshot?, html?, engine?, fallback?, timeout_s?}` -> the request
    with its defaults filled in; `ValueError` naming the field when something is wrong. The URL is
    checked by the SSRF guard without DNS here (the render process checks it again, resolved)."""
    request = {"url": inputs} if isinstance(inputs, str) else inputs
    if not isinstance(request, dict):
        raise ValueError("inputs must be a URL or an object with a 'url'")
    unknown = set(request) - RENDER_FIELDS
    if unknown:
        raise ValueError(f"inputs has unknown fields {sorted(unknown)}; known: {sorted(RENDER_FIELDS)}")
    url = request.get("url")
    if not isinstance(url, str) or not url:
        raise ValueError("inputs.url must be a non-empty string")
    wait_until = request.get("wait_until", "load")
    if wait_until not in WAIT_UNTIL:
        raise ValueError(f"inputs.wait_until must be one of {', '.join(WAIT_UNTIL)} (got {wait_until!r})")
    for flag in ("screenshot", "html"):
        if not isinstance(request.get(flag, False), bool):
            raise ValueError(f"inputs.{flag} must be true or false")
    engine = request.get("engine", "browser")
    if engine not in ENGINES:
        raise ValueError(f"inputs.engine must be 'browser' or 'http' (got {engine!r})")
    fallback = request.get("fallback", "http")
    if fallback not in ("http", None):
        raise ValueError(f"inputs.fallback must be 'http' or null (got {fallback!r})")
    timeout_s = request.get("timeout_s")
    if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float)
                                  or not 0 < timeout_s <= MAX_RENDER_TIMEOUT_S):
        raise ValueError(f"inputs.timeout_s must be a number of seconds in (0, {MAX_RENDER_TIMEOUT_S:g}]")
    verdict = check_url_offline(url, allow_hosts)
    if not verdict.allowed:
        raise ValueError(f"inputs.url is refused: {verdict.reason}")
    return {
        "url": url, "wait_until": wait_until, "screenshot": bool(request.get("screenshot", False)),
        "html": bool(request.get("html", False)), "engine": engine, "fallback": fallback,
        "timeout_s": None if timeout_s is None else float(timeout_s),
    }


class RenderAdapter(BaseAdapter):
    """Inputs: a URL, or `{url, wait_until?, screenshot?, html?, engine?, fallback?, timeout_s?}`."""

    name = "render"
    device = "auto"
    max_batch_size = 1

    def validate(self, inputs: Any) -> None:
        render_inputs(inputs, self.options.get("allow_hosts", ()))

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        raise RuntimeError("render jobs run in the render process, not in a model worker")
