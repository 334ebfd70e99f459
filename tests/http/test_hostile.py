"""Hostile input, the shapes a web framework's hostile-input suite sends, to every route that takes a
body or parameters: numbers huge and tiny (past 64 bits, 1e400, 5e-324, -0), NaN-ish literals, deep
nesting, odd unicode (escaped lone surrogates, NUL, a BOM, invalid UTF-8), wrong types, duplicate
keys, an empty body, non-JSON, strings near the body limit; as whole bodies and in each field of a
valid body; odd path segments and query values. No answer is a 500, no connection is dropped, every
error answer is the route's documented body (a problem; the protocols' own shape on `/v1`, `/v2`),
every answer is in the OpenAPI document, and the daemon is healthy afterwards: `/healthz` answers and
a normal job still completes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.http.conftest import ERRORS_BODY_LIMIT
from tests.support.daemon import Daemon
from tests.support.documented import Documented, documented

NEAR_LIMIT = ERRORS_BODY_LIMIT - 200

# JSON values as their raw text: what goes into a field, or is a whole body.
VALUES: list[str] = [
    "null",
    "true",
    "0",
    "-0",
    "-0.0",
    "1e400",
    "-1e400",
    "1e-400",
    "5e-324",
    "1.7976931348623157e308",
    str(2**63),
    str(2**64),
    str(-(2**63) - 1),
    str(10**100),
    "0.1234567890123456789012345",
    '""',
    '"\\u0000"',
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"\\uffff\\ufeff\\u202e"',
    '"😀 ünïcödé 中文"',
    "[]",
    "{}",
    "[1, [2, [3, [4]]]]",
    "[" * 40 + "]" * 40,
    '{"a": ' * 40 + "1" + "}" * 40,
    "[" * 5000 + "]" * 5000,
    '{"a": 1, "a": 2}',
    '"' + "x" * 100_000 + '"',
]
# Whole bodies that are not a JSON value of the right shape, or not JSON at all.
RAW_BODIES: list[bytes] = [
    b"",
    b" ",
    b"not json",
    b"NaN",
    b"Infinity",
    b'{"inputs": NaN}',
    b'{"inputs": -Infinity}',
    b"{'inputs': 1}",
    b'{"inputs": 1',
    b'{"inputs": 1}}',
    b'\xef\xbb\xbf{"model": "echo", "inputs": 1}',
    b'{"model": "echo", "inputs": "\xff\xfe"}',
    b'{"model": "echo", "inputs": "\xc0\xaf"}',
    b"\x00\x01\x02",
    b'{"model": "echo", "model": "nope", "inputs": 1}',
    b"[" * 200_000,
    b'{"inputs": "' + b"x" * NEAR_LIMIT + b'"}',
    b'{"model": "echo", "inputs": "' + b"y" * NEAR_LIMIT + b'"}',
    b'{"' + b"k" * NEAR_LIMIT + b'": 1}',
    b'{"inputs": "' + b"z" * ERRORS_BODY_LIMIT + b'"}',
    b'{"model": "echo", "inputs": 1, ' + b", ".join(b'"k%d": 1' % i for i in range(5000)) + b"}",
]
# A valid body per route, by its fields: each field in turn gets each value.
TEMPLATES: dict[str, dict[str, str]] = {
    "/jobs": {
        "model": '"echo"',
        "inputs": "1",
        "priority": '"normal"',
        "timeout_s": "30",
        "idempotency_key": "null",
    },
    "/jobs/batch": {"jobs": '[{"model": "echo", "inputs": 1}]'},
    "/models/echo/infer": {"inputs": "1", "priority": '"high"', "timeout_s": "30"},
    "/models/mlp/infer": {"inputs": "[" + ", ".join(["0.5"] * 256) + "]"},
    "/pipelines/classify/infer": {"inputs": '"text"'},
    "/classify": {"text": '"a text"', "priority": '"low"'},
    "/render": {"url": '"http://127.0.0.1:9/"', "engine": '"http"', "fallback": "null", "timeout_s": "5"},
    "/v1/embeddings": {
        "model": '"mlp"',
        "input": '"text"',
        "encoding_format": '"float"',
        "dimensions": "null",
    },
    "/v2/models/mlp/infer": {
        "inputs": '[{"name": "INPUT", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]',
        "outputs": "null",
    },
}
V2_TENSOR_FIELDS = ("name", "shape", "datatype", "data")
PATH_SEGMENTS = ["%00", "%ED%A0%80", "%FF", "%F0%9F%98%80", "%20", "%0A", "a" * 4000, "-0", "1e400"]
QUERY_VALUES = [
    "",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e400",
    "-0",
    "0",
    "-1",
    str(2**64),
    "%00",
    "%ED%A0%80",
    "x",
]
ALLOWED_5XX = {"/render": {502, 504}, "/models/echo/infer": {504}, "/jobs": set()}


def body_with(template: dict[str, str], field: str, value: str) -> bytes:
    fields = {**template, field: value}
    return ("{" + ", ".join(f'"{name}": {text}' for name, text in fields.items()) + "}").encode()


def v2_body(field: str, value: str) -> bytes:
    tensor = {"name": '"INPUT"', "shape": "[1, 2]", "datatype": '"FP32"', "data": "[1, 2]", field: value}
    inner = "{" + ", ".join(f'"{name}": {text}' for name, text in tensor.items()) + "}"
    return ('{"inputs": [' + inner + "]}").encode()


def hostile_requests() -> Iterator[tuple[str, str, bytes | None]]:
    """(method, path with its query, body): every body route with every shape, then the parameters."""
    for path, template in TEMPLATES.items():
        for raw in RAW_BODIES:
            yield "POST", path, raw
        for value in VALUES:
            yield "POST", path, value.encode()
            for field in template:
                yield "POST", path, body_with(template, field, value)
        if path.startswith("/v2"):
            for value in VALUES:
                for field in V2_TENSOR_FIELDS:
                    yield "POST", path, v2_body(field, value)
    for segment in PATH_SEGMENTS:
        for method, path in [
            ("GET", f"/jobs/{segment}"),
            ("DELETE", f"/jobs/{segment}"),
            ("GET", f"/jobs/{segment}/events"),
            ("POST", f"/models/{segment}/infer"),
            ("POST", f"/models/{segment}/load"),
            ("POST", f"/models/{segment}/unload"),
            ("POST", f"/pipelines/{segment}/infer"),
            ("GET", f"/v1/models/{segment}"),
            ("GET", f"/v2/models/{segment}"),
            ("GET", f"/v2/models/{segment}/ready"),
            ("POST", f"/v2/models/{segment}/infer"),
            ("GET", f"/v2/models/mlp/versions/{segment}"),
        ]:
            yield method, path, b'{"inputs": 1}' if method == "POST" else None
    for value in QUERY_VALUES:
        for method, path in [
            ("GET", f"/jobs?limit={value}"),
            ("GET", f"/jobs?status={value}"),
            ("GET", f"/jobs?model={value}"),
            ("GET", f"/jobs?ids={value}"),
            ("GET", f"/jobs/none?wait={value}"),
            ("GET", f"/jobs/none/events?last_event_id={value}"),
            ("POST", f"/models/echo/infer?timeout={value}"),
            ("POST", f"/pipelines/classify/infer?timeout={value}"),
            ("POST", f"/render?timeout={value}"),
        ]:
            yield method, path, b'{"inputs": 1}' if method == "POST" else None
    yield "GET", "/jobs?ids=" + ",".join(["a"] * 5000), None
    yield "GET", "/jobs?" + "&".join(f"ids={index}" for index in range(1500)), None


def protocol_problems(path: str, answer: httpx.Response) -> list[str]:
    """What is wrong with an error answer's body for its route's protocol."""
    body: Any = answer.json()
    if path.startswith("/v1/") and answer.status_code != 401:
        ok = isinstance(body.get("error"), dict) and isinstance(body["error"].get("message"), str)
    elif path.startswith("/v2/") and answer.status_code != 401:
        ok = isinstance(body.get("error"), str)
    else:
        ok = (
            answer.headers["content-type"] == "application/problem+json"
            and body["status"] == answer.status_code
        )
    return [] if ok else [f"{path} -> {answer.status_code}: not the route's error body: {answer.text[:200]}"]


def test_no_hostile_input_gets_a_500_or_an_undocumented_answer(errors_daemon: Daemon) -> None:
    log_before = len(errors_daemon.log())
    failures: list[str] = []
    seen: set[tuple[str, str, int]] = set()
    sent = 0
    with errors_daemon.client() as http:
        http.timeout = httpx.Timeout(60.0)
        schema: Documented = documented(http)
        for method, path, body in hostile_requests():
            headers = {"content-type": "application/json"} if body is not None else {}
            try:
                answer = http.request(method, path, content=body, headers=headers)
            except httpx.HTTPError as exc:  # a dropped connection is a failure too
                failures.append(f"{method} {path[:80]}: {type(exc).__name__}: {exc}")
                continue
            sent += 1
            bare = path.split("?")[0]
            code = answer.status_code
            if code >= 500 and code not in ALLOWED_5XX.get(bare, set()):
                failures.append(f"{method} {path[:80]} {(body or b'')[:80]!r} -> {code}: {answer.text[:300]}")
            if code >= 400:
                failures += protocol_problems(bare, answer)
            key = (method, schema.template(method, bare) or bare, code)
            if key not in seen:  # each kind of answer checked against the document once
                seen.add(key)
                failures += schema.problems(method, bare, answer)
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").status_code == 200
        job_id = http.post("/jobs", json={"model": "echo", "inputs": "after the storm"}).json()["job_id"]
        view = http.get(f"/jobs/{job_id}", params={"wait": 30}).json()
        assert view["status"] == "completed" and view["result"] == "after the storm"
        assert http.post("/models/mlp/infer", json={"inputs": [0.5] * 256}).status_code == 200
    assert not failures, f"{len(failures)} failure(s):\n" + "\n".join(failures[:30])
    assert sent == sum(1 for _ in hostile_requests()) > 1400 and {code for _, _, code in seen} >= {
        200,
        202,
        404,
        413,
        422,
    }
    assert ("POST", "/jobs", 413) in seen and ("POST", "/models/{model}/infer", 413) in seen
    new_log = errors_daemon.log()[log_before:]
    assert "unexpected error" not in new_log and "Exception in ASGI application" not in new_log, new_log[
        -3000:
    ]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_is_json_whatever_its_content_type_says(
    errors_daemon: Daemon, content_type: str | None
) -> None:
    with errors_daemon.client() as http:
        headers = {"content-type": content_type} if content_type else {}
        answer = http.post("/models/echo/infer", content=b'{"inputs": "plain"}', headers=headers)
        assert answer.status_code == 200 and answer.json()["result"] == "plain"
        refused = http.post("/models/echo/infer", content=b"inputs=plain", headers=headers)
        assert refused.status_code == 422 and refused.json()["error"] == "malformed_json"
