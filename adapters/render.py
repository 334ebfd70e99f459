"""The `render` model's adapter: it only validates. Render jobs never reach a model worker: the
scheduler hands them to the render process (`scheduler/render_service.py`, `workers/render.py`)."""

from __future__ import annotations

from typing import Any

from adapters.base import BaseAdapter
from scheduler.ssrf import check_url_offline

WAIT_UNTIL = ("load", "domcontentloaded", "networkidle")
RENDER_FIELDS = {"url", "wait_until", "screenshot", "html", "engine", "fallback", "timeout_s"}
MAX_RENDER_TIMEOUT_S = 300.0


class RenderAdapter(BaseAdapter):
    """Inputs: a URL, or `{url, wait_until?, screenshot?, html?, engine?, fallback?, timeout_s?}`."""

    name = "render"
    device = "auto"
    max_batch_size = 1

    def validate(self, inputs: Any) -> None:
        request = {"url": inputs} if isinstance(inputs, str) else inputs
        if not isinstance(request, dict):
            raise ValueError("inputs must be a URL or an object with a 'url'")
        unknown = set(request) - RENDER_FIELDS
        if unknown:
            raise ValueError(f"inputs has unknown fields {sorted(unknown)}; known: {sorted(RENDER_FIELDS)}")
        url = request.get("url")
        if not isinstance(url, str) or not url:
            raise ValueError("inputs.url must be a non-empty string")
        if request.get("wait_until", "load") not in WAIT_UNTIL:
            raise ValueError(f"inputs.wait_until must be one of {', '.join(WAIT_UNTIL)}")
        for flag in ("screenshot", "html"):
            if not isinstance(request.get(flag, False), bool):
                raise ValueError(f"inputs.{flag} must be true or false")
        if request.get("engine", "browser") not in ("browser", "http"):
            raise ValueError("inputs.engine must be 'browser' or 'http'")
        if request.get("fallback", "http") not in ("http", None):
            raise ValueError("inputs.fallback must be 'http' or null")
        timeout_s = request.get("timeout_s")
        if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float)
                                      or not 0 < timeout_s <= MAX_RENDER_TIMEOUT_S):
            raise ValueError(f"inputs.timeout_s must be a number of seconds in (0, {MAX_RENDER_TIMEOUT_S:g}]")
        verdict = check_url_offline(url, self.options.get("allow_hosts", ()))
        if not verdict.allowed:
            raise ValueError(f"inputs.url is refused: {verdict.reason}")

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        raise RuntimeError("render jobs run in the render process, not in a model worker")
