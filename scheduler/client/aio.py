"""`AsyncClient`: the daemon over HTTP from asyncio code, and `AsyncJobHandle`; the same methods as
`Client`, awaited (`events` and `map` are async iterators).

    async with AsyncClient("http://127.0.0.1:8000") as client:
        job = await client.submit("mlp", [0.5] * 256)
        async for event in job.events():
            print(event.event, event.data)
        print(await job.result(timeout=30))
        results = [r async for r in client.map("echo", range(1000), concurrency=64)]
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from itertools import islice
from types import TracebackType
from typing import Any

import httpx

from scheduler.client.common import (
    IDS_PER_REQUEST,
    JobEvent,
    Options,
    Progress,
    SseParser,
    api_error,
    body_of,
    job_body,
    json_or_raise,
    outcome,
    retry_delay,
    views_or_raise,
    wait_for,
)
from scheduler.client.errors import ApiError, DaemonUnavailable, JobCancelled, JobFailed
from scheduler.client.sync import RECONNECTS


class AsyncJobHandle:
    """A submitted job: its `id`, and what can be asked of it (every method awaited)."""

    def __init__(self, client: AsyncClient, job_id: str) -> None:
        self.client = client
        self.id = job_id

    def __repr__(self) -> str:
        return f"AsyncJobHandle({self.id!r})"

    async def info(self) -> dict[str, Any]:
        view: dict[str, Any] = await self.client.request("GET", f"/jobs/{self.id}")
        return view

    async def status(self) -> str:
        return str((await self.info())["status"])

    async def wait(self, timeout: float | None = None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            hold = wait_for(deadline)
            params = {"wait": hold} if hold > 0 else None
            view: dict[str, Any] = await self.client.request(
                "GET", f"/jobs/{self.id}", params=params, hold_s=hold
            )
            if view["status"] in ("completed", "error", "cancelled") or hold == 0:
                return view

    async def result(self, timeout: float | None = None) -> Any:
        ended, value = outcome(await self.wait(timeout))
        if not ended:
            raise TimeoutError(f"job {self.id} did not end within {timeout}s")
        return value

    async def cancel(self) -> bool:
        try:
            await self.client.request("DELETE", f"/jobs/{self.id}")
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def events(self, last_event_id: str | None = None) -> AsyncIterator[JobEvent]:
        parser = SseParser()
        parser.last_id = last_event_id
        for attempt in range(RECONNECTS + 1):
            headers = {"Last-Event-ID": parser.last_id} if parser.last_id else {}
            timeout = httpx.Timeout(self.client.options.timeout_s, read=60.0)
            try:
                async with self.client.http.stream(
                    "GET", f"/jobs/{self.id}/events", headers=headers, timeout=timeout
                ) as answer:
                    if answer.status_code >= 400:
                        await answer.aread()
                        raise api_error(answer)
                    async for line in answer.aiter_lines():
                        event = parser.feed(line)
                        if event is not None:
                            yield event
                            if event.final:
                                return
            except httpx.TransportError:
                if attempt == RECONNECTS:
                    raise DaemonUnavailable(f"the event stream of job {self.id} broke off") from None


class AsyncClient:
    """The daemon at `url`, from asyncio code; an async context manager."""

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, **options: Any) -> None:
        self.options = Options(url, token, **options)
        self.retries = 0  # requests tried again after a 429 or 503
        self.http = httpx.AsyncClient(**self.options.client_options())

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def send(self, method: str, path: str, hold_s: float = 0.0, **request: Any) -> httpx.Response:
        timeout = self.options.timeout_s + hold_s
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = await self.http.request(method, path, timeout=timeout, **request)
            except httpx.TransportError as exc:
                raise DaemonUnavailable(f"cannot reach the daemon at {self.options.url}: {exc}") from exc
            delay = retry_delay(answer, attempt, self.options)
            if delay is None:
                return answer
            self.retries += 1
            await asyncio.sleep(delay)

    async def request(self, method: str, path: str, hold_s: float = 0.0, **request: Any) -> Any:
        return json_or_raise(await self.send(method, path, hold_s, **request))

    async def submit(
        self,
        model: str,
        inputs: Any,
        *,
        priority: str | None = None,
        timeout_s: float | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
    ) -> AsyncJobHandle:
        options = {"priority": priority, "timeout_s": timeout_s, "idempotency_key": idempotency_key}
        body = job_body(model, inputs, {**options, "callback_url": callback_url})
        return AsyncJobHandle(self, (await self.request("POST", "/jobs", json=body))["job_id"])

    async def submit_many(self, model: str, inputs: Iterable[Any], **options: Any) -> list[AsyncJobHandle]:
        pending = [job_body(model, one, options) for one in inputs]
        ids: list[str | None] = [None] * len(pending)
        for start in range(0, len(pending), 1000):
            indexes = list(range(start, min(start + 1000, len(pending))))
            for attempt in range(1, self.options.max_retries + 2):
                answer = await self.request(
                    "POST", "/jobs/batch", json={"jobs": [pending[i] for i in indexes]}
                )
                again = []
                for index, item in zip(indexes, answer["jobs"], strict=True):
                    if "job_id" in item:
                        ids[index] = item["job_id"]
                    elif item.get("code") in (429, 503) and attempt <= self.options.max_retries:
                        again.append(index)
                    else:
                        raise ApiError(
                            item.get("code", 422), item["error"], item.get("detail", ""), item.get("field")
                        )
                if not again:
                    break
                indexes = again
                await asyncio.sleep(min(0.5 * 2 ** (attempt - 1), self.options.max_retry_wait_s))
        return [AsyncJobHandle(self, str(job_id)) for job_id in ids]

    def job(self, job_id: str) -> AsyncJobHandle:
        return AsyncJobHandle(self, job_id)

    async def infer(self, model: str, inputs: Any, *, timeout: float | None = None, **options: Any) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        hold = wait_for(deadline) if deadline is not None else 60.0
        body = {"inputs": inputs, **{key: value for key, value in options.items() if value is not None}}
        answer = await self.send(
            "POST", f"/models/{model}/infer", hold, json=body, params={"timeout": max(hold, 0.001)}
        )
        body = body_of(answer)
        if answer.status_code == 200:
            return body["result"]
        if not isinstance(body, dict) or "job_id" not in body:
            raise api_error(answer)
        handle = AsyncJobHandle(self, body["job_id"])
        if body.get("job_status") in ("error", "cancelled"):
            outcome(await handle.info())
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return await handle.result(remaining)

    async def map(
        self,
        model: str,
        inputs: Iterable[Any],
        *,
        concurrency: int = 64,
        progress: bool = False,
        return_exceptions: bool = False,
        **options: Any,
    ) -> AsyncIterator[Any]:
        items = iter(inputs)
        window: deque[AsyncJobHandle] = deque()
        exhausted = False
        bar = Progress(progress, inputs, model)
        try:
            while True:
                free = concurrency - len(window)
                if not exhausted and (free >= max(1, concurrency // 4) or not window):
                    chunk = list(islice(items, free))
                    exhausted = len(chunk) < free
                    window.extend(await self.submit_many(model, chunk, **options))
                if not window:
                    return
                try:
                    value: Any = await window.popleft().result()
                except (JobFailed, JobCancelled) as exc:
                    if not return_exceptions:
                        raise
                    value = exc
                bar.update()
                yield value
        finally:
            bar.close()

    async def jobs(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        wanted, views = list(ids), []
        for start in range(0, len(wanted), IDS_PER_REQUEST):
            chunk = ",".join(wanted[start : start + IDS_PER_REQUEST])
            views += views_or_raise(await self.request("GET", "/jobs", params={"ids": chunk}))
        return views

    async def list_jobs(
        self, status: str | None = None, model: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        params = {
            key: value for key, value in (("status", status), ("model", model), ("limit", limit)) if value
        }
        jobs: list[dict[str, Any]] = (await self.request("GET", "/jobs", params=params))["jobs"]
        return jobs

    async def status(self) -> dict[str, Any]:
        status: dict[str, Any] = await self.request("GET", "/system/status")
        return status

    async def models(self) -> list[dict[str, Any]]:
        models: list[dict[str, Any]] = (await self.request("GET", "/models"))["models"]
        return models

    async def ready(self) -> bool:
        try:
            return (await self.http.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False
