"""The `classify` pipeline over REST, end to end: a real daemon (the dev preset, real MiniLM, one
simulated GPU) runs the three stages on the workers they belong on (prep and format on the CPU pool,
encode on the GPU worker) and answers the same thing through `POST /classify`, `POST
/pipelines/classify/infer`, `POST /jobs` and the three stages run by hand; bad requests get 404/422
without a job; `/pipelines`, `/metrics` and `/system/status` show the pipeline, its stage timings and
what its jobs cost, and the costs shown add up to what the jobs' views say they cost."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import Daemon, running_daemon

POSITIVE = "I love this, it is wonderful, brilliant and a real joy. Best purchase ever!"
NEGATIVE = "This is terrible and awful. I hate it, it broke at once and the support was useless."
STAGES = ["prep", "encode", "format"]
ENDED = {"completed", "error", "cancelled"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The dev preset on one simulated 8 GiB GPU: `classify-encode` (device auto) goes to `gpu0-w0`,
    the CPU stages to the CPU pool. The render process is off: no test here renders.

    One warm-up `/classify` loads the three stages' models before any test runs, so no test's wait
    pays for it (a worker keeps sending heartbeats while it loads: `tests/faults/test_slow_loads.py`)."""
    with running_daemon(
        tmp_path_factory.mktemp("pipelines-rest"),
        MODELSCHED_FORCE_CPU="0",
        MODELSCHED_SIMULATED_GPUS="1x8GiB",
        MODELSCHED_RENDER_ENABLED="0",
    ) as running:
        with httpx.Client(base_url=running.url, timeout=310) as http:
            warm = http.post("/classify", json={"text": "warming up", "timeout_s": 300})
            assert warm.status_code == 200, f"{warm.text}\n{running.log()}"
        yield running


@pytest.fixture
def client(daemon: Daemon) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=daemon.url, timeout=90) as http:
        yield http


def classify(client: httpx.Client, text: str) -> dict[str, Any]:
    answer = client.post("/classify", json={"text": text})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def ended_view(client: httpx.Client, job_id: str) -> dict[str, Any]:
    view: dict[str, Any] = client.get(f"/jobs/{job_id}", params={"wait": 30}).json()
    assert view["status"] in ENDED, view
    return view


