"""Pipelines through the Python API, on real worker processes and simulated GPUs: where each stage
runs, results equal to running the stages by hand, a failing stage, a stage's timeout, a cancel
mid-pipeline, a SIGKILLed worker under a stage, costs that add up exactly, the elastic CPU pool, and
the CPU executors (`run_cpu`, `map_cpu`, `run_in_thread`, `map_threads`)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from scheduler import JobRequest, Scheduler
from scheduler.errors import InvalidInputError, JobFailedError
from scheduler.settings import ModelConfig, PipelineConfig, Settings, load_settings
from tests.support import pipeline_functions
from tests.support.polling import until

SIMULATED = {"MODELSCHED_SIMULATED_GPUS": "1x8GiB"}
Make = Callable[..., Scheduler]


def settings_with(models: list[ModelConfig], pipelines: list[dict[str, Any]], **options: Any) -> Settings:
    configs = msgspec.convert(pipelines, list[PipelineConfig])
    return Settings(journal_path="", models=models, pipelines=configs, torch_threads=1, **options)


async def submit(scheduler: Scheduler, pipeline: str, inputs: Any, **options: Any) -> str:
    return await scheduler.schedule_job(JobRequest(pipeline=pipeline, inputs=inputs, **options))


async def infer(scheduler: Scheduler, model: str, inputs: Any) -> Any:
    view = await scheduler.wait_for(await scheduler.schedule_job(JobRequest(model=model, inputs=inputs)), 60)
    assert view["status"] == "completed", view
    return view["result"]


@pytest.fixture
def make(make_scheduler: Make) -> Make:
    return make_scheduler


def test_classify_runs_its_cpu_stages_on_cpu_workers_and_equals_the_stages_by_hand(make: Make) -> None:
    settings = load_settings(
        "dev", overrides={"journal_path": "", "render_enabled": False, "torch_threads": 1}
    )
    settings.models = [model for model in settings.models if model.name.startswith("classify-")]

    async def scenario() -> None:
        async with make(settings, environ=SIMULATED) as scheduler:
            texts = ["I love this product, it works great!", "This is  terrible;\tI want a REFUND."]
            job_ids = [await submit(scheduler, "classify", text) for text in texts]
            views = [await scheduler.wait_for(job_id, 120) for job_id in job_ids]
            for text, view in zip(texts, views, strict=True):
                assert view["status"] == "completed", view
                assert view["pipeline"] == "classify" and view["model"] == "classify"
                stages = {stage["name"]: stage for stage in view["stages"]}
                assert [stage["status"] for stage in view["stages"]] == ["completed"] * 3
                assert stages["prep"]["device"] == "cpu" and stages["prep"]["worker"].startswith("cpu-w")
                assert stages["format"]["device"] == "cpu" and stages["format"]["worker"].startswith("cpu-w")
                assert stages["encode"]["device"] == "sim-gpu0" and stages["encode"]["worker"] == "gpu0-w0"
                by_hand = await infer(scheduler, "classify-prep", text)
                by_hand = await infer(scheduler, "classify-encode", by_hand)
                by_hand = await infer(scheduler, "classify-format", by_hand)
                assert view["result"]["label"] == by_hand["label"]
                assert view["result"]["scores"] == pytest.approx(by_hand["scores"], abs=1e-4)
            assert [view["result"]["label"] for view in views] == ["positive", "negative"]

    asyncio.run(scenario())


def test_a_failing_stage_fails_the_job_naming_it_and_later_stages_never_run(make: Make) -> None:
    settings = settings_with(
        [ModelConfig(name="first", adapter="echo"), ModelConfig(name="second", adapter="echo")],
        [{"name": "p", "stages": [{"model": "first", "name": "one"}, {"model": "second", "name": "two"}]}],
    )

    async def scenario() -> None:
        async with make(settings) as scheduler:
            view = await scheduler.wait_for(await submit(scheduler, "p", {"fail": "boom"}), 60)
            assert view["status"] == "error"
            assert view["error"] == "stage 'one' (first) failed: ItemError: boom"
            assert [stage["status"] for stage in view["stages"]] == ["error", "skipped"]
            assert view["stages"][0]["error"] == "ItemError: boom"
            assert scheduler.get_job(view["job_id"]).error_kind == "model"
            assert "second" not in scheduler.costs.by_model  # the second stage never ran
            ok = await scheduler.wait_for(await submit(scheduler, "p", {"x": 1}), 60)
            assert ok["status"] == "completed" and ok["result"] == {"x": 1}

    asyncio.run(scenario())


def test_a_stage_past_its_timeout_fails_the_job_naming_the_stage(make: Make) -> None:
    settings = settings_with(
        [ModelConfig(name="pass", adapter="echo"), ModelConfig(name="slow", adapter="sleep")],
        [{"name": "p", "stages": ["pass", {"model": "slow", "timeout_s": 0.5}]}],
    )

    async def scenario() -> None:
        async with make(settings) as scheduler:
            view = await scheduler.wait_for(await submit(scheduler, "p", {"ms": 20_000}), 60)
            assert view["status"] == "error"
            assert view["error"] == "stage 'slow' (slow) timed out: it did not end within 0.5s"
            assert scheduler.get_job(view["job_id"]).error_kind == "timeout"
            assert [stage["status"] for stage in view["stages"]] == ["completed", "error"]
            # the same pipeline within the stage's time completes (its worker was replaced)
            fine = await scheduler.wait_for(await submit(scheduler, "p", {"ms": 10}), 60)
            assert fine["status"] == "completed" and fine["result"] == {"slept_ms": 10.0}

    asyncio.run(scenario())


def test_cancelling_mid_pipeline_stops_the_stages_not_yet_run(make: Make) -> None:
    settings = settings_with(
        [ModelConfig(name="slow", adapter="sleep"), ModelConfig(name="after", adapter="echo")],
        [{"name": "p", "stages": ["slow", "after"]}],
    )

    async def scenario() -> None:
        async with make(settings) as scheduler:
            await scheduler.wait_ready(60)
            job_id = await submit(scheduler, "p", {"ms": 3_000})
            await until(lambda: scheduler.job_status(job_id)["stages"][0]["status"] == "processing")
            assert scheduler.job_status(job_id)["status"] == "processing"
            view = await scheduler.cancel_job(job_id)
            assert view["status"] == "cancelled"
            assert [stage["status"] for stage in view["stages"]] == ["cancelled", "skipped"]
            # the running stage's result is dropped when it comes; nothing runs the second stage
            probe = await scheduler.wait_for(await submit(scheduler, "p", {"ms": 1}), 60)
            assert probe["status"] == "completed"
            assert scheduler.job_status(job_id)["status"] == "cancelled"
            assert not [job for job in scheduler.table.jobs.values() if job.parent_id == job_id]

    asyncio.run(scenario())


def test_a_sigkilled_worker_under_a_stage_reruns_only_that_stage(make: Make) -> None:
    settings = settings_with(
        [
            ModelConfig(name="before", adapter="echo"),
            ModelConfig(name="infer", adapter="sleep", device="gpu"),
            ModelConfig(name="after", adapter="echo"),
        ],
        [{"name": "p", "stages": ["before", "infer", "after"]}],
    )

    async def scenario() -> None:
        async with make(settings, environ=SIMULATED) as scheduler:
            await scheduler.wait_ready(60)
            job_id = await submit(scheduler, "p", {"ms": 1_500})
            await until(lambda: scheduler.job_status(job_id)["stages"][1]["status"] == "processing")
            gpu_worker = scheduler.workers["gpu0-w0"]
            assert gpu_worker.pid is not None
            os.kill(gpu_worker.pid, signal.SIGKILL)
            view = await scheduler.wait_for(job_id, 60)
            assert view["status"] == "completed" and view["result"] == {"slept_ms": 1500.0}
            attempts = [stage["attempts"] for stage in view["stages"]]
            assert attempts == [1, 2, 1]  # only the stage that was running ran again
            assert [stage["worker"] for stage in view["stages"]] == ["cpu-w0", "gpu0-w0", "cpu-w0"]
            assert scheduler.workers["gpu0-w0"].restarts == 1

    asyncio.run(scenario())


def test_costs_add_up_exactly_from_stage_to_job_to_totals(make: Make) -> None:
    """A stage that sleeps 200 ms alone in its batch has 0.2 s (and a little more) of compute; each
    stage's cost is exactly its worker's rate times its compute, the job's the sum of its stages', the
    totals are the sums of the jobs'."""
    gpu_name = "Simulated GPU 8192 MiB"
    settings = settings_with(
        [
            ModelConfig(name="prep", adapter="echo"),
            ModelConfig(name="work", adapter="sleep", device="gpu"),
            ModelConfig(name="post", adapter="echo"),
            ModelConfig(name="nap", adapter="sleep"),
        ],
        [{"name": "p", "stages": ["prep", "work", "post"]}],
        costs={"cpu": 0.25, "gpu": 9.0, gpu_name: 2.0},
    )

    async def scenario() -> None:
        async with make(settings, environ=SIMULATED) as scheduler:
            views = [
                await scheduler.wait_for(await submit(scheduler, "p", {"ms": 200}), 60) for _ in range(2)
            ]
            for view in views:
                assert view["status"] == "completed"
                prep, work, post = view["stages"]
                assert 0.2 <= work["compute_s"] < 0.5 and 0 < post["compute_s"] < 0.1
                assert work["cost_usd"] == 2.0 * work["compute_s"]  # the card's own rate
                assert post["cost_usd"] == 0.25 * post["compute_s"]
                assert prep["cost_usd"] == 0.25 * prep["compute_s"]
                assert view["cost_usd"] == prep["cost_usd"] + work["cost_usd"] + post["cost_usd"]
                assert work["run_s"] >= work["compute_s"] - 1e-6
            totals = scheduler.status().costs
            assert totals.by_pipeline["p"] == pytest.approx(sum(v["cost_usd"] for v in views), rel=1e-12)
            assert totals.jobs_cost_usd == pytest.approx(sum(v["cost_usd"] for v in views), rel=1e-12)
            assert totals.by_model["work"] == pytest.approx(sum(v["stages"][1]["cost_usd"] for v in views))
            assert totals.by_device["gpu"] == pytest.approx(totals.by_model["work"], rel=1e-12)
            assert totals.total_usd == pytest.approx(sum(totals.by_model.values()), rel=1e-12)
            assert totals.per_1000_jobs_usd == pytest.approx(1000 * totals.jobs_cost_usd / 2)
            # a plain job has its cost too
            plain = await scheduler.wait_for(
                await scheduler.schedule_job(JobRequest(model="nap", inputs=50)), 60
            )
            assert plain["cost_usd"] > 0 and plain["cost_usd"] == pytest.approx(0.25 * 0.05, rel=0.5)

    asyncio.run(scenario())


