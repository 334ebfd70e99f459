"""What the synchronous and the asynchronous client share, free of I/O: the settings of a client
(`Options`), reading an answer (its JSON, or the `ApiError` it stands for), the retry policy for 429
and 503 (`Retry-After`, bounded), a job's view as its result or its exception, the SSE line parser,
and the progress bar of `map`."""

from __future__ import annotations

import email.utils
import importlib
import sys
import time
from collections.abc import Iterable, Sized
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from scheduler.client.errors import ApiError, JobCancelled, JobFailed

ENDED = frozenset({"completed", "error", "cancelled"})
FINAL_EVENTS = ENDED | {"shutdown"}
MAX_WAIT_S = 300.0  # the daemon holds a request at most this long (`?wait=`, `?timeout=`)
RETRIED = frozenset({429, 503})
IDS_PER_REQUEST = 500  # `GET /jobs?ids=` takes up to `max_batch_submit` (1,000 by default)
_decode = msgspec.json.Decoder().decode


@dataclass(frozen=True)
class Options:
    """url: the daemon; token: its bearer token; timeout_s: per request (waits add theirs);
    max_retries: tries again after a 429 or 503 (not admitted: the queue is full, or the daemon is
    starting or stopping), each after its `Retry-After` (at most `max_retry_wait_s`)."""

    url: str = "http://127.0.0.1:8000"
    token: str | None = None
    timeout_s: float = 30.0
    max_retries: int = 5
    max_retry_wait_s: float = 30.0
    headers: dict[str, str] = field(default_factory=dict)

    def client_options(self) -> dict[str, Any]:
        headers = {"User-Agent": "modelsched-client/0.1", **self.headers}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return {
            "base_url": self.url.rstrip("/"),
            "headers": headers,
            "timeout": self.timeout_s,
            "limits": httpx.Limits(max_connections=100, max_keepalive_connections=20),
        }


@dataclass(frozen=True)
class JobEvent:
    """One event of a job's stream: `event` (`queued`, `processing`, `progress`, `completed`,
    `error`, `cancelled`, `shutdown`), its `id` (give it as `last_event_id` to resume after it) and
    its `data` (for `queued`: `queue_position`; `processing`: `worker`, `device`; `progress`: `done`,
    `total`, `stage`; an end: the job's view)."""

    event: str
    id: str | None
    data: dict[str, Any]

    @property
    def final(self) -> bool:
        return self.event in FINAL_EVENTS


def body_of(response: httpx.Response) -> Any:
    try:
        return _decode(response.content) if response.content else None
    except msgspec.DecodeError:
        return None


def api_error(response: httpx.Response) -> ApiError:
    body = body_of(response)
    if isinstance(body, dict):
        if isinstance(body.get("error"), str):
            return ApiError(
                response.status_code, body["error"], str(body.get("detail", "")), body.get("field")
            )
        if "job_id" in body:
            return ApiError(response.status_code, body.get("status", "error"), str(body.get("error")))
    return ApiError(response.status_code, "http_error", response.text[:200] or response.reason_phrase)


def json_or_raise(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise api_error(response)
    return body_of(response)


def views_or_raise(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The views of a `GET /jobs?ids=` answer; ApiError (404) naming the ids no job has."""
    if answer["not_found"]:
        raise ApiError(404, "job_not_found", f"no job with id {', '.join(answer['not_found'])}", "ids")
    views: list[dict[str, Any]] = answer["jobs"]
    return views


def retry_delay(response: httpx.Response, attempt: int, options: Options) -> float | None:
    """Seconds to wait before trying a refused request again, or None when it is not to be tried
    again: not a 429/503, the tries are spent, or a 503 that names a job (the daemon stopped while
    the job was submitted: submitting it again would run it twice)."""
    if response.status_code not in RETRIED or attempt > options.max_retries:
        return None
    body = body_of(response)
    if isinstance(body, dict) and "job_id" in body:
        return None
    return min(parse_retry_after(response.headers.get("retry-after"), attempt), options.max_retry_wait_s)


def parse_retry_after(value: str | None, attempt: int) -> float:
    """`Retry-After` as seconds (a number, or an HTTP date); without one, 0.5 s doubling per try."""
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            pass
    return 0.5 * 2.0 ** (attempt - 1)


def outcome(view: dict[str, Any]) -> tuple[bool, Any]:
    """(ended, result) for a job's view; JobFailed or JobCancelled when it ended without a result."""
    status = view.get("status")
    if status == "completed":
        return True, view.get("result")
    if status == "error":
        raise JobFailed(view["job_id"], view.get("error_kind"), view.get("error") or "the job failed")
    if status == "cancelled":
        raise JobCancelled(view["job_id"])
    return False, None


def job_body(model: str, inputs: Any, options: dict[str, Any]) -> dict[str, Any]:
    """A `POST /jobs` body: model, inputs, and the options that are set."""
    body = {"model": model, "inputs": inputs}
    body.update({key: value for key, value in options.items() if value is not None})
    return body


def wait_for(deadline: float | None) -> float:
    """How long the next long poll may hold (never past the deadline; 0: just read)."""
    if deadline is None:
        return MAX_WAIT_S
    return max(0.0, min(MAX_WAIT_S, deadline - time.monotonic()))


class SseParser:
    """Server-Sent Events from lines: `feed` each line (without its newline); an event comes back at
    the blank line that ends it. `last_id` is the last id seen (for `Last-Event-ID`)."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> JobEvent | None:
        if not line:
            if not self._data:
                self._event, self._id = "", None
                return None
            data = "\n".join(self._data)
            event = JobEvent(self._event or "message", self._id, _decode(data) if data else {})
            self._event, self._data, self._id = "", [], None
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = self.last_id = value
        return None


class Progress:
    """`map`'s progress: a tqdm bar when tqdm is installed, else a line on stderr; nothing when off."""

    def __init__(self, enabled: bool, inputs: Iterable[Any], description: str) -> None:
        self.bar: Any = None
        self.done = 0
        self.total = len(inputs) if isinstance(inputs, Sized) else None
        self.enabled = enabled
        if enabled:
            try:
                tqdm = importlib.import_module("tqdm.auto").tqdm
            except ImportError:
                return
            self.bar = tqdm(total=self.total, desc=description, unit="job")

    def update(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled:
            shown = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
            sys.stderr.write(f"\r{shown} jobs done")
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.done:
            sys.stderr.write("\n")
