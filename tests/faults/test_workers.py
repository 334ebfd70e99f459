"""Workers that die (SIGKILL, segfault, `os._exit` in a model) or hang (SIGSTOP): noticed, killed,
respawned; their jobs go back to the queue, and only a job that really kills workers fails as poison."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

from scheduler import JobRequest, Scheduler
from scheduler.settings import ModelConfig
from tests.support.faults import alive, fault_settings, gone, signal_worker
from tests.support.polling import until


def test_a_sigkilled_worker_is_noticed_within_a_second_respawned_and_its_jobs_run_again(
    make_scheduler: Callable[..., Scheduler],
) -> None:
    async def scenario() -> None:
        scheduler = make_scheduler(fault_settings())
        async with scheduler:
            await scheduler.wait_ready(60)
            ids = [
                await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 1500})) for _ in range(2)
            ]
            later = await scheduler.schedule_job(JobRequest(model="echo", inputs="after"))
            await until(lambda: all(scheduler.job_status(job_id)["status"] == "processing" for job_id in ids))
            old = scheduler.workers["cpu-w0"]
            old_pid = old.pid
            assert old_pid is not None
            killed_at = time.monotonic()
            signal_worker(old_pid, signal.SIGKILL)
            await until(lambda: old.state == "dead", timeout=1.0, interval=0.005, message="death noticed")
            noticed_s = time.monotonic() - killed_at
            assert noticed_s < 1.0
            # Every job in flight (two sleep, one echo) went back with one try counted, as a suspect.
            assert [scheduler.table.jobs[job_id].attempts for job_id in [*ids, later]] == [1, 1, 1]
            after = await scheduler.schedule_job(JobRequest(model="echo", inputs="after the kill"))
            results = [await scheduler.wait_for(job_id, 60) for job_id in [*ids, later, after]]
            assert [r["status"] for r in results] == ["completed"] * 4, [r["error"] for r in results]
            assert [r["attempts"] for r in results] == [2, 2, 2, 1]
            new = scheduler.workers["cpu-w0"]
            assert new is not old and new.pid != old_pid and new.restarts == 1
            assert gone(old_pid)

    asyncio.run(scenario())


def test_a_segfaulting_model_fails_its_job_as_poison_and_the_worker_comes_back(
    make_scheduler: Callable[..., Scheduler],
) -> None:
    async def scenario() -> None:
        crash = ModelConfig(name="crash", adapter="tests.support.fault_adapters:CrashAdapter")
        scheduler = make_scheduler(fault_settings(max_attempts=2, models=[crash]))
        async with scheduler:
            await scheduler.wait_ready(60)
            poison = await scheduler.schedule_job(
                JobRequest(model="crash", inputs={"signal": int(signal.SIGSEGV)})
            )
            done = await scheduler.wait_for(poison, 60)
            assert done["status"] == "error" and done["attempts"] == 2
            assert done["error"].startswith("poison job: 2 worker process(es) died while running it")
            assert scheduler.table.jobs[poison].error_kind == "poison"
            fine = await scheduler.schedule_job(JobRequest(model="crash", inputs={"ms": 1}))
            assert (await scheduler.wait_for(fine, 60))["status"] == "completed"
            assert scheduler.workers["cpu-w0"].restarts == 2

    asyncio.run(scenario())


def test_only_the_poison_job_fails_its_batch_mates_and_pipeline_mates_complete(
    make_scheduler: Callable[..., Scheduler],
) -> None:
    """A poison job (`os._exit` in the model) shares a batch and a pipeline with innocent jobs. Blaming
    every job in flight would fail them all as poison after three deaths; run alone after the first
    death, only the poison job keeps killing workers."""

    async def scenario() -> None:
        sleep4 = ModelConfig(name="sleep", adapter="sleep", max_batch_size=4)
        scheduler = make_scheduler(fault_settings(max_attempts=3, models=[sleep4]))
        async with scheduler:
            await scheduler.wait_ready(60)
            inputs = [
                {"ms": 20},
                {"ms": 20},
                {"exit": 1},
                {"ms": 20},
                {"ms": 20},
                {"ms": 20},
                {"ms": 20},
                {"ms": 20},
            ]
            ids = [
                scheduler.submit(JobRequest(model="sleep", inputs=item)) for item in inputs
            ]  # one dispatch
            assert all(scheduler.job_status(job_id)["status"] == "queued" for job_id in ids)
            results = [await scheduler.wait_for(job_id, 90) for job_id in ids]
            poison = results.pop(2)
            assert poison["status"] == "error" and poison["error"].startswith(
                "poison job: 3 worker process(es)"
            )
            assert [r["status"] for r in results] == ["completed"] * 7, results
            assert all(r["attempts"] <= 2 for r in results)
            assert scheduler.workers["cpu-w0"].restarts == 3
            after = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 1}))
            assert (await scheduler.wait_for(after, 30))["attempts"] == 1

    asyncio.run(scenario())


def test_a_hung_worker_is_killed_after_the_heartbeat_timeout_and_its_job_runs_again(
    make_scheduler: Callable[..., Scheduler],
) -> None:
    async def scenario() -> None:
        scheduler = make_scheduler(fault_settings(heartbeat_timeout_s=1.0, heartbeat_interval_s=0.1))
        async with scheduler:
            await scheduler.wait_ready(60)
            job_id = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 300}))
            await until(lambda: scheduler.job_status(job_id)["status"] == "processing")
            old = scheduler.workers["cpu-w0"]
            assert old.pid is not None
            stopped_at = time.monotonic()
            signal_worker(old.pid, signal.SIGSTOP)  # alive, but silent
            await until(lambda: old.state == "dead", timeout=5.0, interval=0.01, message="hung worker killed")
            killed_after = time.monotonic() - stopped_at
            assert 0.9 <= killed_after < 2.5, killed_after
            await until(lambda: gone(old.pid), timeout=5.0)
            done = await scheduler.wait_for(job_id, 60)
            assert done["status"] == "completed" and done["attempts"] == 2
            new = scheduler.workers["cpu-w0"]
            assert new.pid is not None and new.pid != old.pid and alive(new.pid)

    asyncio.run(scenario())


def test_a_worker_that_dies_once_the_shutdown_has_begun_is_not_respawned(
    make_scheduler: Callable[..., Scheduler],
) -> None:
    """A stop signal sent to the whole process group (systemd's stop, a terminal's Ctrl+C) reaches
    the workers as it reaches the daemon: one that ends is not started again only to be stopped."""

    async def scenario() -> None:
        scheduler = make_scheduler(fault_settings())
        async with scheduler:
            await scheduler.wait_ready(60)
            old = scheduler.workers["cpu-w0"]
            assert old.pid is not None
            scheduler.begin_shutdown()
            signal_worker(old.pid, signal.SIGKILL)
            await until(lambda: old.state == "dead", message="death noticed")
            scheduler.supervision.tick(time.monotonic() + 3600)  # long past any respawn time
            assert scheduler.workers["cpu-w0"] is old and old.state == "dead"

    asyncio.run(scenario())