def test_the_elastic_pool_grows_under_a_backlog_and_shrinks_back_without_losing_a_job(make: Make) -> None:
    settings = settings_with(
        [ModelConfig(name="slow", adapter="sleep")],
        [],
        cpu_workers_min=0,
        cpu_workers_max=2,
        cpu_idle_timeout_s=1.0,
        model_idle_unload_s=0.5,
    )

    async def scenario() -> None:
        async with make(settings) as scheduler:
            pool = scheduler.cpu_pool
            assert pool.status().running == 0
            assert {worker.state.value for worker in scheduler.workers.values()} == {"stopped"}
            assert scheduler.ready  # parked slots start on demand: the daemon takes jobs
            await scheduler.wait_ready(5)
            job_ids = [await scheduler.schedule_job(JobRequest(model="slow", inputs=300)) for _ in range(12)]
            await until(lambda: pool.status().running == 2, timeout=60, message="the pool grew to 2")
            views = [await scheduler.wait_for(job_id, 60) for job_id in job_ids]
            assert [view["status"] for view in views] == ["completed"] * 12
            assert {view["worker"] for view in views} == {"cpu-w0", "cpu-w1"}
            # idle: the model unloads, then a worker stops; jobs sent while it shrinks are not lost
            await until(lambda: pool.status().running == 1, timeout=30, message="the pool began to shrink")
            late = [await scheduler.schedule_job(JobRequest(model="slow", inputs=50)) for _ in range(4)]
            assert [(await scheduler.wait_for(job_id, 60))["status"] for job_id in late] == ["completed"] * 4
            await until(lambda: pool.status().running == 0, timeout=30, message="the pool back to 0")
            changes = [(change.change, change.worker) for change in pool.status().changes]
            assert ("grow", "cpu-w0") in changes and ("shrink", "cpu-w1") in changes
            assert any(change == "unload" for change, _ in changes)

    asyncio.run(scenario())


