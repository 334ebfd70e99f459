"""The Python client (`scheduler.client`), job events over SSE, batch submission and webhooks, against
a real daemon (`shared_daemon`: one CPU worker, so a `sleep` job holds the others back)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from scheduler.client import (
    ApiError,
    AsyncClient,
    Client,
    DaemonUnavailable,
    JobCancelled,
    JobEvent,
    JobFailed,
)
from tests.http.conftest import TOKEN
from tests.support.daemon import Daemon, free_port
from tests.support.polling import until_sync
from tests.support.receiver import receiving

MLP_INPUT = [0.01 * i for i in range(256)]


@pytest.fixture
def client(shared_daemon: Daemon) -> Iterator[Client]:
    with Client(shared_daemon.url, token=TOKEN) as running:
        yield running


def blocked(client: Client, ms: int = 1500) -> Any:
    """A sleep job running on the one worker (the jobs after it wait); its handle."""
    blocker = client.submit("sleep", {"ms": ms})
    until_sync(lambda: blocker.status() == "processing", timeout=20, message="the blocker running")
    return blocker


def test_handles_results_errors_and_cancel(client: Client) -> None:
    job = client.submit("echo", {"text": "hi"}, priority="high", idempotency_key="client-1")
    assert job.result(timeout=30) == {"text": "hi"} and job.status() == "completed"
    assert client.submit("echo", {"text": "hi"}, idempotency_key="client-1").id == job.id
    info = job.info()
    assert info["job_id"] == job.id and info["queue_position"] is None and info["error_kind"] is None
    with pytest.raises(JobFailed) as failed:
        client.submit("echo", {"fail": "broken"}).result(timeout=30)
    assert failed.value.kind == "model" and "broken" in failed.value.message
    slow = client.submit("sleep", {"ms": 1000})
    with pytest.raises(TimeoutError):
        slow.result(timeout=0.3)
    assert slow.cancel() is True and slow.cancel() is False
    with pytest.raises(JobCancelled):
        slow.result(timeout=10)
    assert client.infer("echo", [1, 2]) == [1, 2]
    assert len(client.infer("mlp", MLP_INPUT, timeout=30)) == 16
    with pytest.raises(JobFailed) as failed:
        client.infer("echo", {"fail": "nope"})
    assert failed.value.kind == "model"
    with pytest.raises(ApiError) as refused:
        client.infer("mlp", [1, 2, 3])
    assert (refused.value.status, refused.value.error, refused.value.field) == (
        422,
        "invalid_input",
        "inputs",
    )
    with pytest.raises(ApiError) as unknown:
        client.submit("nope", 1)
    assert unknown.value.status == 404
    views = client.jobs([job.id, slow.id])
    assert [view["status"] for view in views] == ["completed", "cancelled"]
    with pytest.raises(ApiError):
        client.jobs([job.id, "no-such-job"])
    assert client.status()["workers"][0]["worker_id"] == "cpu-w0"
    assert {"echo", "mlp"} <= {model["name"] for model in client.models()}
    assert client.list_jobs(limit=1)[0]["job_id"] and client.ready()


def test_map_keeps_the_order_and_can_hand_back_failures(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = list(range(300))
    assert list(client.map("echo", inputs, concurrency=32, progress=True)) == inputs
    assert "300/300" in capsys.readouterr().err  # tqdm's bar
    mixed = list(client.map("echo", [1, {"fail": "x"}, 3], return_exceptions=True))
    assert mixed[0] == 1 and isinstance(mixed[1], JobFailed) and mixed[2] == 3
    with pytest.raises(JobFailed):
        list(client.map("echo", [1, {"fail": "x"}, 3]))


def test_the_async_client_does_the_same(shared_daemon: Daemon) -> None:
    async def main() -> None:
        async with AsyncClient(shared_daemon.url, token=TOKEN) as client:
            job = await client.submit("echo", "async")
            assert await job.result(timeout=30) == "async" and await job.status() == "completed"
            assert await client.infer("echo", 5) == 5
            with pytest.raises(JobFailed):
                await client.infer("echo", {"fail": "x"})
            slow = await client.submit("sleep", {"ms": 1000})
            with pytest.raises(TimeoutError):
                await slow.result(timeout=0.2)
            events = [event.event async for event in slow.events()] if await slow.cancel() else []
            assert events and events[-1] == "cancelled"
            with pytest.raises(JobCancelled):
                await slow.result()
            assert not await slow.cancel()
            assert [r async for r in client.map("echo", range(100), concurrency=10)] == list(range(100))
            handles = await client.submit_many("echo", ["a", "b"])
            assert [view["job_id"] for view in await client.jobs(h.id for h in handles)] == [
                h.id for h in handles
            ]
            assert (await client.status())["queue"]["max_queue"] == 1000
            assert await client.ready() and (await client.list_jobs(limit=2)) and await client.models()

    asyncio.run(main())


def test_a_daemon_that_is_not_there_and_a_wrong_token(shared_daemon: Daemon) -> None:
    with Client(f"http://127.0.0.1:{free_port()}") as nowhere, pytest.raises(DaemonUnavailable):
        nowhere.submit("echo", 1)
    with Client(shared_daemon.url, token="wrong") as client, pytest.raises(ApiError) as refused:
        client.submit("echo", 1)
    assert refused.value.status == 401


def test_a_full_queue_is_tried_again_after_retry_after(client: Client) -> None:
    """429 with Retry-After: the client waits and tries again (bounded); with no tries left it raises."""
    blocked(client, ms=5000)
    filler = client.submit_many("sleep", [0] * 1001)  # one on the worker, 1000 (max_queue) waiting
    with Client(client.options.url, token=TOKEN, max_retries=0) as impatient, pytest.raises(ApiError) as full:
        impatient.submit("echo", 1)
    assert (full.value.status, full.value.error) == (429, "queue_full")
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.submit, "echo", "after the wait")
        until_sync(lambda: client.retries > 0, timeout=10, message="a 429 tried again")
        assert filler[-1].cancel()  # a place in the queue: the next try gets in
        assert waiting.result(timeout=30).result(timeout=60) == "after the wait"
    assert filler[-2].result(timeout=60) == {"slept_ms": 0.0}  # the queue drained (first in, first out)
    assert {view["status"] for view in client.jobs(h.id for h in filler)} == {"completed", "cancelled"}


def test_a_batch_of_1000_jobs_with_an_error_in_its_place(client: Client, shared_daemon: Daemon) -> None:
    jobs: list[Any] = [{"model": "echo", "inputs": n} for n in range(1000)]
    jobs[7] = {"model": "mlp", "inputs": [1, 2]}
    jobs[9] = {"inputs": 3}
    with shared_daemon.client() as http:
        answer = http.post("/jobs/batch", json={"jobs": jobs})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["accepted"], body["refused"]) == (998, 2)
        assert body["jobs"][7] == {
            "error": "invalid_input",
            "detail": body["jobs"][7]["detail"],
            "field": "jobs[7].inputs",
            "code": 422,
        }
        assert body["jobs"][9]["field"] == "jobs[9].model" and body["jobs"][9]["code"] == 422
        ids = [item["job_id"] for item in body["jobs"] if "job_id" in item]
        assert http.post("/jobs/batch", json=[{"model": "echo", "inputs": 1}] * 1001).status_code == 422
        assert http.post("/jobs/batch", json=[]).status_code == 422

        def all_done() -> bool:
            found = http.get("/jobs", params={"ids": ",".join(ids)}).json()
            return not found["not_found"] and all(view["status"] == "completed" for view in found["jobs"])

        until_sync(all_done, timeout=60, interval=0.2, message="the batch done")
        views = http.get("/jobs", params={"ids": f"{ids[0]},{ids[500]},nope"}).json()
        assert [view["result"] for view in views["jobs"]] == [0, 502] and views["not_found"] == [
            "nope"
        ]  # 7, 9 refused


def read_events_plainly(url: str, job_id: str, last_event_id: str | None = None) -> list[dict[str, str]]:
    """GET the stream over a bare socket (HTTP/1.0: the body ends when the daemon closes it) and
    split it into events by the SSE rules, with no library."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        resume = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
        request = f"GET /jobs/{job_id}/events HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n{resume}\r\n"
        sock.sendall(request.encode())
        stream = sock.makefile("rb")
        assert stream.readline().split()[1] == b"200"
        while stream.readline() not in (b"\r\n", b""):
            pass  # the headers
        events: list[dict[str, str]] = []
        fields: dict[str, str] = {}
        for raw in stream:
            line = raw.decode().rstrip("\r\n")
            if not line:
                if "data" in fields:
                    events.append(fields)
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        return events