def assert_same_classification(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert got["label"] == expected["label"]
    assert got["words"] == expected["words"]
    assert got["scores"].keys() == expected["scores"].keys()
    for label, score in expected["scores"].items():
        assert got["scores"][label] == pytest.approx(score, abs=1e-4), label
    assert got["confidence"] == pytest.approx(expected["confidence"], abs=1e-4)


def test_classify_labels_obvious_sentences(client: httpx.Client) -> None:
    for text, label in ((POSITIVE, "positive"), (NEGATIVE, "negative")):
        answer = classify(client, text)
        assert set(answer) == {"job_id", "label", "confidence", "scores", "words", "cost_usd"}
        assert answer["label"] == label, answer
        assert set(answer["scores"]) == {"positive", "negative", "neutral"}
        assert answer["confidence"] == max(answer["scores"].values())
        assert answer["scores"][label] == answer["confidence"]
        assert math.fsum(answer["scores"].values()) == pytest.approx(1.0, abs=1e-5)  # 6 places each
        assert answer["words"] == len(text.split())
        assert answer["cost_usd"] > 0


def test_classify_job_view_shows_each_stage_where_it_ran(client: httpx.Client) -> None:
    answer = classify(client, POSITIVE)
    view = ended_view(client, answer["job_id"])
    assert view["status"] == "completed" and view["pipeline"] == "classify" and view["model"] == "classify"
    assert view["result"]["label"] == answer["label"]
    stages = view["stages"]
    assert [stage["name"] for stage in stages] == STAGES
    assert [stage["model"] for stage in stages] == ["classify-prep", "classify-encode", "classify-format"]
    for stage in stages:
        assert stage["status"] == "completed" and stage["error"] is None, stage
        assert stage["attempts"] == 1
        assert stage["queued_s"] is not None and stage["queued_s"] >= 0
        assert stage["run_s"] is not None and stage["run_s"] >= 0
        assert stage["compute_s"] > 0 and stage["cost_usd"] > 0
    prep, encode, format_ = stages
    for cpu_stage in (prep, format_):
        assert cpu_stage["device"] == "cpu" and cpu_stage["worker"].startswith("cpu-w"), cpu_stage
    assert encode["device"] == "sim-gpu0" and encode["worker"] == "gpu0-w0", encode
    # The job's cost is its stages' (and the answer's); the GPU stage is dearer per second.
    assert view["cost_usd"] == pytest.approx(sum(stage["cost_usd"] for stage in stages), rel=1e-9)
    assert answer["cost_usd"] == view["cost_usd"]
    assert encode["cost_usd"] / encode["compute_s"] == pytest.approx(0.0015)
    assert prep["cost_usd"] / prep["compute_s"] == pytest.approx(0.0002)


def test_every_route_into_the_pipeline_gives_the_same_result(client: httpx.Client) -> None:
    expected = classify(client, NEGATIVE)
    inferred = client.post("/pipelines/classify/infer", json={"inputs": NEGATIVE})
    assert inferred.status_code == 200, inferred.text
    assert inferred.json()["status"] == "completed"
    assert_same_classification(inferred.json()["result"], expected)

    accepted = client.post("/jobs", json={"pipeline": "classify", "inputs": NEGATIVE})
    assert accepted.status_code == 202, accepted.text
    view = ended_view(client, accepted.json()["job_id"])
    assert view["status"] == "completed" and view["pipeline"] == "classify"
    assert_same_classification(view["result"], expected)
    assert [stage["status"] for stage in view["stages"]] == ["completed"] * 3


def test_the_pipeline_equals_its_stages_run_by_hand(client: httpx.Client) -> None:
    for text in (POSITIVE, NEGATIVE):
        expected = classify(client, text)
        value: Any = text
        for model in ("classify-prep", "classify-encode", "classify-format"):
            answer = client.post(f"/models/{model}/infer", json={"inputs": value})
            assert answer.status_code == 200, (model, answer.text)
            value = answer.json()["result"]
        assert_same_classification(value, expected)


def test_bad_requests_are_refused_without_a_job(client: httpx.Client) -> None:
    unknown = client.post("/pipelines/no-such-pipeline/infer", json={"inputs": "hello"})
    assert unknown.status_code == 404 and unknown.json()["error"] == "model_not_found"
    assert "no-such-pipeline" in unknown.json()["detail"] and "classify" in unknown.json()["detail"]
    unknown = client.post("/jobs", json={"pipeline": "no-such-pipeline", "inputs": "hello"})
    assert unknown.status_code == 404 and unknown.json()["error"] == "model_not_found"

    both = client.post("/jobs", json={"model": "echo", "pipeline": "classify", "inputs": "hello"})
    assert both.status_code == 422 and both.json()["field"] == "pipeline", both.text

    # An empty text is refused at submission by the first stage's `validate`, on every route.
    for answer in (
        client.post("/classify", json={"text": ""}),
        client.post("/pipelines/classify/infer", json={"inputs": ""}),
        client.post("/jobs", json={"pipeline": "classify", "inputs": ""}),
    ):
        assert answer.status_code == 422, answer.text
        assert answer.json() == {
            "type": "tag:modelsched,2026:problem/invalid_input",
            "title": "The inputs are not valid for this model",
            "status": 422,
            "error": "invalid_input",
            "detail": "inputs must be a non-empty string",
            "field": "inputs",
        }
    not_text = client.post("/pipelines/classify/infer", json={"inputs": 5})
    assert not_text.status_code == 422 and not_text.json()["field"] == "inputs"

    missing = client.post("/classify", json={"priority": "high"})
    assert missing.status_code == 422 and missing.json()["error"] == "invalid_body"
    assert "`text`" in missing.json()["detail"] and missing.json()["field"] == "text"
    unknown_field = client.post("/classify", json={"text": "hi", "inputs": "hi"})
    assert unknown_field.status_code == 422 and unknown_field.json()["error"] == "invalid_body"


def test_a_text_empty_once_cleaned_is_refused_at_submission(client: httpx.Client) -> None:
    """Whitespace and control characters only: `classify-prep`'s `validate` cleans the text as its
    worker would, so the client gets a 422 naming the field rather than a failed stage."""
    answer = client.post("/pipelines/classify/infer", json={"inputs": " \t\n\u200b "})
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "inputs" and "once cleaned" in answer.json()["detail"]


def test_pipelines_lists_classify_with_its_stages(client: httpx.Client) -> None:
    listed = client.get("/pipelines")
    assert listed.status_code == 200
    by_name = {pipeline["name"]: pipeline for pipeline in listed.json()["pipelines"]}
    assert set(by_name) == {"classify"}
    pipeline = by_name["classify"]
    assert pipeline["description"]
    assert [(s["name"], s["model"], s["device"], s["timeout_s"]) for s in pipeline["stages"]] == [
        ("prep", "classify-prep", "cpu", 30.0),
        ("encode", "classify-encode", "auto", 60.0),
        ("format", "classify-format", "cpu", 30.0),
    ]
    status = client.get("/system/status").json()
    assert status["pipelines"] == listed.json()["pipelines"]


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def test_metrics_show_stage_times_and_costs(client: httpx.Client) -> None:
    classify(client, POSITIVE)
    found = samples(client.get("/metrics").text)

    def values(name: str, **labels: str) -> list[float]:
        return [value for n, have, value in found if n == name and labels.items() <= have.items()]

    for stage in STAGES:
        counts = values("modelsched_stage_seconds_count", pipeline="classify", stage=stage)
        assert len(counts) == 1 and counts[0] >= 1, (stage, counts)
    encode_sum = values("modelsched_stage_seconds_sum", pipeline="classify", stage="encode")
    assert len(encode_sum) == 1 and encode_sum[0] > 0
    assert values("modelsched_cost_usd_total", model="classify-encode", device="gpu")[0] > 0
    assert values("modelsched_cost_usd_total", model="classify-prep", device="cpu")[0] > 0
    assert not values("modelsched_cost_usd_total", model="classify-encode", device="cpu")
    assert values("modelsched_cost_per_1000_jobs_usd")[0] > 0
    assert values("modelsched_cpu_pool_workers", state="running")[0] >= 1


def test_status_costs_add_up_to_the_jobs_costs(client: httpx.Client) -> None:
    """Run last: every classify job this module made (listed by `GET /jobs`) is summed."""
    made = {classify(client, POSITIVE)["job_id"], classify(client, NEGATIVE)["job_id"]}
    listed = client.get("/jobs", params={"model": "classify", "limit": 1000}).json()["jobs"]
    ids = {job["job_id"] for job in listed}
    assert made <= ids
    views = [ended_view(client, job_id) for job_id in sorted(ids)]
    assert all(view["pipeline"] == "classify" for view in views)
    costs = client.get("/system/status").json()["costs"]
    assert costs["by_pipeline"]["classify"] == pytest.approx(
        math.fsum(view["cost_usd"] for view in views), rel=0, abs=1e-12
    )
    assert set(costs["by_device"]) == {"cpu", "gpu"}
    assert costs["by_device"]["cpu"] > 0 and costs["by_device"]["gpu"] > 0
    assert set(costs["by_model"]) >= {"classify-prep", "classify-encode", "classify-format"}
    assert costs["total_usd"] == pytest.approx(math.fsum(costs["by_device"].values()), rel=1e-9)
    assert costs["total_usd"] == pytest.approx(math.fsum(costs["by_model"].values()), rel=1e-9)
    assert costs["jobs_ended"] >= len(views)
    assert costs["per_1000_jobs_usd"] == pytest.approx(1000 * costs["jobs_cost_usd"] / costs["jobs_ended"])