def test_run_cpu_and_map_cpu_run_importable_functions_on_cpu_workers(make: Make) -> None:
    settings = settings_with([ModelConfig(name="echo", adapter="echo")], [], max_threads=2)

    def local(value: int) -> int:
        return value

    async def scenario() -> None:
        async with make(settings) as scheduler:
            assert await scheduler.run_cpu(pipeline_functions.square, 7) == 49
            assert await scheduler.run_cpu(pipeline_functions.add, 1, 2, scale=10.0) == 30.0
            squares = await scheduler.map_cpu(pipeline_functions.square, range(40), chunk=6)
            assert squares == [value * value for value in range(40)]
            with pytest.raises(JobFailedError, match="ValueError: nope") as failed:
                await scheduler.run_cpu(pipeline_functions.fail, "nope")
            assert failed.value.kind == "model"
            for refused in (lambda value: value, local):
                with pytest.raises(InvalidInputError, match="module-level function"):
                    await scheduler.run_cpu(refused, 1)
            with pytest.raises(InvalidInputError, match="msgpack"):
                await scheduler.run_cpu(pipeline_functions.square, object())
            with pytest.raises(InvalidInputError, match="takes no submissions"):  # never from a client
                await scheduler.schedule_job(JobRequest(model="cpu-call", inputs={"fn": "os:getcwd"}))
            assert await scheduler.run_in_thread(pipeline_functions.add, 2, 3) == 5
            assert await scheduler.map_threads(pipeline_functions.square, [1, 2, 3]) == [1, 4, 9]
            assert "cpu-call" not in [job.model for job in scheduler.table.recent(limit=1000)]

    asyncio.run(scenario())
