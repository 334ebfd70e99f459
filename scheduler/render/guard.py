"""The one submission-time URL check of a render: the SSRF guard (`workers.render.ssrf`) with DNS,
run off the event loop. A refused URL raises `InvalidInputError` on the `url` field, whichever way
the render came in (`POST /jobs`, `POST /render`, the Python client, a direct render), before
anything is queued. The render process checks again, every redirect and request of the page included."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from scheduler.errors import InvalidInputError
from workers.render.ssrf import check_url


async def refuse_unless_allowed(url: str, allow_hosts: Iterable[str], field: str = "url") -> None:
    """InvalidInputError on `field` unless the guard allows `url` (a job's `callback_url` is checked
    here too, `scheduler.webhooks`)."""
    verdict = await asyncio.to_thread(check_url, url, tuple(allow_hosts))
    if not verdict.allowed:
        raise InvalidInputError(f"the URL is refused: {verdict.reason}", field=field)
