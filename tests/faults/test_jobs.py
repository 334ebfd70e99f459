"""Per-job faults: timeouts (queued and running), cancellation (queued and running), backpressure."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler import JobRequest, QueueFullError, Scheduler
from scheduler.settings import ModelConfig
from tests.support.faults import fault_settings
from tests.support.polling import until


def test_a_running_job_past_its_timeout_ends_as_timeout_and_its_batch_mates_run_again_without_penalty(
    make_scheduler: Callable[..., Scheduler],
) -> None:
    async def scenario() -> None:
        sleep4 = ModelConfig(name="sleep", adapter="sleep", max_batch_size=4)
        scheduler = make_scheduler(fault_settings(models=[sleep4]))
        async with scheduler:
            await scheduler.wait_ready(60)
            old = scheduler.workers["cpu-w0"]
            # One dispatch, one batch: the slow job first, its batch-mate waits behind it.
            slow = scheduler.submit(JobRequest(model="sleep", inputs={"ms": 20_000}, timeout_s=0.5))
            mate = scheduler.submit(JobRequest(model="sleep", inputs={"ms": 10}))
            timed_out = await scheduler.wait_for(slow, 10)
            assert timed_out["status"] == "error" and timed_out["error"].startswith("timeout")
            assert scheduler.table.jobs[slow].error_kind == "timeout"
            assert 0.5 <= timed_out["ended_at"] - timed_out["created_at"] < 2.0
            done = await scheduler.wait_for(mate, 60)
            assert done["status"] == "completed" and done["attempts"] == 1  # no try counted against it
            await until(lambda: old.state == "dead")
            assert scheduler.workers["cpu-w0"].restarts == 1

    asyncio.run(scenario())


def test_a_queued_job_past_its_timeout_ends_as_timeout_without_running(
    make_scheduler: Callable[..., Scheduler],
) -> None:
    async def scenario() -> None:
        scheduler = make_scheduler(fault_settings())
        async with scheduler:
            await scheduler.wait_ready(60)
            blockers = [
                await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 800})) for _ in range(2)
            ]
            waiting = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 1}, timeout_s=0.3))
            done = await scheduler.wait_for(waiting, 10)
            assert done["status"] == "error" and done["error"].startswith("timeout")
            assert done["started_at"] is None and done["attempts"] == 0
            # The worker was not restarted for a job it never held.
            assert [(await scheduler.wait_for(job_id, 30))["status"] for job_id in blockers] == [
                "completed"
            ] * 2
            assert scheduler.workers["cpu-w0"].restarts == 0

    asyncio.run(scenario())


def test_cancelling_a_queued_job_removes_it_and_a_running_one_drops_its_result(
    tmp_path: Path, make_scheduler: Callable[..., Scheduler]
) -> None:
    async def scenario() -> None:
        journal = str(tmp_path / "journal.db")
        scheduler = make_scheduler(fault_settings(journal_path=journal))
        async with scheduler:
            await scheduler.wait_ready(60)
            running = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 600}))
            pipelined = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 1}))
            queued = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 1}))
            await until(lambda: scheduler.job_status(running)["status"] == "processing")
            assert scheduler.job_status(queued)["status"] == "queued"

            cancelled_queued = await scheduler.cancel_job(queued)
            assert cancelled_queued["status"] == "cancelled"
            assert scheduler.table.queued_count_by_model["sleep"] == 0
            cancelled_running = await scheduler.cancel_job(running)
            assert cancelled_running["status"] == "cancelled"

            worker = scheduler.workers["cpu-w0"]
            await until(lambda: worker.jobs_done >= 2, message="the cancelled job's result came back")
            assert (await scheduler.wait_for(pipelined, 30))["status"] == "completed"
            for job_id in (running, queued):
                status = scheduler.job_status(job_id)
                assert status["status"] == "cancelled" and status["result"] is None
            assert scheduler.job_status(queued)["started_at"] is None
            assert worker.restarts == 0 and worker.in_flight == {}
            assert (
                await scheduler.wait_for(await scheduler.schedule_job(JobRequest(model="echo", inputs=1)), 30)
            )["status"] == "completed"

        # The cancellations were journaled: a restart does not run those jobs again.
        again = make_scheduler(fault_settings(journal_path=journal))
        async with again:
            assert queued not in again.table.jobs and running not in again.table.jobs
            assert again.job_status(queued)["status"] == "cancelled"
            assert again.job_status(running)["status"] == "cancelled"

    asyncio.run(scenario())


def test_past_max_queue_submissions_are_refused_and_nothing_queued_is_dropped(
    make_scheduler: Callable[..., Scheduler],
) -> None:
    async def scenario() -> None:
        scheduler = make_scheduler(fault_settings(max_queue=5))
        async with scheduler:
            await scheduler.wait_ready(60)
            in_flight = [
                await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 400})) for _ in range(2)
            ]
            await until(lambda: scheduler.table.count_by_status["processing"] == 2)
            queued = [
                await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 1, "n": n}))
                for n in range(5)
            ]
            for _ in range(3):
                with pytest.raises(QueueFullError, match="the queue is full"):
                    await scheduler.schedule_job(JobRequest(model="echo", inputs="one too many"))
            assert scheduler.system_status()["queue"]["queued"] == 5
            results = [await scheduler.wait_for(job_id, 30) for job_id in in_flight + queued]
            assert [r["status"] for r in results] == ["completed"] * 7
            # Room again once the queue drains.
            assert (
                await scheduler.wait_for(await scheduler.schedule_job(JobRequest(model="echo", inputs=1)), 30)
            )["status"] == "completed"

    asyncio.run(scenario())
