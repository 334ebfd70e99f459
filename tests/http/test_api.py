"""The REST daemon end to end: a real uvicorn on a loopback port, real workers, a real journal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import Daemon, running_daemon, wait_status

MLP_INPUT = [0.01 * i for i in range(256)]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("rest"), MODELSCHED_MAX_BODY_BYTES="200000") as running:
        yield running


@pytest.fixture
def client(daemon: Daemon) -> Iterator[httpx.Client]:
    with daemon.client() as http:
        yield http


def test_health_readiness_and_status_page(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "modelsched" in page.text and "/dashboard/dashboard.js" in page.text
    script = client.get("/dashboard/dashboard.js")
    assert script.status_code == 200 and "/system/history" in script.text


def test_submit_long_poll_and_list(client: httpx.Client) -> None:
    answer = client.post("/jobs", json={"model": "echo", "inputs": {"text": "hi"}})
    assert answer.status_code == 202
    accepted = answer.json()
    assert set(accepted) == {"job_id", "status"}
    job = client.get(f"/jobs/{accepted['job_id']}", params={"wait": 10}).json()
    assert job["status"] == "completed" and job["result"] == {"text": "hi"}
    assert job["attempts"] == 1 and job["worker"] and job["device"] == "cpu"
    assert job["created_at"] <= job["started_at"] <= job["ended_at"]
    by_feature = client.post("/jobs", json={"feature": "echo", "inputs": 7}).json()
    assert wait_status(client, by_feature["job_id"], {"completed"})["result"] == 7
    listed = client.get("/jobs", params={"model": "echo", "limit": 2}).json()["jobs"]
    assert [job["job_id"] for job in listed] == [by_feature["job_id"], accepted["job_id"]]
    completed = client.get("/jobs", params={"status": "completed", "limit": 50}).json()["jobs"]
    assert all(job["status"] == "completed" for job in completed)


def test_cancel_a_running_job_then_409(client: httpx.Client) -> None:
    job_id = client.post("/jobs", json={"model": "sleep", "inputs": {"ms": 3000}}).json()["job_id"]
    wait_status(client, job_id, {"processing"}, timeout=20)
    cancelled = client.delete(f"/jobs/{job_id}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.get(f"/jobs/{job_id}").json()["status"] == "cancelled"
    again = client.delete(f"/jobs/{job_id}")
    assert again.status_code == 409 and again.json()["error"] == "job_ended"


def test_synchronous_infer(client: httpx.Client) -> None:
    echo = client.post("/models/echo/infer", json={"inputs": {"text": "hello", "n": 1}})
    assert echo.status_code == 200
    assert echo.json()["status"] == "completed" and echo.json()["result"] == {"text": "hello", "n": 1}
    mlp = client.post("/models/mlp/infer", json={"inputs": MLP_INPUT})
    assert mlp.status_code == 200 and len(mlp.json()["result"]) == 16
    slow = client.post("/models/sleep/infer", params={"timeout": 0.2}, json={"inputs": {"ms": 2000}})
    assert slow.status_code == 504 and slow.json()["job_status"] in {"queued", "processing"}
    assert slow.json()["error"] == "wait_ended" and slow.json()["status"] == 504
    failing = client.post("/models/echo/infer", json={"inputs": {"fail": "broken"}})
    assert failing.status_code == 502 and failing.headers["content-type"] == "application/problem+json"
    assert failing.json()["error"] == "job_failed" and failing.json()["detail"] == "ItemError: broken"
    assert failing.json()["job_status"] == "error" and failing.json()["job_id"]


def test_models_load_unload_and_system_status(client: httpx.Client) -> None:
    names = {model["name"] for model in client.get("/models").json()["models"]}
    assert {"echo", "sleep", "mlp"} <= names
    loaded = client.post("/models/mlp/load").json()
    assert loaded["model"] == "mlp" and loaded["workers"]

    def loaded_on() -> list[str]:
        return next(m for m in client.get("/models").json()["models"] if m["name"] == "mlp")["loaded_on"]

    assert loaded_on() == loaded["workers"]
    status = client.get("/system/status").json()
    assert set(status) >= {"gpu", "workers", "queue", "models", "scheduler"}
    worker = status["workers"][0]
    assert worker["alive"] and worker["pid"] and worker["last_heartbeat"]
    assert set(status["queue"]) >= {"queued", "processing", "completed", "error", "cancelled"}
    unloaded = client.post("/models/mlp/unload").json()
    assert unloaded["workers"] == loaded["workers"] and loaded_on() == []
    assert client.post("/models/nope/load").status_code == 404


def test_metrics_parse_and_count(client: httpx.Client) -> None:
    client.post("/models/echo/infer", json={"inputs": 1})
    families = {family.name: family for family in text_string_to_metric_families(client.get("/metrics").text)}
    for name in (
        "modelsched_jobs_submitted",
        "modelsched_jobs_ended",
        "modelsched_queue_jobs",
        "modelsched_job_queue_wait_seconds",
        "modelsched_job_run_seconds",
        "modelsched_batch_size",
        "modelsched_workers_ready",
        "modelsched_models_loaded",
    ):
        assert name in families, name
    ended = {
        (s.labels["model"], s.labels["status"]): s.value
        for s in families["modelsched_jobs_ended"].samples
        if s.name.endswith("_total")
    }
    assert ended[("echo", "completed")] >= 1
    workers_ready = [s.value for s in families["modelsched_workers_ready"].samples]
    assert sum(workers_ready) >= 1


def test_idempotency_key_returns_the_first_job(client: httpx.Client) -> None:
    body = {"model": "echo", "inputs": "once", "idempotency_key": "key-123"}
    first = client.post("/jobs", json=body).json()["job_id"]
    second = client.post("/jobs", json=body).json()["job_id"]
    assert first == second
    assert (
        len(
            [
                job
                for job in client.get("/jobs", params={"limit": 1000}).json()["jobs"]
                if job["job_id"] == first
            ]
        )
        == 1
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("POST", "/jobs", {"model": "nope", "inputs": 1}, 404, "model_not_found"),
        ("POST", "/models/nope/infer", {"inputs": 1}, 404, "model_not_found"),
        ("POST", "/jobs", {"model": "mlp", "inputs": [1, 2, 3]}, 422, "invalid_input"),
        ("POST", "/jobs", {"model": "echo"}, 422, "invalid_body"),
        ("POST", "/jobs", {"inputs": 1}, 422, "invalid_body"),
        ("POST", "/jobs", {"model": "echo", "inputs": 1, "priority": "urgent"}, 422, "invalid_body"),
        ("POST", "/jobs", {"model": "echo", "inputs": 1, "timeout_s": -1}, 422, "invalid_input"),
        ("POST", "/models/echo/infer", {"inputs": 1, "extra": True}, 422, "invalid_body"),
        ("GET", "/jobs/does-not-exist", None, 404, "job_not_found"),
        ("DELETE", "/jobs/does-not-exist", None, 404, "job_not_found"),
        ("GET", "/jobs?status=weird", None, 422, "invalid_request"),
        ("GET", "/jobs/x?wait=-3", None, 422, "invalid_request"),
    ],
)
def test_error_codes(
    client: httpx.Client, method: str, path: str, body: object, status: int, error: str
) -> None:
    answer = client.request(method, path, json=body) if body is not None else client.request(method, path)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error


def test_invalid_input_names_the_field(client: httpx.Client) -> None:
    answer = client.post("/jobs", json={"model": "mlp", "inputs": [1, 2, 3]})
    assert answer.json()["field"] == "inputs" and "256" in answer.json()["detail"]
    priority = client.post("/jobs", json={"model": "echo", "inputs": 1, "priority": "urgent"}).json()
    assert priority["field"] == "priority"


def test_malformed_json_and_oversized_bodies(client: httpx.Client) -> None:
    for path in ("/jobs", "/models/echo/infer"):
        broken = client.post(path, content=b'{"inputs": [1, 2', headers={"content-type": "application/json"})
        assert broken.status_code == 422 and broken.json()["error"] == "malformed_json"
        huge = client.post(path, content=b'{"inputs": "' + b"x" * 300_000 + b'"}')
        assert huge.status_code == 413 and huge.json()["error"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds as the body streams in
        yield b'{"inputs": "'
        for _ in range(30):
            yield b"y" * 10_000
        yield b'"}'

    streamed = client.post("/models/echo/infer", content=chunks())
    assert streamed.status_code == 413


def test_openapi_describes_every_endpoint(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path, method in [
        ("/jobs", "post"),
        ("/jobs/{job_id}", "get"),
        ("/jobs/{job_id}", "delete"),
        ("/jobs", "get"),
        ("/models/{model}/infer", "post"),
        ("/models", "get"),
        ("/models/{model}/load", "post"),
        ("/models/{model}/unload", "post"),
        ("/system/status", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ]:
        assert method in paths[path], (path, method)
    assert paths["/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SubmitJob"
    }
    assert {"SubmitJob", "InferRequest", "JobView", "ErrorBody"} <= set(schema["components"]["schemas"])
    assert client.get("/docs").status_code == 200


def test_full_queue_gets_429_with_retry_after(tmp_path: Path) -> None:
    with running_daemon(tmp_path, MODELSCHED_MAX_QUEUE="2") as daemon, daemon.client() as http:
        answers = [http.post("/jobs", json={"model": "sleep", "inputs": {"ms": 1500}}) for _ in range(8)]
        codes = [answer.status_code for answer in answers]
        assert codes.count(202) >= 2 and 429 in codes, codes
        refused = next(answer for answer in answers if answer.status_code == 429)
        assert refused.headers["retry-after"] == "1" and refused.json()["error"] == "queue_full"
        accepted = [answer.json()["job_id"] for answer in answers if answer.status_code == 202]
        assert all(wait_status(http, job_id, {"completed"})["status"] == "completed" for job_id in accepted)


def test_auth_on_every_endpoint_but_the_probes(tmp_path: Path) -> None:
    with (
        running_daemon(tmp_path, token="s3cret") as daemon,
        daemon.client(token=None) as anonymous,
        daemon.client(token="wrong") as wrong,
        daemon.client() as good,
    ):
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/readyz").status_code == 200  # a load balancer's probe carries no secret
        for method, path in [
            ("GET", "/system/status"),
            ("GET", "/metrics"),
            ("GET", "/jobs"),
            ("POST", "/models/echo/infer"),
            ("GET", "/openapi.json"),
            ("GET", "/"),
        ]:
            for http in (anonymous, wrong):
                answer = http.request(method, path, json={"inputs": 1} if method == "POST" else None)
                assert answer.status_code == 401, (method, path)
                assert answer.headers["www-authenticate"] == "Bearer"
        assert good.post("/models/echo/infer", json={"inputs": 1}).status_code == 200
        assert good.get("/system/status").status_code == 200


def test_infer_answers_float_vectors_as_raw_little_endian_bytes_on_request(client: httpx.Client) -> None:
    import numpy as np

    as_json = client.post("/models/mlp/infer", json={"inputs": MLP_INPUT}).json()["result"]
    raw = client.post(
        "/models/mlp/infer", json={"inputs": MLP_INPUT}, headers={"Accept": "application/octet-stream"}
    )
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/octet-stream"
    assert (
        raw.headers["x-shape"] == "16" and raw.headers["x-dtype"] == "float32-le" and raw.headers["x-job-id"]
    )
    vector = np.frombuffer(raw.content, dtype="<f4")
    assert np.allclose(vector, as_json, atol=1e-6)
    not_numbers = client.post(
        "/models/echo/infer", json={"inputs": {"a": 1}}, headers={"Accept": "application/octet-stream"}
    )
    assert not_numbers.status_code == 406 and not_numbers.json()["error"] == "not_acceptable"


def test_answers_match_their_documented_schemas(client: httpx.Client) -> None:
    """The OpenAPI schemas come from these structs; the answers must fit them (no field missing,
    none of the wrong type)."""
    import msgspec

    from scheduler.http.schemas import JobList, JobView, ModelList, SystemStatus

    client.post("/models/mlp/load")
    status = msgspec.convert(client.get("/system/status").json(), SystemStatus)
    assert status.workers and status.queue.max_queue > 0
    job_id = client.post("/jobs", json={"model": "echo", "inputs": 1}).json()["job_id"]
    msgspec.convert(client.get(f"/jobs/{job_id}", params={"wait": 10}).json(), JobView)
    msgspec.convert(client.get("/jobs").json(), JobList)
    msgspec.convert(client.get("/models").json(), ModelList)
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    documented = client.get("/openapi.json").json()["paths"]["/system/status"]["get"]["responses"]["200"]
    assert documented["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SystemStatus"
    }