def test_job_events_in_order_with_queue_positions_and_resume(client: Client, shared_daemon: Daemon) -> None:
    blocker = blocked(client, ms=1500)
    waiting = client.submit_many("sleep", [{"ms": 150}] * 4)  # one joins the blocker on the worker
    last = waiting[-1]
    with ThreadPoolExecutor(2) as pool:
        plain = pool.submit(read_events_plainly, shared_daemon.url, last.id)
        through_client = pool.submit(lambda: list(last.events()))
        plain_events = plain.result(timeout=30)
        client_events: list[JobEvent] = through_client.result(timeout=30)
    assert blocker.result(timeout=10) == {"slept_ms": 1500}
    names = [event["event"] for event in plain_events]
    assert names[0] == "queued" and names[-2:] == ["processing", "completed"], names
    positions = [
        json.loads(event["data"])["queue_position"] for event in plain_events if event["event"] == "queued"
    ]
    assert positions[0] >= 2 and positions == sorted(positions, reverse=True) and positions[-1] == 0
    assert json.loads(plain_events[-1]["data"])["result"] == {"slept_ms": 150.0}
    assert [event.event for event in client_events][-2:] == ["processing", "completed"]
    assert client_events[-1].data == client.jobs([last.id])[0]  # the end event is the job's view
    with shared_daemon.client() as http, http.stream("GET", f"/jobs/{last.id}/events") as streamed:
        assert streamed.headers["content-type"].startswith("text/event-stream")
        lines = list(streamed.iter_lines())
    assert "event: completed" in lines
    processing_id = next(event["id"] for event in plain_events if event["event"] == "processing")
    resumed = read_events_plainly(shared_daemon.url, last.id, last_event_id=processing_id)
    assert [event["event"] for event in resumed] == ["completed"]
    assert read_events_plainly(shared_daemon.url, last.id, last_event_id=plain_events[-1]["id"]) == []
    assert [event.event for event in last.events(last_event_id=processing_id)] == ["completed"]
    with shared_daemon.client() as http:
        assert http.get("/jobs/no-such-job/events").status_code == 404


