"""Job callbacks (webhooks): a job submitted with a `callback_url` has its view POSTed there once its
end is durable (the body `GET /jobs/{id}` would answer then), signed with HMAC-SHA256 when a secret
is set (`webhook_secret`, else the daemon's `token`), and posted again with back-off while the
receiver does not take it (no answer, a timeout, 408, 429 or a 5xx), at most `webhook_retries` tries.

The URL passes the render process's SSRF guard twice: at submission, with DNS, through the one
submission-time check (`scheduler/render/guard.py`; a refused URL is `InvalidInputError` on
`callback_url`, REST 422, and nothing is queued), and at delivery, through the render process's
guarded fetcher (`workers/render/fetch.GuardedFetcher`: the host resolved again, every address
checked, the connection made to a checked address, no redirect followed). `webhook_allow_hosts`
opens chosen hosts (the tests allow 127.0.0.1).

Callbacks live in memory: a job that ends while the daemon is down, or a delivery cut by a restart,
is not posted again (the job's end is in the journal; `GET /jobs/{id}` answers it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import Any

import httpx
import msgspec

from scheduler.core.jobs import Job
from scheduler.errors import InvalidInputError
from scheduler.render.guard import refuse_unless_allowed
from scheduler.settings import Settings
from workers.backoff import Backoff
from workers.logs import about_job, job_context
from workers.render.fetch import GuardedFetcher, RefusedUrl, ResponseTooLarge
from workers.render.ssrf import check_url_offline

log = logging.getLogger("modelsched.webhooks")

SIGNATURE_HEADER = "X-Modelsched-Signature"  # "sha256=" + hex HMAC-SHA256(secret, body)
RETRY_BACKOFF = Backoff(0.5, 30.0, jitter=0.2)
RETRIED_STATUSES = frozenset({408, 425, 429})  # and every 5xx
MAX_IN_FLIGHT = 64
MAX_PENDING = 10_000  # deliveries waiting or under way; past it a callback is given up at once
MAX_ANSWER_BYTES = 64 * 1024
_encode = msgspec.json.Encoder().encode


def signature(secret: str, body: bytes) -> str:
    """The value of `X-Modelsched-Signature` for `body`: what a receiver recomputes and compares."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhooks:
    """settings: the allowlist, the secret (or token), timeout and tries; view: the job as a client
    sees it (the body)."""

    def __init__(self, settings: Settings, view: Callable[[Job], dict[str, Any]]) -> None:
        self.allow_hosts = tuple(settings.webhook_allow_hosts)
        self.secret = settings.webhook_secret or settings.token
        self.timeout_s = settings.webhook_timeout_s
        self.tries = settings.webhook_retries
        self.view = view
        self.delivered = 0
        self.given_up = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None

    async def precheck(self, url: str) -> None:
        """At submission, with DNS: InvalidInputError on `callback_url` when the guard refuses it."""
        await refuse_unless_allowed(url, self.allow_hosts, field="callback_url")

    def precheck_offline(self, url: str) -> None:
        """The same without DNS (for `Scheduler.submit`); the delivery resolves and checks again."""
        verdict = check_url_offline(url, self.allow_hosts)
        if not verdict.allowed:
            raise InvalidInputError(f"the URL is refused: {verdict.reason}", field="callback_url")

    def on_settled(self, job: Job) -> None:
        """`JobEndings` tells of every durable end; a job with a callback gets its view posted."""
        if job.callback_url is None:
            return
        if len(self._tasks) >= MAX_PENDING:
            self.given_up += 1
            log.warning(
                "callback given up: %d deliveries pending already", len(self._tasks), extra=about_job(job.id)
            )
            return
        body = _encode(self.view(job))
        task = asyncio.get_running_loop().create_task(self.deliver(job.callback_url, body, job.id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def deliver(self, url: str, body: bytes, job_id: str) -> None:
        """POST `body` to `url` until it is taken or the tries are spent."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        headers = {"Content-Type": "application/json", "X-Modelsched-Job-Id": job_id}
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, body)
        fetcher = GuardedFetcher(self.allow_hosts, MAX_ANSWER_BYTES, self.timeout_s)
        with job_context(job_id):  # every line of this delivery (the fetcher's too) names the job
            await self._deliver(fetcher, self._slots, url, body, headers)

    async def _deliver(
        self,
        fetcher: GuardedFetcher,
        slots: asyncio.Semaphore,
        url: str,
        body: bytes,
        headers: dict[str, str],
    ) -> None:
        try:
            for attempt in range(1, self.tries + 1):
                async with slots:  # a slot per try: a back-off holds none
                    try:
                        async with asyncio.timeout(self.timeout_s):  # the whole try, not each read
                            why = await self._post(
                                fetcher, url, body, {**headers, "X-Modelsched-Try": str(attempt)}
                            )
                    except TimeoutError:
                        why = f"no answer within {self.timeout_s:g}s"
                if why is None:
                    self.delivered += 1
                    return
                if why.startswith("refused") or attempt == self.tries:
                    self.given_up += 1
                    log.warning("callback to %s given up after %d tries: %s", url, attempt, why)
                    return
                await asyncio.sleep(RETRY_BACKOFF.delay(attempt))
        finally:
            await fetcher.aclose()

    async def _post(
        self, fetcher: GuardedFetcher, url: str, body: bytes, headers: dict[str, str]
    ) -> str | None:
        """None when the receiver took it; else why not ("refused ..." is not tried again)."""
        try:
            answer = await fetcher.fetch("POST", url, headers, body, follow_redirects=False)
        except RefusedUrl as exc:
            return f"refused by the SSRF guard: {exc}"
        except (httpx.HTTPError, OSError, ResponseTooLarge) as exc:  # no answer, a timeout: try again
            return f"{type(exc).__name__}: {exc}"
        if 200 <= answer.status < 300:
            return None
        if answer.status in RETRIED_STATUSES or answer.status >= 500:
            return f"the receiver answered {answer.status}"
        return f"refused by the receiver: {answer.status}"

    async def aclose(self, timeout_s: float) -> None:
        """Let deliveries under way finish within `timeout_s`, then cancel the rest."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError):
                await task
