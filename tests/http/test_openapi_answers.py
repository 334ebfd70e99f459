"""The OpenAPI document lists exactly what each route sends. The test walks the document: every
documented answer (operation, status code) is provoked on a real daemon and its status, media type
and body are checked against the document; every documented answer has a provocation or a reason why
it is proven elsewhere (`ELSEWHERE`), and no provocation is left for an answer no longer documented.
Three phases: the daemon at work, its queue full (429), its shutdown begun (503). Operation ids are
readable and stable, and every operation has a tag."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.daemon import Daemon, running_daemon
from tests.support.documented import Documented, documented
from tests.support.pages import PageServer
from tests.support.polling import until_sync

TOKEN = "walk"
MAX_QUEUE = 3
CONFIG = """
[[models]]
name = "echo"
adapter = "echo"

[[models]]
name = "sleep"
adapter = "sleep"

[[models]]
name = "mlp"
adapter = "mlp"

[[models]]
name = "minilm"
adapter = "minilm"

[[models]]
name = "buggy"
adapter = "tests.support.fault_adapters:BuggyValidateAdapter"

[[models]]
name = "big-mlp"
adapter = "mlp"
device = "gpu"

[[pipelines]]
name = "classify"
stages = ["echo"]

[[pipelines]]
name = "slow"
stages = ["sleep"]

