"""The metrics operators need, each seen moving with real jobs on a real daemon: submissions counted
once (idempotent replays, batches, renders), model loads and failed loads, a worker's death (its
restart, the job queued again, the try it cost), queue depth per model, render outcomes, HTTP
requests by route template and code, `process_*`, `modelsched_build_info`."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import Daemon
from tests.support.pages import PageServer
from tests.support.polling import until_sync

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(http: httpx.Client) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def http(errors_daemon: Daemon) -> Iterator[httpx.Client]:
    with errors_daemon.client() as client:
        client.timeout = httpx.Timeout(60.0)
        yield client


def ended(http: httpx.Client, job_id: str) -> dict[str, object]:
    view: dict[str, object] = http.get(f"/jobs/{job_id}", params={"wait": 30}).json()
    assert view["status"] in ("completed", "error", "cancelled"), view
    return view


def test_each_submission_is_counted_once(http: httpx.Client, server: PageServer) -> None:
    before = samples(http)
    body = {"model": "echo", "inputs": "once", "idempotency_key": f"metrics-{os.getpid()}"}
    first = http.post("/jobs", json=body).json()["job_id"]
    assert http.post("/jobs", json=body).json()["job_id"] == first  # a replay: the same job, not a new one
    assert http.post("/models/echo/infer", json={"inputs": 1}).status_code == 200
    batch = http.post("/jobs/batch", json=[{"model": "echo", "inputs": 1}, {"model": "echo", "inputs": 2}])
    assert batch.json()["accepted"] == 2
    page = {"url": f"{server.base}/links?n=3", "engine": "http"}
    assert http.post("/render", json=page).status_code == 200
    render_job = http.post("/jobs", json={"model": "render", "inputs": page}).json()["job_id"]
    assert ended(http, render_job)["status"] == "completed"
    refused = http.post("/render", json={"url": "http://169.254.169.254/", "engine": "http"})
    assert refused.status_code == 422  # refused at submission: never a job
    failed = http.post("/render", json={"url": "http://127.0.0.1:9/", "engine": "http", "fallback": None})
    assert failed.status_code == 502, failed.text
    after = samples(http)
    assert (
        value(after, "modelsched_jobs_submitted_total", model="echo")
        - value(before, "modelsched_jobs_submitted_total", model="echo")
        == 4
    )
    assert (
        value(after, "modelsched_jobs_submitted_total", model="render")
        - value(before, "modelsched_jobs_submitted_total", model="render")
        == 3
    )

    def render_outcomes(found: Samples, outcome: str) -> float:
        return value(found, "modelsched_render_jobs_ended_total", outcome=outcome)

    assert render_outcomes(after, "completed") - render_outcomes(before, "completed") == 2
    failures = {
        outcome
        for (name, labels) in after
        if name == "modelsched_render_jobs_ended_total"
        for _, outcome in labels
    }
    assert (
        sum(render_outcomes(after, one) - render_outcomes(before, one) for one in failures - {"completed"})
        == 1
    )
    assert value(after, "modelsched_render_renders_total", outcome="ok") >= 2
    assert value(after, "modelsched_render_renders_total", outcome="failed") >= 1


def test_model_loads_are_timed_and_failed_loads_counted(http: httpx.Client) -> None:
    before = samples(http)
    job_id = http.post("/jobs", json={"model": "failing", "inputs": 1}).json()["job_id"]
    assert ended(http, job_id)["error_kind"] == "load"
    http.post("/models/mlp/unload")
    assert http.post("/models/mlp/load").status_code == 200

    def loaded() -> bool:
        now = samples(http)
        return value(now, "modelsched_model_load_seconds_count", model="mlp") > value(
            before, "modelsched_model_load_seconds_count", model="mlp"
        )

    until_sync(loaded, timeout=30, interval=0.1, message="mlp's load timed")
    after = samples(http)
    assert (
        value(after, "modelsched_model_load_failures_total", model="failing")
        - value(before, "modelsched_model_load_failures_total", model="failing")
        == 1
    )
    assert value(after, "modelsched_model_load_seconds_sum", model="mlp") > value(
        before, "modelsched_model_load_seconds_sum", model="mlp"
    )


def test_a_worker_death_shows_as_a_restart_a_requeue_and_an_attempt(http: httpx.Client) -> None:
    before = samples(http)
    job_id = http.post("/jobs", json={"model": "sleep", "inputs": {"ms": 1500}}).json()["job_id"]
    until_sync(
        lambda: http.get(f"/jobs/{job_id}").json()["status"] == "processing", timeout=30, message="processing"
    )
    worker_id = http.get(f"/jobs/{job_id}").json()["worker"]
    worker = next(
        one for one in http.get("/system/status").json()["workers"] if one["worker_id"] == worker_id
    )
    os.kill(worker["pid"], signal.SIGKILL)  # a child of the daemon this test session started
    view = ended(http, job_id)
    assert view["status"] == "completed" and view["attempts"] == 2
    after = samples(http)
    labels = {"worker": worker_id, "device": worker["device"]}
    assert (
        value(after, "modelsched_worker_restarts_total", **labels)
        - value(before, "modelsched_worker_restarts_total", **labels)
        == 1
    )
    assert (
        value(after, "modelsched_jobs_requeued_total", model="sleep", reason="worker_died")
        - value(before, "modelsched_jobs_requeued_total", model="sleep", reason="worker_died")
        == 1
    )
    assert (
        value(after, "modelsched_job_attempts_sum", model="sleep")
        - value(before, "modelsched_job_attempts_sum", model="sleep")
        == 2
    )
    assert value(after, "modelsched_job_attempts_bucket", model="sleep", le="1.0") == value(
        before, "modelsched_job_attempts_bucket", model="sleep", le="1.0"
    )


def test_queue_depth_per_model(http: httpx.Client) -> None:
    ids = [
        http.post("/jobs", json={"model": "sleep", "inputs": {"ms": 400}}).json()["job_id"] for _ in range(4)
    ]

    def depth() -> float:
        return value(samples(http), "modelsched_model_queue_jobs", model="sleep")

    until_sync(lambda: depth() >= 2, timeout=10, interval=0.05, message="sleep jobs queued")
    assert value(samples(http), "modelsched_model_queue_jobs", model="echo") == 0
    for job_id in ids:
        ended(http, job_id)
    assert depth() == 0


def test_http_requests_by_route_template_and_code(errors_daemon: Daemon, http: httpx.Client) -> None:
    def count(found: Samples, route: str, method: str, code: str) -> float:
        return value(found, "modelsched_http_requests_total", route=route, method=method, code=code)

    before = samples(http)
    for job_id in ("one", "two"):
        assert http.get(f"/jobs/{job_id}").status_code == 404
    assert http.post("/models/echo/infer", json={"inputs": 1}).status_code == 200
    assert http.get("/no/such/route").status_code == 404
    with errors_daemon.client(token=None) as anonymous:
        assert anonymous.get("/jobs").status_code == 401
    after = samples(http)
    for route, method, code, times in [
        ("/jobs/{job_id}", "GET", "404", 2),
        ("/models/{model}/infer", "POST", "200", 1),
        ("unmatched", "GET", "404", 1),
        ("unmatched", "GET", "401", 1),
    ]:
        assert count(after, route, method, code) - count(before, route, method, code) == times, route
    seconds = "modelsched_http_request_seconds_count"
    assert (
        value(after, seconds, route="/jobs/{job_id}", method="GET")
        - value(before, seconds, route="/jobs/{job_id}", method="GET")
        == 2
    )
    assert not any("one" in dict(labels).get("route", "") for _, labels in after)


def test_process_build_gpu_and_worker_gauges(http: httpx.Client) -> None:
    found = samples(http)
    assert value(found, "process_resident_memory_bytes") > 10_000_000
    assert value(found, "process_cpu_seconds_total") > 0 and value(found, "process_start_time_seconds") > 0
    build = [labels for (name, labels) in found if name == "modelsched_build_info"]
    assert len(build) == 1 and dict(build[0])["version"] == "0.1.0"
    assert value(found, "modelsched_build_info", **dict(build[0])) == 1
    assert value(found, "modelsched_workers_ready", device="cpu") >= 1
    assert not any(name == "modelsched_workers_up" for name, _ in found)
    text = http.get("/metrics").text
    assert "# TYPE modelsched_gpu_utilization_ratio gauge" in text  # samples only on real cards
