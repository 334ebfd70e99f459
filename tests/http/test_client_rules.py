"""The client's rules that need no daemon: `Retry-After` read as seconds or as a date, which refusals
are tried again, the SSE line parser, and that importing the client loads none of the daemon's heavy
libraries."""

from __future__ import annotations

import email.utils
import subprocess
import sys
import time

import httpx

from scheduler.client.common import Options, SseParser, parse_retry_after, retry_delay
from tests.support.daemon import REPO


def test_retry_after_as_seconds_or_a_date_else_a_doubling_pause() -> None:
    assert parse_retry_after("2", 1) == 2.0
    in_three = email.utils.formatdate(time.time() + 3, usegmt=True)
    assert 1.5 < parse_retry_after(in_three, 1) <= 3.0
    assert [parse_retry_after(None, n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert parse_retry_after("soon", 2) == 1.0


def test_only_refusals_that_queued_nothing_are_tried_again_and_only_so_often() -> None:
    options = Options(max_retries=2, max_retry_wait_s=5.0)
    full = httpx.Response(429, headers={"Retry-After": "60"}, json={"error": "queue_full", "detail": "full"})
    assert retry_delay(full, 1, options) == 5.0  # capped
    assert retry_delay(full, 3, options) is None  # the tries are spent
    stopping_with_a_job = httpx.Response(
        503, json={"job_id": "j1", "status": "queued", "error": "shutting down"}
    )
    assert retry_delay(stopping_with_a_job, 1, options) is None  # sending it again would run it twice
    assert retry_delay(httpx.Response(503, json={"error": "not_accepting", "detail": ""}), 1, options) == 0.5
    assert retry_delay(httpx.Response(422, json={}), 1, options) is None


def test_the_sse_parser_follows_the_rules() -> None:
    parser = SseParser()
    lines = ["retry: 1000", "", ": keep-alive", "id: 0.0.1", "event: queued", 'data: {"a":', "data: 1}", ""]
    events = [event for event in map(parser.feed, lines) if event is not None]
    assert len(events) == 1 and events[0].event == "queued" and events[0].id == "0.0.1"
    assert events[0].data == {"a": 1} and not events[0].final
    end = [parser.feed(line) for line in ["event: shutdown", 'data: {"job_id": "j"}', ""]][-1]
    assert end is not None and end.final and end.id is None and parser.last_id == "0.0.1"


def test_importing_the_client_loads_no_torch_and_no_web_framework() -> None:
    heavy = ("torch", "numpy", "fastapi", "starlette", "uvicorn", "transformers")
    code = f"import sys, scheduler.client; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"