[[pipelines]]
name = "on-gpu"
stages = ["big-mlp"]
"""
STABLE_IDS = {  # a client generated from the document names its methods after these: never renamed
    ("post", "/jobs"): "submit_job",
    ("get", "/jobs/{job_id}"): "get_job",
    ("delete", "/jobs/{job_id}"): "cancel_job",
    ("get", "/jobs"): "list_jobs",
    ("post", "/jobs/batch"): "submit_batch",
    ("post", "/models/{model}/infer"): "infer_model",
    ("post", "/pipelines/{pipeline}/infer"): "infer_pipeline",
    ("post", "/render"): "render",
    ("get", "/system/status"): "system_status",
    ("post", "/v1/embeddings"): "openai_embeddings",
    ("post", "/v2/models/{model}/infer"): "v2_infer",
}
ANY_500 = "the one exception handler answers it, provoked on POST /jobs, /jobs/batch and the hot path; no input makes this route fail unexpectedly (tests/http/test_hostile.py)"
SAME_WAIT = "result_answer, shared with POST /pipelines/{pipeline}/infer where it is provoked"
ELSEWHERE: dict[tuple[str, str, int], str] = {
    ("post", "/jobs/batch", 503): "a journal commit failing: tests/journal/test_failed_commits.py",
    ("delete", "/jobs/{job_id}", 503): "only between the end of the drain and the server's close",
    ("post", "/classify", 404): "no `classify` pipeline registered; the same body as any 404",
    ("post", "/classify", 409): SAME_WAIT,
    ("post", "/classify", 502): SAME_WAIT,
    ("post", "/classify", 504): SAME_WAIT,
    ("post", "/classify", 507): SAME_WAIT,
    ("post", "/render", 404): "rendering off (`render_enabled = false`); the same body as any 404",
    (
        "post",
        "/v1/embeddings",
        409,
    ): "a job cancelled while the request waits: provoked on /models/{model}/infer",
    (
        "post",
        "/v1/embeddings",
        502,
    ): "minilm does not fail on text; the protocol's shape of every error is checked here",
    ("post", "/v1/embeddings", 504): "a wait of 60 s; the protocol's shape of every error is checked here",
    ("post", "/v1/embeddings", 507): "no embedding model too large for this daemon",
    (
        "post",
        "/v2/models/{model}/infer",
        409,
    ): "a job cancelled while the request waits: provoked on /models/{model}/infer",
    ("post", "/v2/models/{model}/infer", 502): "mlp does not fail on numbers",
    ("post", "/v2/models/{model}/infer", 504): "a wait of 60 s",
}
ELSEWHERE |= {
    (method, "/v2/models/{model}/versions/{version}/infer", code): reason
    for (method, template, code), reason in list(ELSEWHERE.items())
    if template == "/v2/models/{model}/infer"
}

Provoke = Callable[[httpx.Client], httpx.Response]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp_path = tmp_path_factory.mktemp("walk")
    config = tmp_path / "models.toml"
    config.write_text(CONFIG)
    with running_daemon(
        tmp_path,
        token=TOKEN,
        MODELSCHED_CONFIG=str(config),
        MODELSCHED_MAX_QUEUE=str(MAX_QUEUE),
        MODELSCHED_MAX_BODY_BYTES="100000",
        MODELSCHED_SHUTDOWN_GRACE_S="60",
        MODELSCHED_RENDER_ALLOW_HOSTS="127.0.0.1",
        MODELSCHED_RENDER_RETRIES="1",
    ) as running:
        yield running


def post(path: str, body: Any = None, **options: Any) -> Provoke:
    return lambda http: http.post(path, json=body, **options)


def get(path: str, **options: Any) -> Provoke:
    return lambda http: http.get(path, **options)


def too_large(path: str) -> Provoke:
    return lambda http: http.post(path, content=b'{"inputs": "' + b"x" * 200_000 + b'"}')


def cancelled_while_waiting(path: str, body: Any, model: str) -> Provoke:
    """The request waits for its job; the job is cancelled meanwhile (409)."""

    def provoke(http: httpx.Client) -> httpx.Response:
        with ThreadPoolExecutor(1) as pool:
            answer: Future[httpx.Response] = pool.submit(http.post, path, json=body)
            running: list[str] = []

            def found() -> bool:
                jobs = http.get("/jobs", params={"model": model, "status": "processing"}).json()["jobs"]
                running[:] = [job["job_id"] for job in jobs]
                return bool(running)

            until_sync(found, timeout=30, message=f"a {model} job running")
            assert http.delete(f"/jobs/{running[0]}").status_code == 200
            return answer.result(30)

    return provoke


def at_work(server: PageServer, ended_job: str) -> dict[tuple[str, str, int], Provoke]:
    """The answers of a daemon at work."""
    job = f"/jobs/{ended_job}"

    def cancel_a_queued_job(http: httpx.Client) -> httpx.Response:
        job_id = http.post("/jobs", json={"model": "sleep", "inputs": 10_000}).json()["job_id"]
        return http.delete(f"/jobs/{job_id}")

    slow_page = {"url": f"{server.base}/slow?s=4", "engine": "http", "fallback": None}
    tensor = {"inputs": [{"name": "INPUT", "shape": [1, 256], "datatype": "FP32", "data": [0.5] * 256}]}
    provokes: dict[tuple[str, str, int], Provoke] = {
        ("post", "/jobs", 202): post("/jobs", {"model": "echo", "inputs": 1}),
        ("post", "/jobs", 404): post("/jobs", {"model": "nope", "inputs": 1}),
        ("post", "/jobs", 413): too_large("/jobs"),
        ("post", "/jobs", 422): post("/jobs", {"model": "echo"}),
        ("post", "/jobs", 500): post("/jobs", {"model": "buggy", "inputs": "bug"}),
        ("post", "/jobs", 507): post("/jobs", {"model": "big-mlp", "inputs": [0.5] * 256}),
        ("get", "/jobs", 200): get("/jobs"),
        ("get", "/jobs", 422): get("/jobs", params={"limit": 0}),
        ("post", "/jobs/batch", 200): post("/jobs/batch", [{"model": "echo", "inputs": 1}, {"model": "x"}]),
        ("post", "/jobs/batch", 413): too_large("/jobs/batch"),
        ("post", "/jobs/batch", 422): post("/jobs/batch", []),
        ("post", "/jobs/batch", 500): post("/jobs/batch", [{"model": "buggy", "inputs": "bug"}]),
        ("get", "/jobs/{job_id}", 200): get(job),
        ("get", "/jobs/{job_id}", 404): get("/jobs/nope"),
        ("get", "/jobs/{job_id}", 422): get(job, params={"wait": -1}),
        ("delete", "/jobs/{job_id}", 200): cancel_a_queued_job,
        ("delete", "/jobs/{job_id}", 404): lambda http: http.delete("/jobs/nope"),
        ("delete", "/jobs/{job_id}", 409): lambda http: http.delete(job),
        ("get", "/jobs/{job_id}/events", 200): get(f"{job}/events"),
        ("get", "/jobs/{job_id}/events", 404): get("/jobs/nope/events"),
        ("post", "/models/{model}/infer", 200): post("/models/echo/infer", {"inputs": 1}),
        ("post", "/models/{model}/infer", 404): post("/models/nope/infer", {"inputs": 1}),
        ("post", "/models/{model}/infer", 406): post(
            "/models/echo/infer", {"inputs": "text"}, headers={"Accept": "application/octet-stream"}
        ),
        ("post", "/models/{model}/infer", 409): cancelled_while_waiting(
            "/models/sleep/infer", {"inputs": 10_000}, "sleep"
        ),
        ("post", "/models/{model}/infer", 413): too_large("/models/echo/infer"),
        ("post", "/models/{model}/infer", 422): post("/models/mlp/infer", {"inputs": [1]}),
        ("post", "/models/{model}/infer", 500): post("/models/buggy/infer", {"inputs": "bug"}),
        ("post", "/models/{model}/infer", 502): post(
            "/models/echo/infer", {"inputs": {"fail": "on purpose"}}
        ),
        ("post", "/models/{model}/infer", 504): post("/models/sleep/infer?timeout=0.1", {"inputs": 1000}),
        ("post", "/models/{model}/infer", 507): post("/models/big-mlp/infer", {"inputs": [0.5] * 256}),
        ("get", "/models", 200): get("/models"),
        ("get", "/models/{model}/ready", 200): get("/models/echo/ready"),
        ("get", "/models/{model}/ready", 404): get("/models/nope/ready"),
        ("get", "/models/{model}/ready", 503): get("/models/big-mlp/ready"),
        ("get", "/system/history", 200): get("/system/history"),
        ("get", "/login", 200): get("/login"),
        ("post", "/login", 200): post("/login", {"token": TOKEN}),
        ("post", "/login", 401): post("/login", {"token": "not the token"}),
        ("post", "/login", 413): too_large("/login"),
        ("post", "/login", 422): post("/login", {"tok": TOKEN}),
        ("post", "/logout", 200): post("/logout"),
        ("post", "/models/{model}/load", 200): post("/models/mlp/load"),
        ("post", "/models/{model}/load", 404): post("/models/nope/load"),
        ("post", "/models/{model}/load", 409): post("/models/render/load"),
        ("post", "/models/{model}/load", 507): post("/models/big-mlp/load"),
        ("post", "/models/{model}/unload", 200): post("/models/mlp/unload"),
        ("post", "/models/{model}/unload", 404): post("/models/nope/unload"),
        ("get", "/pipelines", 200): get("/pipelines"),
        ("post", "/pipelines/{pipeline}/infer", 200): post("/pipelines/classify/infer", {"inputs": "t"}),
        ("post", "/pipelines/{pipeline}/infer", 404): post("/pipelines/nope/infer", {"inputs": "t"}),
        ("post", "/pipelines/{pipeline}/infer", 409): cancelled_while_waiting(
            "/pipelines/slow/infer", {"inputs": 10_000}, "slow"
        ),
        ("post", "/pipelines/{pipeline}/infer", 413): too_large("/pipelines/classify/infer"),
        ("post", "/pipelines/{pipeline}/infer", 422): post("/pipelines/classify/infer", {"input": 1}),
        ("post", "/pipelines/{pipeline}/infer", 502): post(
            "/pipelines/classify/infer", {"inputs": {"fail": "on purpose"}}
        ),
        ("post", "/pipelines/{pipeline}/infer", 504): post(
            "/pipelines/slow/infer?timeout=0.1", {"inputs": 1000}
        ),
        ("post", "/pipelines/{pipeline}/infer", 507): post(
            "/pipelines/on-gpu/infer", {"inputs": [0.5] * 256}
        ),
        ("post", "/classify", 200): post("/classify", {"text": "a text"}),
        ("post", "/classify", 413): too_large("/classify"),
        ("post", "/classify", 422): post("/classify", {"txt": "a text"}),
        ("post", "/render", 200): post("/render", {"url": f"{server.base}/links?n=2", "engine": "http"}),
        ("post", "/render", 409): cancelled_while_waiting("/render", slow_page, "render"),
        ("post", "/render", 413): too_large("/render"),
        ("post", "/render", 422): post("/render", {"url": "http://169.254.169.254/"}),
        ("post", "/render", 502): post(
            "/render", {"url": "http://127.0.0.1:9/", "engine": "http", "fallback": None}
        ),
        ("post", "/render", 504): post("/render?timeout=0.2", slow_page),
        ("get", "/system/status", 200): get("/system/status"),
        ("get", "/healthz", 200): get("/healthz"),
        ("get", "/readyz", 200): get("/readyz"),
        ("get", "/metrics", 200): get("/metrics"),
        ("post", "/v1/embeddings", 200): post("/v1/embeddings", {"model": "minilm", "input": ["a", "b"]}),
        ("post", "/v1/embeddings", 404): post("/v1/embeddings", {"model": "nope", "input": "a"}),
        ("post", "/v1/embeddings", 413): too_large("/v1/embeddings"),
        ("post", "/v1/embeddings", 422): post("/v1/embeddings", {"model": "mlp", "input": "a"}),
        ("get", "/v1/models", 200): get("/v1/models"),
        ("get", "/v1/models/{model}", 200): get("/v1/models/echo"),
        ("get", "/v1/models/{model}", 404): get("/v1/models/nope"),
        ("get", "/v2", 200): get("/v2"),
        ("get", "/v2/health/live", 200): get("/v2/health/live"),
        ("get", "/v2/health/ready", 200): get("/v2/health/ready"),
    }
    for version in ("", "/versions/1"):
        model = f"/v2/models/mlp{version}"
        template = "/v2/models/{model}" + ("/versions/{version}" if version else "")
        provokes |= {
            ("get", template, 200): get(model),
            ("get", template, 404): get(f"/v2/models/nope{version}"),
            ("get", f"{template}/ready", 200): get(f"{model}/ready"),
            ("get", f"{template}/ready", 404): get(f"/v2/models/nope{version}/ready"),
            ("get", f"{template}/ready", 503): get(f"/v2/models/big-mlp{version}/ready"),
            ("post", f"{template}/infer", 200): post(f"{model}/infer", tensor),
            ("post", f"{template}/infer", 404): post(f"/v2/models/nope{version}/infer", tensor),
            ("post", f"{template}/infer", 413): too_large(f"{model}/infer"),
            ("post", f"{template}/infer", 422): post(f"{model}/infer", {"inputs": []}),
            ("post", f"{template}/infer", 507): post(f"/v2/models/big-mlp{version}/infer", tensor),
        }
    return provokes


SUBMISSIONS: dict[tuple[str, str], Provoke] = {  # refused whole when the daemon cannot take jobs
    ("post", "/jobs"): post("/jobs", {"model": "echo", "inputs": 1}),
    ("post", "/models/{model}/infer"): post("/models/echo/infer", {"inputs": 1}),
    ("post", "/pipelines/{pipeline}/infer"): post("/pipelines/classify/infer", {"inputs": "t"}),
    ("post", "/classify"): post("/classify", {"text": "t"}),
    ("post", "/render"): post("/render", {"url": "http://127.0.0.1:9/", "engine": "http"}),
    ("post", "/v1/embeddings"): post("/v1/embeddings", {"model": "minilm", "input": "a"}),
    ("post", "/v2/models/{model}/infer"): post(
        "/v2/models/mlp/infer",
        {"inputs": [{"name": "INPUT", "shape": [1, 256], "datatype": "FP32", "data": [0.5] * 256}]},
    ),
    ("post", "/v2/models/{model}/versions/{version}/infer"): post(
        "/v2/models/mlp/versions/1/infer",
        {"inputs": [{"name": "INPUT", "shape": [1, 256], "datatype": "FP32", "data": [0.5] * 256}]},
    ),
}
QUEUE_FULL = {(method, template, 429): provoke for (method, template), provoke in SUBMISSIONS.items()}
SHUTTING_DOWN = {(method, template, 503): provoke for (method, template), provoke in SUBMISSIONS.items()} | {
    ("get", "/readyz", 503): get("/readyz"),
    ("get", "/v2/health/ready", 503): get("/v2/health/ready"),
}


def documented_answers(schema: dict[str, Any]) -> set[tuple[str, str, int]]:
    return {
        (method, path, int(code))
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        for code in operation["responses"]
    }


def check(schema: Documented, http: httpx.Client, key: tuple[str, str, int], provoke: Provoke) -> list[str]:
    method, template, code = key
    answer = provoke(http)
    path = str(answer.request.url.path)
    if answer.status_code != code:
        return [f"{method} {template}: wanted {code}, got {answer.status_code}: {answer.text[:300]}"]
    return schema.problems(method, path, answer)


def test_operation_ids_are_stable_and_readable_and_every_operation_has_a_tag(daemon: Daemon) -> None:
    with daemon.client() as http:
        schema = http.get("/openapi.json").json()
    ids = [
        (method, path, operation["operationId"], operation.get("tags"))
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    ]
    assert len({operation_id for _, _, operation_id, _ in ids}) == len(ids)
    for method, path, operation_id, tags in ids:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", operation_id) and tags, (method, path, operation_id)
        assert not operation_id.endswith(f"_{method}"), operation_id  # not FastAPI's generated id
    found = {(method, path): operation_id for method, path, operation_id, _ in ids}
    assert {key: found.get(key) for key in STABLE_IDS} == STABLE_IDS
    assert not {"HTTPValidationError", "ValidationError"} & set(schema["components"]["schemas"])


def test_every_documented_answer_is_what_the_route_sends(daemon: Daemon, server: PageServer) -> None:
    failures: list[str] = []
    with daemon.client() as http, daemon.client(token=None) as anonymous:
        http.timeout = httpx.Timeout(120.0)
        schema = documented(http)
        answers = documented_answers(schema.schema)
        ended_job = http.post("/jobs", json={"model": "echo", "inputs": 1}).json()["job_id"]
        http.get(f"/jobs/{ended_job}", params={"wait": 30})
        work = at_work(server, ended_job)
        provoked = set(work) | set(QUEUE_FULL) | set(SHUTTING_DOWN)
        unauthorized = {key for key in answers if key[2] == 401} - set(work)
        any_500 = {key for key in answers if key[2] == 500} - provoked
        accounted = provoked | set(ELSEWHERE) | unauthorized | any_500
        assert not answers - accounted, f"documented, never provoked: {sorted(answers - accounted)}"
        assert not provoked - answers, f"provoked, not documented: {sorted(provoked - answers)}"
        assert not set(ELSEWHERE) - answers, sorted(set(ELSEWHERE) - answers)

        for method, template, code in sorted(unauthorized):
            path = template.replace("{job_id}", ended_job).replace("{version}", "1")
            path = re.sub(r"\{[a-z_]+\}", "echo", path)
            failures += check(
                schema,
                anonymous,
                (method, template, code),
                lambda client, m=method, p=path: client.request(m, p),
            )
        for key, provoke in sorted(work.items()):
            failures += check(schema, http, key, provoke)

        sleepers = [
            http.post("/jobs", json={"model": "sleep", "inputs": 20_000}).json()["job_id"]
            for _ in range(MAX_QUEUE + 1)
        ]
        until_sync(
            lambda: http.get("/system/status").json()["queue"]["queued"] >= MAX_QUEUE,
            timeout=30,
            message="queue full",
        )
        for key, provoke in sorted(QUEUE_FULL.items()):
            failures += check(schema, http, key, provoke)
            assert "retry-after" in provoke(http).headers
        running = sleepers[0]
        for job_id in sleepers[1:]:
            http.delete(f"/jobs/{job_id}")
        until_sync(
            lambda: http.get(f"/jobs/{running}").json()["status"] == "processing",
            timeout=30,
            message="running",
        )

        daemon.process.send_signal(signal.SIGTERM)  # the drain waits for the running job
        until_sync(lambda: http.get("/readyz").status_code == 503, timeout=10, message="shutdown begun")
        for key, provoke in sorted(SHUTTING_DOWN.items()):
            failures += check(schema, http, key, provoke)
        assert http.delete(f"/jobs/{running}").status_code == 200  # the drain may end
    daemon.process.wait(60)
    assert not failures, f"{len(failures)} failure(s):\n" + "\n".join(failures)
