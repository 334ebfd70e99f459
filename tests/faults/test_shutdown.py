"""Shutdown: `stop()` drains in-flight jobs within the grace period and keeps the rest queued in the
journal; worker processes never outlive the main process, even when it is SIGKILLed."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler import JobRequest, Scheduler
from scheduler.errors import NotRunningError
from tests.support.faults import alive, fault_settings, gone
from tests.support.polling import until, until_sync

REPO = Path(__file__).resolve().parents[2]


def test_a_second_stop_returns_once_the_first_has_finished_and_a_cancel_once_stopped_is_refused(
    tmp_path: Path, make_scheduler: Callable[..., Scheduler]
) -> None:
    """Two shutdowns at once (a second signal, the app's lifespan) both return only when the workers
    are gone and the journal is closed; a cancel the closed journal could not keep is refused."""

    async def scenario() -> None:
        scheduler = make_scheduler(fault_settings(journal_path=str(tmp_path / "journal.db")))
        await scheduler.start()
        await scheduler.wait_ready(60)
        running = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 400}))
        waiting = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 1}))
        waiting_too = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 1}))
        await until(lambda: scheduler.job_status(running)["status"] == "processing")
        first = asyncio.create_task(scheduler.stop())
        await until(lambda: not scheduler.accepting, message="the first drain began")
        await scheduler.stop()
        assert not any(worker.alive() for worker in scheduler.workers.values())
        assert [scheduler.job_status(job_id)["status"] for job_id in (running, waiting)] == ["completed"] * 2
        assert scheduler.job_status(waiting_too)["status"] == "queued"  # kept for the next start
        await first
        with pytest.raises(NotRunningError, match="stopping or stopped"):
            await scheduler.cancel_job(waiting_too)

    asyncio.run(scenario())


def test_stop_refuses_new_jobs_drains_in_flight_ones_and_keeps_the_rest_queued(
    tmp_path: Path, make_scheduler: Callable[..., Scheduler]
) -> None:
    journal = str(tmp_path / "journal.db")

    async def first_life() -> tuple[str, str, str]:
        scheduler = make_scheduler(fault_settings(journal_path=journal))
        await scheduler.start()
        await scheduler.wait_ready(60)
        short = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 300}))
        long = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 2_500}))
        waiting = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 1}))
        await until(lambda: scheduler.job_status(short)["status"] == "processing")
        assert scheduler.job_status(waiting)["status"] == "queued"  # the worker's pipeline is full
        assert scheduler.ready
        stopping = asyncio.create_task(scheduler.stop(grace_s=1.0))
        await until(lambda: not scheduler.ready, timeout=1.0)
        with pytest.raises(NotRunningError):
            await scheduler.schedule_job(JobRequest(model="echo", inputs=1))
        await stopping
        assert scheduler.job_status(short)["status"] == "completed"  # finished within the grace
        # Past the grace: the long job was stopped and stays queued, without a try counted.
        assert scheduler.job_status(long)["status"] == "queued"
        assert scheduler.table.jobs[long].attempts == 0
        assert scheduler.job_status(waiting)["status"] == "queued"
        assert not any(worker.alive() for worker in scheduler.workers.values())
        return short, long, waiting

    async def second_life(short: str, long: str, waiting: str) -> None:
        scheduler = make_scheduler(fault_settings(journal_path=journal))
        async with scheduler:
            assert [job.id for job in scheduler.table.recent(limit=10)][::-1] == [long, waiting]
            assert scheduler.job_status(short)["status"] == "completed"  # from the journal
            results = [await scheduler.wait_for(job_id, 60) for job_id in (long, waiting)]
            assert [r["status"] for r in results] == ["completed", "completed"]
            assert results[0]["started_at"] < results[1]["started_at"]  # their order was kept

    asyncio.run(second_life(*asyncio.run(first_life())))


_CHILD = textwrap.dedent("""
    import asyncio, json
    from scheduler import JobRequest, Scheduler
    from scheduler.settings import ModelConfig, Settings

    async def main():
        settings = Settings(journal_path="", cpu_workers=2, models=[ModelConfig(name="sleep", adapter="sleep")])
        scheduler = Scheduler(settings, environ={"MODELSCHED_FORCE_CPU": "1"})
        await scheduler.start()
        await scheduler.wait_ready(60)
        for _ in range(4):  # both workers busy in a model
            scheduler.submit(JobRequest(model="sleep", inputs={"ms": 60000}))
        while scheduler.table.count_by_status["processing"] < 4:
            await asyncio.sleep(0.02)
        print(json.dumps([worker.pid for worker in scheduler.workers.values()]), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
""")


def test_workers_die_with_a_sigkilled_main_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", _CHILD], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        readable, _, _ = select.select([child.stdout], [], [], 90)
        assert readable, "the scheduler in the child process did not start in time"
        assert child.stdout is not None
        worker_pids = json.loads(child.stdout.readline())
        assert len(worker_pids) == 2 and all(alive(pid) for pid in worker_pids)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        until_sync(lambda: all(gone(pid) for pid in worker_pids), timeout=5.0, message="workers gone")
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