def signed(body: bytes) -> str:
    return "sha256=" + hmac.new(TOKEN.encode(), body, hashlib.sha256).hexdigest()


def test_webhooks_are_signed_retried_and_guarded(client: Client, shared_daemon: Daemon) -> None:
    with receiving(fail_first=1) as receiver:
        job = client.submit("echo", {"hook": 1}, callback_url=receiver.url("/done"))
        until_sync(lambda: len(receiver.taken) == 1, timeout=30, message="the callback taken")
        assert len(receiver.received) == 2  # the first answered 500, the second try was taken
        path, headers, body = receiver.taken[0]
        assert path == "/done" and headers["x-modelsched-job-id"] == job.id
        assert headers["x-modelsched-signature"] == signed(body)
        assert json.loads(body) == client.jobs([job.id])[0]
        assert json.loads(body)["result"] == {"hook": 1}
    for url, reason in [
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://10.1.2.3/hook", "private"),
        ("http://localhost:9/hook", "loopback"),
        ("ftp://127.0.0.1/hook", "http"),
    ]:
        with pytest.raises(ApiError) as refused:
            client.submit("echo", 1, callback_url=url)
        assert (refused.value.status, refused.value.field) == (422, "callback_url"), url
        assert reason in refused.value.detail
    with shared_daemon.client() as http:
        batch = http.post(
            "/jobs/batch", json=[{"model": "echo", "inputs": 1, "callback_url": "http://10.0.0.1/"}]
        )
        assert batch.json()["jobs"][0]["field"] == "jobs[0].callback_url"


def test_httpx_sees_the_same_statuses(shared_daemon: Daemon) -> None:
    """The client's errors stand for the daemon's answers (a check that the client adds nothing)."""
    with shared_daemon.client() as http:
        assert http.post("/jobs", json={"model": "nope", "inputs": 1}).status_code == 404
        assert httpx.get(f"{shared_daemon.url}/jobs", timeout=10).status_code == 401


def test_a_result_larger_than_the_pipe_arrives_whole(client: Client) -> None:
    """A 3 MB result is more than the worker's pipe holds: the main process (uvloop watches the pipe,
    and makes its fd non-blocking) must wait for the rest of the frame, not take the child for dead."""
    big = "x" * 3_000_000
    job = client.submit("echo", big)
    assert job.result(timeout=60) == big
    assert job.info()["attempts"] == 1
