"""Schedulers joined on one real Redis, in one process (each with its real worker processes): a job
submitted on a pure front runs on the back end and its waiter wakes; idempotency across fronts;
cancel of a running job reaches its host; a model no live host can run is refused at once; a job
nobody claims ends at its deadline; Redis gone: submissions refused (JournalError, REST 503), a
running job's end written once Redis is back; a daemon with another model configuration is refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from scheduler import Scheduler
from scheduler.core.jobs import JobRequest
from scheduler.errors import ConfigError, JournalError, NoFitError
from scheduler.settings import ModelConfig, Settings
from tests.support.polling import until
from tests.support.redis_server import RedisServer

MODELS = [
    ModelConfig(name="echo", adapter="echo"),
    ModelConfig(name="sleep", adapter="sleep"),
    ModelConfig(name="big", adapter="echo", device="gpu", vram_mb=1000),
]


def cluster_settings(server: RedisServer, host: str, cpu_workers: int, **more: Any) -> Settings:
    return Settings(
        cluster_url=server.url,
        cluster_name="t",
        cluster_host=host,
        cpu_workers=cpu_workers,
        journal_path="",
        render_enabled=False,
        models=more.pop("models", MODELS),
        cluster_heartbeat_s=0.2,
        reclaim_idle_s=2.0,
        shutdown_grace_s=2.0,
        **more,
    )


@pytest.mark.timeout(120)
def test_front_and_back_end_on_one_redis(
    make_scheduler: Callable[..., Scheduler], redis_server: RedisServer
) -> None:  # (redis_server set up last, stopped first: make_scheduler then finds no child left)
    async def main() -> None:
        back = make_scheduler(cluster_settings(redis_server, "back", 1))
        front = make_scheduler(cluster_settings(redis_server, "front", 0))
        await back.start()
        await back.wait_ready(60)
        await front.start()
        try:
            assert not front.workers and front.ready  # a pure front: ready with no worker
            began = time.monotonic()
            assert await front.infer("echo", {"x": 1}, timeout=20) == {"x": 1}
            first = await front.schedule_job(JobRequest(model="echo", inputs=1, idempotency_key="k"))
            again = await back.schedule_job(JobRequest(model="echo", inputs=2, idempotency_key="k"))
            assert first == again
            told: asyncio.Future[tuple[str | None, BaseException | None]] = (
                asyncio.get_running_loop().create_future()
            )
            front.submissions.schedule_then(  # (the HTTP fronts' path): through Redis too
                JobRequest(model="echo", inputs=3), lambda job_id, error: told.set_result((job_id, error))
            )
            then_id, then_error = await asyncio.wait_for(told, 10)
            assert then_error is None and then_id is not None
            assert (await back.wait_for(then_id, 20))["result"] == 3
            view = await back.wait_for(first, 20)
            assert view["status"] == "completed" and view["result"] == 1 and view["host"] == "back"
            # cancel of a running job, from the front: the back end drops it at once
            running = await front.schedule_job(JobRequest(model="sleep", inputs={"ms": 3000}))
            await until(
                lambda: running in back.table.jobs and back.table.jobs[running].status == "processing"
            )
            assert (await front.cancel_job(running))["status"] == "cancelled"
            await until(lambda: back.table.jobs[running].ended, timeout=5, message="the back end dropped it")
            with pytest.raises(NoFitError):  # a GPU model: no live host has a card
                await front.schedule_job(JobRequest(model="big", inputs=1))
            # a job nobody claims (the worker is busy past its deadline) ends at its deadline
            await front.schedule_job(JobRequest(model="sleep", inputs={"ms": 1500}))
            late = await front.schedule_job(JobRequest(model="sleep", inputs={"ms": 1}, timeout_s=0.3))
            view = await front.wait_for(late, 10)
            assert view["status"] == "error" and view["error_kind"] == "timeout", view
            status = front.system_status()["cluster"]
            assert {host["host"] for host in status["hosts"] if host["live"]} == {"back", "front"}
            assert status["redis_up"] is True
            assert time.monotonic() - began < 60
            # Redis gone: a submission is refused; the running job's end waits and is written after
            slow = await front.schedule_job(JobRequest(model="sleep", inputs={"ms": 800}))
            await until(lambda: slow in back.table.jobs and back.table.jobs[slow].status == "processing")
            redis_server.kill()
            with pytest.raises(JournalError):
                for _ in range(50):  # the first try notices; no submission is acknowledged meanwhile
                    await front.schedule_job(JobRequest(model="echo", inputs=1))
                    await asyncio.sleep(0.05)
            await until(lambda: back.table.jobs[slow].ended, timeout=10, message="the job ran to its end")
            assert front.readiness.problem() is not None
            redis_server.start()
            view = await front.wait_for(slow, 15)
            assert view["status"] == "completed", view
            await until(lambda: front.ready, timeout=10, message="the front ready again")
            # a daemon with another model configuration is refused
            other = make_scheduler(cluster_settings(redis_server, "other", 0, models=MODELS[:1]))
            with pytest.raises(ConfigError, match="another model configuration"):
                await other.start()
            await other.stop()
        finally:
            await front.stop()
            await back.stop()

    asyncio.run(main())
