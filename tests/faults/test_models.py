"""Model faults: a load that fails (exponential back-off per model, other models go on) and CUDA out
of memory in `predict` (the batch is split; an input that never fits fails alone)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from scheduler import JobRequest, Scheduler
from scheduler.settings import ModelConfig
from tests.support.faults import CPU_ONLY, fault_settings
from tests.support.polling import until
from workers.backoff import Backoff


def test_backoff_doubles_per_consecutive_failure_is_capped_and_jitter_only_shortens() -> None:
    backoff = Backoff(first_s=5.0, cap_s=300.0)
    assert backoff.delay(0) == 0.0
    assert [backoff.delay(n) for n in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert backoff.delay(50) == 300.0
    jittered = Backoff(first_s=1.0, cap_s=8.0, jitter=0.2)
    for failures, full in ((1, 1.0), (2, 2.0), (3, 4.0), (9, 8.0)):
        delays = {jittered.delay(failures) for _ in range(50)}
        assert all(0.8 * full <= delay <= full for delay in delays) and len(delays) > 1


def test_a_model_whose_load_fails_fails_its_jobs_backs_off_exponentially_and_recovers(
    tmp_path: Path, make_scheduler: Callable[..., Scheduler]
) -> None:
    marker = tmp_path / "broken"
    marker.touch()
    attempts_log = tmp_path / "loads.log"

    def loads() -> int:
        return len(attempts_log.read_text().splitlines()) if attempts_log.exists() else 0

    async def scenario() -> None:
        failing = ModelConfig(
            name="fragile",
            adapter="tests.support.fault_adapters:FailingLoadAdapter",
            options={"marker": str(marker), "attempts_log": str(attempts_log)},
        )
        scheduler = make_scheduler(
            fault_settings(
                models=[failing, ModelConfig(name="echo", adapter="echo")], model_load_backoff_s=0.4
            ),
            environ=CPU_ONLY,
        )
        async with scheduler:
            await scheduler.wait_ready(60)
            first = await scheduler.wait_for(
                await scheduler.schedule_job(JobRequest(model="fragile", inputs=1)), 30
            )
            assert first["status"] == "error"
            assert (
                first["error"]
                == "model 'fragile' failed to load: RuntimeError: weights file is missing (test)"
            )
            status = {m["name"]: m for m in scheduler.system_status()["models"]}
            assert status["fragile"]["failed"] == "RuntimeError: weights file is missing (test)"
            registered = scheduler.registry.models["fragile"]
            assert 0.0 < registered.failed_until - time.monotonic() <= 0.4

            # Within the back-off: the job fails at once, no load is tried; other models go on.
            during = await scheduler.wait_for(
                await scheduler.schedule_job(JobRequest(model="fragile", inputs=2)), 5
            )
            assert during["status"] == "error" and "weights file is missing" in during["error"]
            assert during["started_at"] is None and loads() == 1
            echo = await scheduler.wait_for(
                await scheduler.schedule_job(JobRequest(model="echo", inputs="x")), 30
            )
            assert echo["status"] == "completed"

            # After it, the next job tries the load again; a second failure doubles the back-off.
            await until(lambda: time.monotonic() >= registered.failed_until, message="first back-off over")
            second = await scheduler.wait_for(
                await scheduler.schedule_job(JobRequest(model="fragile", inputs=3)), 30
            )
            assert second["status"] == "error" and loads() == 2
            assert 0.4 < registered.failed_until - time.monotonic() <= 0.8  # doubled
            assert scheduler.worker_events.load_failures["fragile"] == 2

            marker.unlink()  # the weights are back
            await until(lambda: time.monotonic() >= registered.failed_until, message="second back-off over")
            third = await scheduler.wait_for(
                await scheduler.schedule_job(JobRequest(model="fragile", inputs=4)), 30
            )
            assert third["status"] == "completed" and third["result"] == {"ok": 4} and loads() == 3
            assert registered.failed_error is None and "fragile" not in scheduler.worker_events.load_failures

    asyncio.run(scenario())


def test_out_of_gpu_memory_splits_the_batch_and_an_input_that_never_fits_fails_alone(
    make_scheduler: Callable[..., Scheduler],
) -> None:
    import torch

    assert issubclass(torch.cuda.OutOfMemoryError, RuntimeError)  # constructible without a GPU

    async def scenario() -> None:
        oom = ModelConfig(
            name="oom", adapter="tests.support.fault_adapters:OutOfMemoryAdapter", options={"max_fit": 2}
        )
        scheduler = make_scheduler(fault_settings(models=[oom]))
        batch_sizes: list[int] = []
        scheduler.on_batch.append(lambda worker, model, size, run_s: batch_sizes.append(size))
        async with scheduler:
            await scheduler.wait_ready(60)
            pid = scheduler.workers["cpu-w0"].pid
            inputs = ["a", "b", "c", "huge", "d", "e", "f", "g", "h"]
            ids = [scheduler.submit(JobRequest(model="oom", inputs=item)) for item in inputs]  # one dispatch
            results = [await scheduler.wait_for(job_id, 30) for job_id in ids]
            huge = results.pop(3)
            assert huge["status"] == "error" and huge["error"] == "out of GPU memory"
            assert scheduler.table.jobs[ids[3]].error_kind == "oom"
            assert [r["status"] for r in results] == ["completed"] * 8
            assert all(1 <= r["result"] <= 2 for r in results)  # each ran in a piece that fit
            assert max(batch_sizes) > 2  # the worker did get a batch too large, and split it
            # The worker went on: same process, next job fine.
            again = await scheduler.wait_for(
                await scheduler.schedule_job(JobRequest(model="oom", inputs="z")), 30
            )
            assert again["status"] == "completed" and again["result"] == 1
            assert scheduler.workers["cpu-w0"].pid == pid and scheduler.workers["cpu-w0"].restarts == 0

    asyncio.run(scenario())
