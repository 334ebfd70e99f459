"""The Python client of rendering: functions that take a started `Scheduler` (with `render_enabled`),
submit `render` jobs, wait for them and return their results.

    async with Scheduler(Settings(render_enabled=True)) as scheduler:
        page = await render_page(scheduler, "https://example.org/")
        pages = await render_pages(scheduler, ["https://example.org/", "https://example.com/"])
        page = await render_with_fallback(scheduler, "https://example.org/", primary="http", fallback=None)

A result is `{url, final_url, status, title, text, links, elapsed_ms, engine, ...}` (plus `html` and
`screenshot_png`, base64, when asked; `fallback_reason` when the plain HTTP fetch stood in for the
browser). The jobs are ordinary jobs: `scheduler.job_status(id)` shows them too. A refused URL
raises `InvalidInputError` (before anything is queued, or later, when a redirect or a request of the
page is refused); a render that fails raises `RenderFailedError`; a full render queue raises
`QueueFullError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import msgspec

from scheduler.core.jobs import JobRequest
from scheduler.errors import ErrorKind, InvalidInputError, RenderFailedError, SchedulerError
from scheduler.render.model import RENDER_MODEL
from scheduler.render.service import outcome_error
from scheduler.scheduler import Scheduler
from workers.render.request import RenderRequest

ENGINES = {"playwright": "browser", "browser": "browser", "http": "http"}
WAIT_MARGIN_S = 10.0


def longest_wait_s(scheduler: Scheduler, timeout_s: float | None) -> float:
    """How long a render can take at most: every try in the browser, the back-offs, the fallback."""
    settings = scheduler.settings
    per_try = timeout_s or settings.render_timeout_s
    return per_try * (settings.render_retries + 1) + 5.0 * settings.render_retries + WAIT_MARGIN_S


async def submit_render(scheduler: Scheduler, request: RenderRequest) -> str:
    """Submit a render job (its URL checked with DNS first); returns its id."""
    if RENDER_MODEL not in scheduler.registry:
        raise SchedulerError("rendering is off: start the scheduler with render_enabled")
    return await scheduler.schedule_job(JobRequest(model=RENDER_MODEL, inputs=msgspec.to_builtins(request)))


async def wait_render(scheduler: Scheduler, job_id: str, wait_s: float) -> dict[str, Any]:
    """The result of render job `job_id`; InvalidInputError when its URL (or a redirect) was refused,
    RenderFailedError for any other end without a page."""
    view = await scheduler.wait_for(job_id, wait_s)
    if view["status"] == "completed":
        result: dict[str, Any] = view["result"]
        return result
    if view["status"] in ("queued", "processing"):
        raise RenderFailedError(
            f"the render did not end within {wait_s:g}s (job {job_id})", ErrorKind.TIMEOUT
        )
    kind = scheduler.get_job(job_id).error_kind
    message = f"{view.get('error') or 'the render ended ' + view['status']} (job {job_id})"
    raise outcome_error(message, ErrorKind.REFUSED if kind == ErrorKind.INPUT else kind)


def _request(url: str, **options: Any) -> RenderRequest:
    try:
        return RenderRequest(url=url, **options)
    except TypeError as exc:
        raise InvalidInputError(str(exc), field="options") from None


async def render_page(scheduler: Scheduler, url: str, **options: Any) -> dict[str, Any]:
    """Render one page in Chromium (the plain HTTP fetch when the browser fails) and return it.
    `options` are the fields of `RenderRequest`: wait_until, screenshot, html, engine, fallback, timeout_s."""
    request = _request(url, **options)
    job_id = await submit_render(scheduler, request)
    return await wait_render(scheduler, job_id, longest_wait_s(scheduler, request.timeout_s))


async def render_pages(
    scheduler: Scheduler, urls: Iterable[str], *, return_exceptions: bool = False, **options: Any
) -> list[Any]:
    """Render many pages at once (the render process holds at most `render_max_pages` open); results
    in the order of `urls`. With `return_exceptions`, a failed page gives its exception in its place
    (as `asyncio.gather` does); without, the first failure is raised. Every URL is checked, and every
    job submitted, before any is waited for."""
    requests = [_request(url, **options) for url in urls]
    job_ids = [await submit_render(scheduler, request) for request in requests]
    wait_s = longest_wait_s(scheduler, options.get("timeout_s"))
    results: list[Any] = await asyncio.gather(
        *(wait_render(scheduler, job_id, wait_s) for job_id in job_ids), return_exceptions=return_exceptions
    )
    return results


async def render_with_fallback(
    scheduler: Scheduler, url: str, primary: str = "playwright", fallback: str | None = "http", **options: Any
) -> dict[str, Any]:
    """Render with `primary` ("playwright" or "browser": Chromium; "http": the plain fetch), and
    when that fails, with `fallback` ("http", or None for no fallback)."""
    engine = ENGINES.get(primary)
    if engine is None:
        raise InvalidInputError(
            f"primary must be one of {', '.join(ENGINES)} (got {primary!r})", field="primary"
        )
    if fallback not in ("http", None):
        raise InvalidInputError(f"fallback must be 'http' or None (got {fallback!r})", field="fallback")
    return await render_page(scheduler, url, engine=engine, fallback=fallback, **options)
