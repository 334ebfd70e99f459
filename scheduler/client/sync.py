"""`Client`: the daemon over HTTP, synchronously (one connection pool, reused), and `JobHandle`.

with Client("http://127.0.0.1:8000", token=None) as client:
    job = client.submit("mlp", [0.5] * 256, priority="high")
    print(job.status(), job.result(timeout=30))
    for event in client.submit("sleep", {"ms": 500}).events():
        print(event.event, event.data)
    vectors = client.infer("minilm", ["a sentence", "another"])
    for row in client.map("mlp", rows, concurrency=64, progress=True):
        ...
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
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

RECONNECTS = 3  # an event stream cut short is opened again (with Last-Event-ID) this many times


class JobHandle:
    """A submitted job: its `id`, and what can be asked of it."""

    def __init__(self, client: Client, job_id: str) -> None:
        self.client = client
        self.id = job_id

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r})"

    def info(self) -> dict[str, Any]:
        """The job's view: `status`, `queue_position`, `worker`, `result` or `error`, ..."""
        view: dict[str, Any] = self.client.request("GET", f"/jobs/{self.id}")
        return view

    def status(self) -> str:
        """`queued`, `processing`, `completed`, `error` or `cancelled`."""
        return str(self.info()["status"])

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """The job's view once it has ended, or as it stands after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            hold = wait_for(deadline)
            params = {"wait": hold} if hold > 0 else None
            view: dict[str, Any] = self.client.request("GET", f"/jobs/{self.id}", params=params, hold_s=hold)
            if view["status"] in ("completed", "error", "cancelled") or hold == 0:
                return view

    def result(self, timeout: float | None = None) -> Any:
        """The result; JobFailed, JobCancelled, or TimeoutError when it has not ended in `timeout` s."""
        ended, value = outcome(self.wait(timeout))
        if not ended:
            raise TimeoutError(f"job {self.id} did not end within {timeout}s")
        return value

    def cancel(self) -> bool:
        """Cancel it: True when this cancelled it, False when it had ended already."""
        try:
            self.client.request("DELETE", f"/jobs/{self.id}")
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def events(self, last_event_id: str | None = None) -> Iterator[JobEvent]:
        """The job's events as they happen, to its end (`GET /jobs/{id}/events`); a stream cut short
        is opened again from the last event seen."""
        parser = SseParser()
        parser.last_id = last_event_id
        for attempt in range(RECONNECTS + 1):
            headers = {"Last-Event-ID": parser.last_id} if parser.last_id else {}
            timeout = httpx.Timeout(self.client.options.timeout_s, read=60.0)
            try:
                with self.client.http.stream(
                    "GET", f"/jobs/{self.id}/events", headers=headers, timeout=timeout
                ) as answer:
                    if answer.status_code >= 400:
                        answer.read()
                        raise api_error(answer)
                    for line in answer.iter_lines():
                        event = parser.feed(line)
                        if event is not None:
                            yield event
                            if event.final:
                                return
            except (httpx.TransportError, DaemonUnavailable):
                if attempt == RECONNECTS:
                    raise DaemonUnavailable(f"the event stream of job {self.id} broke off") from None


class Client:
    """The daemon at `url` (a bearer `token` when it has one); a context manager. 429 and 503 answers
    (not admitted) are tried again after their `Retry-After`, at most `max_retries` times."""

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, **options: Any) -> None:
        self.options = Options(url, token, **options)
        self.retries = 0  # requests tried again after a 429 or 503
        self.http = httpx.Client(**self.options.client_options())

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # ---- requests ------------------------------------------------------------------------------

    def send(self, method: str, path: str, hold_s: float = 0.0, **request: Any) -> httpx.Response:
        """One request, tried again after 429/503 as the policy says; DaemonUnavailable without a
        connection. `hold_s`: how long the daemon may hold it (added to the timeout)."""
        timeout = self.options.timeout_s + hold_s
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = self.http.request(method, path, timeout=timeout, **request)
            except httpx.TransportError as exc:
                raise DaemonUnavailable(f"cannot reach the daemon at {self.options.url}: {exc}") from exc
            delay = retry_delay(answer, attempt, self.options)
            if delay is None:
                return answer
            self.retries += 1
            time.sleep(delay)

    def request(self, method: str, path: str, hold_s: float = 0.0, **request: Any) -> Any:
        return json_or_raise(self.send(method, path, hold_s, **request))

    # ---- jobs ----------------------------------------------------------------------------------

    def submit(
        self,
        model: str,
        inputs: Any,
        *,
        priority: str | None = None,
        timeout_s: float | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
    ) -> JobHandle:
        """Submit a job; its handle once the daemon has it in its journal."""
        options = {"priority": priority, "timeout_s": timeout_s, "idempotency_key": idempotency_key}
        body = job_body(model, inputs, {**options, "callback_url": callback_url})
        return JobHandle(self, self.request("POST", "/jobs", json=body)["job_id"])

    def submit_many(self, model: str, inputs: Iterable[Any], **options: Any) -> list[JobHandle]:
        """Submit a job per input in one request (`POST /jobs/batch`, one journal group; in chunks of
        1,000); items refused for a full queue are sent again after a pause, any other refusal raises."""
        pending = [job_body(model, one, options) for one in inputs]
        ids: list[str | None] = [None] * len(pending)
        for start in range(0, len(pending), 1000):
            indexes = list(range(start, min(start + 1000, len(pending))))
            for attempt in range(1, self.options.max_retries + 2):
                items = self.request("POST", "/jobs/batch", json={"jobs": [pending[i] for i in indexes]})[
                    "jobs"
                ]
                again = []
                for index, item in zip(indexes, items, strict=True):
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
                time.sleep(min(0.5 * 2 ** (attempt - 1), self.options.max_retry_wait_s))
        return [JobHandle(self, str(job_id)) for job_id in ids]

    def job(self, job_id: str) -> JobHandle:
        return JobHandle(self, job_id)

    def infer(self, model: str, inputs: Any, *, timeout: float | None = None, **options: Any) -> Any:
        """Submit and wait in one request (`POST /models/{model}/infer`): the result, or JobFailed,
        JobCancelled, TimeoutError (after `timeout` s; the daemon's default wait when None, then on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        hold = wait_for(deadline) if deadline is not None else 60.0
        body = {"inputs": inputs, **{key: value for key, value in options.items() if value is not None}}
        answer = self.send(
            "POST", f"/models/{model}/infer", hold, json=body, params={"timeout": max(hold, 0.001)}
        )
        return self._infer_answer(answer, deadline)

    def _infer_answer(self, answer: httpx.Response, deadline: float | None) -> Any:
        body = body_of(answer)
        if answer.status_code == 200:
            return body["result"]
        if not isinstance(body, dict) or "job_id" not in body:
            raise api_error(answer)
        handle = JobHandle(self, body["job_id"])
        if body.get("job_status") in ("error", "cancelled"):
            outcome(handle.info())  # raises, with the error's kind
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return handle.result(remaining)

    def map(
        self,
        model: str,
        inputs: Iterable[Any],
        *,
        concurrency: int = 64,
        progress: bool = False,
        return_exceptions: bool = False,
        **options: Any,
    ) -> Iterator[Any]:
        """The result of a job per input, in order, with at most `concurrency` jobs in flight (sent in
        batches); `progress` shows a bar. A failed job raises (JobFailed, JobCancelled) where its result
        would be, or takes its place with `return_exceptions`."""
        items = iter(inputs)
        window: deque[JobHandle] = deque()
        exhausted = False
        bar = Progress(progress, inputs, model)
        try:
            while True:
                free = concurrency - len(window)
                if not exhausted and (free >= max(1, concurrency // 4) or not window):
                    chunk = list(islice(items, free))
                    exhausted = len(chunk) < free
                    window.extend(self.submit_many(model, chunk, **options))
                if not window:
                    return
                try:
                    value: Any = window.popleft().result()
                except (JobFailed, JobCancelled) as exc:
                    if not return_exceptions:
                        raise
                    value = exc
                bar.update()
                yield value
        finally:
            bar.close()

    def jobs(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        """The views of these jobs (`GET /jobs?ids=`); ApiError (404) naming any that does not exist."""
        wanted, views = list(ids), []
        for start in range(0, len(wanted), IDS_PER_REQUEST):
            chunk = ",".join(wanted[start : start + IDS_PER_REQUEST])
            views += views_or_raise(self.request("GET", "/jobs", params={"ids": chunk}))
        return views

    def list_jobs(
        self, status: str | None = None, model: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        params = {
            key: value for key, value in (("status", status), ("model", model), ("limit", limit)) if value
        }
        jobs: list[dict[str, Any]] = self.request("GET", "/jobs", params=params)["jobs"]
        return jobs

    # ---- the daemon ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The system status (`GET /system/status`)."""
        status: dict[str, Any] = self.request("GET", "/system/status")
        return status

    def models(self) -> list[dict[str, Any]]:
        models: list[dict[str, Any]] = self.request("GET", "/models")["models"]
        return models

    def ready(self) -> bool:
        """Whether the daemon takes jobs now (`GET /readyz`)."""
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False


__all__ = ["Client", "JobHandle"]
