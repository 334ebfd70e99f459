"""One error body for every non-2xx answer (RFC 9457 problem details, `application/problem+json`),
from every layer that can answer: the bearer check, Starlette's routing (404, 405), FastAPI's
parameter validation, the body reader (413), the body decoder (422, with the bounds of
`json_bounds`), the scheduler's refusals, a job's failure, and an unexpected exception (500, with an
error id that is in the log line holding the traceback, never the exception's text)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from scheduler.http.json_bounds import MAX_DEPTH
from scheduler.http.problems import TITLES, TYPE_PREFIX
from tests.http.conftest import ERRORS_BODY_LIMIT
from tests.support.daemon import Daemon
from tests.support.polling import until_sync

PROBLEM_FIELDS = {"type", "title", "status", "error", "detail", "field"}


def assert_problem(
    answer: httpx.Response, status: int, error: str, field: str | None = None
) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json", answer.headers
    body: dict[str, Any] = answer.json()
    assert set(body) >= PROBLEM_FIELDS, body
    assert body["status"] == status and body["error"] == error, body
    assert body["type"] == TYPE_PREFIX + error and body["title"] == TITLES[error]
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["field"] == field, body
    return body


@pytest.fixture
def http(errors_daemon: Daemon) -> httpx.Client:
    return errors_daemon.client()


def test_refusals_before_any_route_are_problems(errors_daemon: Daemon, http: httpx.Client) -> None:
    with errors_daemon.client(token=None) as anonymous:
        body = assert_problem(anonymous.get("/jobs"), 401, "unauthorized")
        assert "Bearer" in body["detail"]
        assert anonymous.get("/jobs").headers["www-authenticate"] == "Bearer"
    assert_problem(http.get("/no/such/route"), 404, "not_found")
    not_allowed = http.put("/jobs")
    assert_problem(not_allowed, 405, "method_not_allowed")
    assert not_allowed.headers["allow"] == "GET, POST"  # every method of the path, not only one route's
    assert_problem(http.delete("/models/echo/infer"), 405, "method_not_allowed")
    too_large = http.post("/jobs", content=b"x" * (ERRORS_BODY_LIMIT + 1))
    assert_problem(too_large, 413, "body_too_large")
    assert "Retry-After" not in too_large.headers


def test_parameters_and_bodies_name_the_field(http: httpx.Client) -> None:
    assert_problem(http.get("/jobs", params={"limit": 0}), 422, "invalid_request", "limit")
    assert_problem(http.get("/jobs/x", params={"wait": "soon"}), 422, "invalid_request", "wait")
    assert_problem(
        http.post("/models/echo/infer?timeout=nan", json={"inputs": 1}), 422, "invalid_request", "timeout"
    )
    assert_problem(http.post("/jobs", content=b"{"), 422, "malformed_json")
    assert_problem(http.post("/jobs", json={"model": "echo", "inputs": 1, "x": 1}), 422, "invalid_body", "x")
    assert_problem(http.post("/jobs", json={"model": "mlp", "inputs": [1]}), 422, "invalid_input", "inputs")
    refused = http.post(
        "/models/mlp/infer", json={"inputs": [1.0] * 255}
    )  # by a front, when there are fronts
    assert_problem(refused, 422, "invalid_input", "inputs")
    assert "256 numbers" in refused.json()["detail"]
    assert_problem(http.post("/jobs", json={"model": "nope", "inputs": 1}), 404, "model_not_found")
    assert_problem(http.get("/jobs/nope"), 404, "job_not_found")
    batch = http.post(
        "/jobs/batch", json={"jobs": [{"model": "echo", "inputs": 1}, {"model": "nope", "inputs": 1}]}
    )
    assert batch.status_code == 200 and batch.json()["jobs"][1]["code"] == 404


@pytest.mark.parametrize("path", ["/jobs", "/models/echo/infer", "/jobs/batch"])
def test_values_past_the_bounds_get_422_naming_the_field(http: httpx.Client, path: str) -> None:
    def send(inputs: str) -> httpx.Response:
        job = (
            f'{{"model": "echo", "inputs": {inputs}}}'
            if path != "/models/echo/infer"
            else f'{{"inputs": {inputs}}}'
        )
        body = f'{{"jobs": [{job}]}}' if path == "/jobs/batch" else job
        return http.post(path, content=body.encode(), headers={"content-type": "application/json"})

    def refused(answer: httpx.Response, field: str, words: str) -> None:
        if path == "/jobs/batch":  # each item alone: its error in its place
            item = answer.json()["jobs"][0]
            assert answer.status_code == 200 and item["code"] == 422, answer.text
            assert item["field"] == f"jobs[0].{field}" and words in item["detail"]
        else:
            assert words in assert_problem(answer, 422, "invalid_body", field)["detail"]

    refused(send(str(2**64)), "inputs", "64-bit")
    refused(send(f'{{"a": [1, {-(2**63) - 1}]}}'), "inputs.a[1]", "64-bit")
    refused(send("[" * MAX_DEPTH + "]" * MAX_DEPTH), "inputs" + "[0]" * (MAX_DEPTH - 1), "deeper")
    refused(send("1e400"), "inputs", "out of range")
    for extreme in (str(2**64 - 1), str(-(2**63)), "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)):
        answer = send(extreme)
        assert answer.status_code in (200, 202), answer.text  # the bounds themselves are fine
        if path == "/jobs/batch":
            assert answer.json()["accepted"] == 1, answer.text


def test_nesting_too_deep_to_decode_is_a_422(http: httpx.Client) -> None:
    deep = b'{"inputs": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"  # under /render's 64 KiB limit
    for path in ("/jobs", "/models/echo/infer", "/render", "/v1/embeddings"):
        answer = http.post(path, content=deep)
        assert answer.status_code == 422, (path, answer.text)
        if not path.startswith("/v1"):
            assert assert_problem(answer, 422, "invalid_body", answer.json()["field"])["field"] in (
                None,
                "inputs",
            )


def test_a_failed_job_answers_a_problem_naming_the_job(http: httpx.Client) -> None:
    failed = assert_problem(
        http.post("/models/echo/infer", json={"inputs": {"fail": "broken"}}), 502, "job_failed"
    )
    assert failed["detail"] == "ItemError: broken" and failed["job_status"] == "error"
    assert http.get(f"/jobs/{failed['job_id']}").json()["error"] == "ItemError: broken"
    waited = http.post("/models/sleep/infer", params={"timeout": 0.1}, json={"inputs": {"ms": 1500}})
    assert assert_problem(waited, 504, "wait_ended")["job_status"] in {"queued", "processing"}
    assert "Retry-After" not in waited.headers
    job_timeout = http.post(
        "/models/sleep/infer", params={"timeout": 10}, json={"inputs": {"ms": 3000}, "timeout_s": 0.2}
    )
    assert assert_problem(job_timeout, 504, "job_timeout")["job_status"] == "error"
    raw = http.post(
        "/models/echo/infer", json={"inputs": "text"}, headers={"Accept": "application/octet-stream"}
    )
    assert assert_problem(raw, 406, "not_acceptable")["job_status"] == "completed"


@pytest.mark.parametrize("path", ["/jobs", "/models/buggy/infer", "/jobs/batch"])
def test_an_unexpected_exception_is_a_500_with_an_error_id_in_the_log(
    errors_daemon: Daemon, http: httpx.Client, path: str
) -> None:
    """`buggy`'s `validate` raises KeyError: a bug, not a refusal. The client gets a 500 with an opaque
    id, no exception text and no `Retry-After` (a bug is not retried); the log has the traceback
    under the same id."""
    body = {"model": "buggy", "inputs": "bug"} if path != "/models/buggy/infer" else {"inputs": "bug"}
    answer = http.post(path, json={"jobs": [body]} if path == "/jobs/batch" else body)
    problem = assert_problem(answer, 500, "internal_error")
    error_id = problem["error_id"]
    assert re.fullmatch(r"err_[0-9a-f]{16}", error_id) and error_id in problem["detail"]
    assert "internal detail" not in answer.text and "KeyError" not in answer.text
    assert "retry-after" not in answer.headers

    def logged() -> bool:
        log = errors_daemon.log()
        at = log.find(error_id)
        return at >= 0 and "Traceback" in log[at:] and "internal detail that must not leak" in log[at:]

    until_sync(logged, timeout=10, message=f"{error_id} with its traceback in the log")
    assert errors_daemon.log().count(error_id) == 1
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.post("/models/buggy/infer", json={"inputs": "fine"}).json()["result"] == "fine"
