"""Pipelines at their edges (each found in review): a next stage whose `validate` has a bug, a
shutdown while pipeline jobs are between stages, a stage's model in its load back-off, the elastic
pool for `auto` models without a GPU, pipeline jobs read back before their pipeline is registered,
and a pipeline job counted once in the queue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from scheduler import JobRequest, Scheduler
from scheduler.core.jobs import JobStatus
from scheduler.settings import ModelConfig, PipelineConfig, Settings
from tests.support.polling import until

Make = Callable[..., Scheduler]
BUGGY = "tests.support.pipeline_functions:BuggyValidateAdapter"


def settings_with(models: list[ModelConfig], pipelines: list[dict[str, Any]], **options: Any) -> Settings:
    options.setdefault("journal_path", "")
    configs = msgspec.convert(pipelines, list[PipelineConfig])
    return Settings(models=models, pipelines=configs, **options)


async def submit(scheduler: Scheduler, pipeline: str, inputs: Any) -> str:
    return await scheduler.schedule_job(JobRequest(pipeline=pipeline, inputs=inputs))


def test_a_next_stage_whose_validate_has_a_bug_fails_that_job_and_its_batch_mates_complete(
    make_scheduler: Make,
) -> None:
    """`echo` passes `{"y": 1}` on; the next stage's `validate` raises KeyError on it (not the
    ValueError of the protocol): that pipeline job fails naming the stage, and the jobs that ran in
    the same batch of `first` still end."""
    settings = settings_with(
        [
            ModelConfig(name="first", adapter="echo", batch_policy="fixed", max_delay_ms=300),
            ModelConfig(name="buggy", adapter=BUGGY),
        ],
        [{"name": "p", "stages": ["first", "buggy"]}],
    )

    async def scenario() -> None:
        async with make_scheduler(settings) as scheduler:
            await scheduler.wait_ready(30)
            bad = await submit(scheduler, "p", {"y": 1})
            good = await submit(scheduler, "p", {"x": 1})
            plain = [await scheduler.schedule_job(JobRequest(model="first", inputs=n)) for n in range(3)]
            view = await scheduler.wait_for(bad, 30)
            assert view["status"] == "error"
            assert view["error"].startswith("stage 'buggy' (buggy) refused the output of stage 'first'")
            assert scheduler.get_job(bad).error_kind == "input"
            assert (await scheduler.wait_for(good, 30))["status"] == "completed"
            ends = [await scheduler.wait_for(job_id, 30) for job_id in plain]
            assert [end["status"] for end in ends] == ["completed"] * 3
            assert all(not worker.in_flight for worker in scheduler.workers.values())

    asyncio.run(scenario())


def test_a_shutdown_does_not_wait_for_pipeline_jobs_between_stages(make_scheduler: Make) -> None:
    """Once the shutdown begins nothing more is sent to a worker: a pipeline job whose first stage
    has ended waits for the next start (in the journal); the drain does not wait its grace for it."""
    settings = settings_with(
        [ModelConfig(name="slow", adapter="sleep"), ModelConfig(name="after", adapter="sleep")],
        [{"name": "p", "stages": ["slow", "after"]}],
        shutdown_grace_s=20.0,
    )

    async def scenario() -> None:
        scheduler = make_scheduler(settings)
        await scheduler.start()
        job_id = await submit(scheduler, "p", {"ms": 300})
        await until(lambda: scheduler.job_status(job_id)["stages"][0]["status"] == "processing")
        started = time.monotonic()
        await scheduler.stop()
        assert time.monotonic() - started < 10.0  # the first stage's 300 ms, not the 20 s grace
        assert scheduler.get_job(job_id).status is JobStatus.QUEUED

    asyncio.run(scenario())


def test_a_stage_whose_model_is_in_its_load_backoff_fails_at_once_without_a_load(
    make_scheduler: Make, tmp_path: Path
) -> None:
    marker, attempts = tmp_path / "missing", tmp_path / "attempts"
    marker.touch()
    failing = ModelConfig(
        name="weights",
        adapter="tests.support.fault_adapters:FailingLoadAdapter",
        options={"marker": str(marker), "attempts_log": str(attempts)},
    )
    settings = settings_with(
        [ModelConfig(name="first", adapter="echo"), failing],
        [{"name": "p", "stages": ["first", {"model": "weights", "name": "infer"}]}],
        model_load_backoff_s=60.0,
    )

    async def scenario() -> None:
        async with make_scheduler(settings) as scheduler:
            first = await scheduler.wait_for(await submit(scheduler, "p", 1), 30)
            assert first["status"] == "error" and "failed to load" in first["error"]
            assert first["error"].startswith("stage 'infer' (weights) failed")
            later = [await scheduler.wait_for(await submit(scheduler, "p", n), 30) for n in range(3)]
            assert all(view["status"] == "error" and "failed to load" in view["error"] for view in later)
            assert len(attempts.read_text().splitlines()) == 1  # no load tried during the back-off

    asyncio.run(scenario())


def test_the_elastic_pool_starts_workers_for_auto_models_without_a_gpu(make_scheduler: Make) -> None:
    settings = settings_with(
        [ModelConfig(name="anywhere", adapter="echo", device="auto")],
        [],
        cpu_workers_min=0,
        cpu_workers_max=1,
    )

    async def scenario() -> None:
        async with make_scheduler(settings) as scheduler:
            job_id = await scheduler.schedule_job(JobRequest(model="anywhere", inputs=5))
            view = await scheduler.wait_for(job_id, 60)
            assert view["status"] == "completed" and view["worker"] == "cpu-w0"

    asyncio.run(scenario())


def test_pipeline_jobs_read_back_before_their_pipeline_is_registered_wait_for_it(
    make_scheduler: Make, tmp_path: Path
) -> None:
    """A daemon whose pipelines are registered from Python after `start()` keeps their unfinished
    jobs; one whose pipeline never comes back fails like a job of an unregistered model."""
    journal = str(tmp_path / "journal.db")
    models = [ModelConfig(name="slow", adapter="sleep")]
    pipelines = [{"name": "p", "stages": ["slow"]}, {"name": "gone", "stages": ["slow"]}]

    async def scenario() -> None:
        first = make_scheduler(settings_with(models, pipelines, journal_path=journal))
        await first.start()
        kept = await submit(first, "p", {"ms": 30_000})
        dropped = await submit(first, "gone", {"ms": 30_000})
        await first.stop(grace_s=0)
        second = make_scheduler(settings_with(models, [], journal_path=journal))
        async with second:
            second.register_pipeline({"name": "p", "stages": ["slow"]})
            assert second.job_status(kept)["status"] in ("queued", "processing")
            await until(lambda: second.job_status(dropped)["status"] == "error")
            assert "no longer registered" in second.job_status(dropped)["error"]
            assert (await second.cancel_job(kept))["status"] == "cancelled"

    asyncio.run(scenario())


def test_a_pipeline_job_counts_once_in_the_queue(make_scheduler: Make) -> None:
    settings = settings_with(
        [ModelConfig(name="slow", adapter="sleep"), ModelConfig(name="after", adapter="echo")],
        [{"name": "p", "stages": ["slow", "after"]}],
    )

    async def scenario() -> None:
        async with make_scheduler(settings) as scheduler:
            await scheduler.wait_ready(30)
            blocker = await scheduler.schedule_job(JobRequest(model="slow", inputs=2_000))
            await until(lambda: scheduler.job_status(blocker)["status"] == "processing")
            job_id = await submit(scheduler, "p", {"ms": 10})
            queue = scheduler.status().queue
            assert (queue.queued, queue.processing) == (1, 1)  # the pipeline job once; the blocker
            assert (await scheduler.wait_for(job_id, 30))["status"] == "completed"
            await scheduler.wait_for(blocker, 30)
            queue = scheduler.status().queue
            assert (queue.queued, queue.processing, queue.completed) == (0, 0, 2)

    asyncio.run(scenario())
