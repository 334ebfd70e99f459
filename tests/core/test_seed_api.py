"""The seed documents' Python API on real worker processes: `await get_job_status(id)`, `await
get_system_status()` (workers keyed by id with `processing_jobs`, each GPU's `id` and
`memory_utilization`), `await infer(...)` and `infer_many(...)` raising on failure, many jobs in one
journal commit, and the README's quick start run as written."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler import JobRequest, Scheduler
from scheduler.errors import InvalidInputError, JobCancelledError, JobFailedError, SchedulerError
from scheduler.settings import ModelConfig, Settings
from tests.support.daemon import REPO, daemon_env
from tests.support.polling import until

MLP_INPUT = [0.01 * i for i in range(256)]


def settings(tmp_path: Path) -> Settings:
    return Settings(
        journal_path=str(tmp_path / "journal.db"),
        models=[ModelConfig(name=name, adapter=name) for name in ("echo", "sleep", "mlp")],
        max_workers_per_gpu=1,
    )


def test_the_seed_api_awaits_and_raises(make_scheduler: Callable[..., Scheduler], tmp_path: Path) -> None:
    async def scenario() -> None:
        scheduler = make_scheduler(settings(tmp_path), environ={"MODELSCHED_SIMULATED_GPUS": "1x24GiB"})
        async with scheduler:
            await scheduler.wait_ready(60)
            running = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 1500}))
            await until(lambda: scheduler.job_status(running)["status"] == "processing", message="running")
            status = await scheduler.get_system_status()
            assert isinstance(status["workers"], dict)
            holder = status["workers"][scheduler.job_status(running)["worker"]]
            assert holder["worker_id"] in status["workers"] and running in holder["processing_jobs"]
            gpu = status["gpu"][0]
            assert gpu["id"] == gpu["index"] == 0 and 0.0 <= gpu["memory_utilization"] <= 1.0
            assert (await scheduler.get_job_status(running))["status"] == "processing"

            assert await scheduler.infer("echo", {"a": 1}, timeout=30) == {"a": 1}
            assert await scheduler.infer_many("echo", ["x", "y", "z"], timeout=30) == ["x", "y", "z"]
            vectors = await scheduler.infer_many("mlp", [MLP_INPUT] * 5, timeout=60)
            assert len(vectors) == 5 and all(len(vector) == 16 for vector in vectors)
            with pytest.raises(JobFailedError) as failed:
                await scheduler.infer("echo", {"fail": "broken"}, timeout=30)
            assert failed.value.kind == "model" and "broken" in str(failed.value)
            with pytest.raises(InvalidInputError):
                await scheduler.infer_many("mlp", [MLP_INPUT, [1, 2]])
            with pytest.raises(TimeoutError):
                await scheduler.infer("sleep", {"ms": 3000}, timeout=0.2)
            known = {job["job_id"] for job in scheduler.list_jobs(model="sleep")}
            cancelling = asyncio.ensure_future(scheduler.infer("sleep", {"ms": 2500}, timeout=30))
            await until(lambda: scheduler.list_jobs(model="sleep", limit=1)[0]["job_id"] not in known)
            await scheduler.cancel_job(scheduler.list_jobs(model="sleep", limit=1)[0]["job_id"])
            with pytest.raises(JobCancelledError):
                await cancelling

    asyncio.run(scenario())


def test_many_jobs_are_committed_in_one_group(
    make_scheduler: Callable[..., Scheduler], tmp_path: Path
) -> None:
    """`schedule_jobs`: each job admitted or refused alone; the admitted ones in one journal commit."""

    async def scenario() -> None:
        scheduler = make_scheduler(settings(tmp_path), scheduler_type="async")
        async with scheduler:
            await scheduler.wait_ready(60)
            blocker = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 2000}))
            second = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 0}))
            await until(
                lambda: scheduler.job_status(second)["status"] == "processing", message="pipeline full"
            )
            assert scheduler.journal is not None
            commits = scheduler.journal.commits  # type: ignore[attr-defined]
            requests = [JobRequest(model="sleep", inputs=0) for _ in range(200)]
            requests[3] = JobRequest(model="sleep", inputs="three")  # refused by the adapter
            requests[5] = JobRequest(model="nope", inputs=1)
            outcomes = await scheduler.schedule_jobs(requests)
            assert scheduler.journal.commits == commits + 1  # type: ignore[attr-defined]
            assert [type(outcome) for outcome in (outcomes[3], outcomes[5])] == [
                InvalidInputError,
                type(outcomes[5]),
            ]
            assert isinstance(outcomes[5], SchedulerError)
            ids = [outcome for outcome in outcomes if isinstance(outcome, str)]
            assert len(ids) == 198
            assert [scheduler.job_status(job_id)["queue_position"] for job_id in ids[:3]] == [0, 1, 2]
            done = await scheduler.wait_for(ids[-1], 60)
            assert (
                done["status"] == "completed"
                and (await scheduler.get_job_status(blocker))["status"] == "completed"
            )

    asyncio.run(scenario())


def quick_start() -> str:
    """The README's Python API example, as written."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_readme_quick_start_runs_as_written(tmp_path: Path) -> None:
    code = quick_start()
    assert "await scheduler.get_job_status(" in code and "await scheduler.get_system_status()" in code
    env = daemon_env(tmp_path, MODELSCHED_RENDER_ENABLED="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    ran = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    assert "'status': 'completed'" in ran.stdout and "cpu-w0" in ran.stdout
