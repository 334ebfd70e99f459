"""A model's load may rightly take longer than the heartbeat timeout: the worker keeps sending
heartbeats while it loads, so it is not killed as hung (found under load: MiniLM took over 10 s to
load on two busy cores and its worker was killed three times, its job failing as poison). A load
that hangs past `model_load_timeout_s` stops the heartbeats, and the worker is replaced."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from scheduler import JobRequest, Scheduler
from scheduler.settings import ModelConfig, Settings
from tests.support.polling import until

SLOW = "tests.support.fault_adapters:SlowLoadAdapter"


def settings(load_s: float, **options: float) -> Settings:
    return Settings(
        journal_path="",
        heartbeat_interval_s=0.1,
        heartbeat_timeout_s=0.8,
        models=[ModelConfig(name="slow", adapter=SLOW, options={"load_s": load_s})],
        **options,  # type: ignore[arg-type]
    )


def test_a_load_longer_than_the_heartbeat_timeout_is_not_taken_for_a_hang(
    make_scheduler: Callable[..., Scheduler],
) -> None:
    async def scenario() -> None:
        async with make_scheduler(settings(2.5)) as scheduler:
            view = await scheduler.wait_for(
                await scheduler.schedule_job(JobRequest(model="slow", inputs=7)), 30
            )
            assert view["status"] == "completed" and view["result"] == 7
            assert scheduler.workers["cpu-w0"].restarts == 0

    asyncio.run(scenario())


def test_a_load_that_hangs_past_its_timeout_gets_the_worker_replaced(
    make_scheduler: Callable[..., Scheduler],
) -> None:
    async def scenario() -> None:
        async with make_scheduler(settings(60.0, model_load_timeout_s=0.5, max_attempts=1)) as scheduler:
            view = await scheduler.wait_for(
                await scheduler.schedule_job(JobRequest(model="slow", inputs=7)), 30
            )
            assert view["status"] == "error" and "poison" in (view["error"] or "")
            await until(lambda: scheduler.workers["cpu-w0"].restarts >= 1, message="the worker replaced")

    asyncio.run(scenario())
