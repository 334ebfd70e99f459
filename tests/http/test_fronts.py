"""HTTP fronts (`http_workers = 2`) under faults: a front SIGKILLed under load is respawned, its
clients get answers or errors (nothing hangs), and every job submitted ends exactly once; a SIGTERM
drains through the fronts. (The REST tests run with fronts too: `scripts/test.sh` runs them again
with `MODELSCHED_TEST_HTTP_WORKERS=2`.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from scheduler import JobRequest, Scheduler
from scheduler.core.jobs import JobStatus
from scheduler.errors import JournalError
from scheduler.settings import Settings, auto_http_workers
from tests.journal.test_failed_commits import fail_once
from tests.journal.test_failed_commits import settings as journal_settings
from tests.support.daemon import Daemon, running_daemon, stop
from tests.support.polling import until, until_sync

MODELS = """
[[models]]
name = "echo"
adapter = "echo"

[[models]]
name = "sleep"
adapter = "sleep"
max_batch_size = 64
"""
CLIENTS = 16
CLIENT_DEADLINE_S = 60.0  # a request of a killed front must end (answer or error) well before this


@pytest.fixture
def fronted(tmp_path: Path) -> Iterator[Daemon]:
    config = tmp_path / "models.toml"
    config.write_text(MODELS)
    with running_daemon(
        tmp_path,
        MODELSCHED_CONFIG=str(config),
        MODELSCHED_HTTP_WORKERS="2",
        MODELSCHED_RENDER_ENABLED="0",
        MODELSCHED_LOG_LEVEL="info",
    ) as daemon:
        yield daemon


def front_pids(daemon: Daemon) -> list[int]:
    """The daemon's children that are neither workers (named by the status) nor the resource tracker."""
    workers = {
        worker["pid"] for worker in httpx.get(f"{daemon.url}/system/status", timeout=10).json()["workers"]
    }
    pids = []
    for child in psutil.Process(daemon.process.pid).children():
        with contextlib.suppress(psutil.Error):
            if child.pid not in workers and "resource_tracker" not in " ".join(child.cmdline()):
                pids.append(child.pid)
    return sorted(pids)


def metric(daemon: Daemon, name: str, labels: dict[str, str] | None = None) -> float:
    text = httpx.get(f"{daemon.url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items())
    )


def test_a_front_killed_under_load_is_respawned_and_every_job_ends_once(fronted: Daemon) -> None:
    fronts = front_pids(fronted)
    assert len(fronts) == 2, fronts
    stop_at = time.monotonic() + 4.0
    keys: list[str] = []
    outcomes: list[str] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        with httpx.Client(base_url=fronted.url, timeout=CLIENT_DEADLINE_S) as http:
            count = 0
            while time.monotonic() < stop_at:
                key = f"c{index}-{count}"
                count += 1
                with lock:
                    keys.append(key)
                body = {"model": "sleep", "inputs": {"ms": 5}, "idempotency_key": key}
                try:
                    accepted = http.post("/jobs", json=body)
                    if accepted.status_code == 202:
                        job_id = accepted.json()["job_id"]
                        http.get(f"/jobs/{job_id}", params={"wait": 5})  # a long poll the kill may cut
                    with lock:
                        outcomes.append(f"answer {accepted.status_code}")
                except httpx.HTTPError as exc:  # the killed front's connections
                    with lock:
                        outcomes.append(f"error {type(exc).__name__}")

    with ThreadPoolExecutor(CLIENTS) as pool:
        running = [pool.submit(client, index) for index in range(CLIENTS)]
        until_sync(lambda: len(outcomes) >= 50, timeout=30, message="load under way")
        os.kill(fronts[0], signal.SIGKILL)
        started = time.monotonic()
        for future in running:
            future.result(timeout=CLIENT_DEADLINE_S)
    assert time.monotonic() - started < CLIENT_DEADLINE_S
    assert any(outcome == "answer 202" for outcome in outcomes)

    # The dead front is respawned; the daemon serves on both.
    until_sync(
        lambda: metric(fronted, "modelsched_http_fronts_up") == 2, timeout=60, message="front respawned"
    )
    assert metric(fronted, "modelsched_http_front_restarts_total") >= 1
    assert fronts[0] not in front_pids(fronted)

    # Every key sent names one job (submitting it again finds it, or submits the one whose request
    # never arrived), and every job ends once.
    with fronted.client() as http:
        job_ids = set()
        for key in keys:
            again = http.post("/jobs", json={"model": "sleep", "inputs": {"ms": 5}, "idempotency_key": key})
            assert again.status_code == 202, again.text
            job_ids.add(again.json()["job_id"])
        assert len(job_ids) == len(keys)
        for job_id in job_ids:
            view = http.get(f"/jobs/{job_id}", params={"wait": 30}).json()
            assert view["status"] == "completed" and view["attempts"] == 1, view
    until_sync(
        lambda: metric(fronted, "modelsched_jobs_ended_total", {"model": "sleep"}) >= len(job_ids),
        timeout=30,
        message="every end counted",
    )
    assert metric(fronted, "modelsched_jobs_ended_total", {"model": "sleep"}) == len(job_ids)
    assert "front0" in fronted.log() or "front1" in fronted.log()  # the death was logged


def test_sigterm_drains_through_the_fronts(fronted: Daemon) -> None:
    fronts = front_pids(fronted)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            httpx.post, f"{fronted.url}/models/sleep/infer", json={"inputs": {"ms": 4000}}, timeout=30
        )
        until_sync(
            lambda: metric(fronted, "modelsched_queue_jobs", {"state": "processing"}) == 1,
            timeout=20,
            message="the job runs",
        )
        fronted.process.send_signal(signal.SIGTERM)
        answer = waiting.result(timeout=30)
    assert answer.status_code == 200 and answer.json()["status"] == "completed"
    assert stop(fronted.process) == 0
    for pid in fronts:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_the_fronts_submission_path_withdraws_a_job_whose_record_was_not_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_scheduler: Callable[..., Scheduler]
) -> None:
    """`Submissions.schedule_then` (the fronts' hot path, callbacks and no coroutine) keeps the rule of
    `schedule`: a failed commit fails the submission and the job never runs."""
    failed = fail_once(monkeypatch, lambda groups: any(g.records and g.records[0][0] == 0 for g in groups))

    async def scenario() -> None:
        async with make_scheduler(journal_settings(tmp_path / "journal.db")) as scheduler:
            await scheduler.wait_ready(30)
            outcomes: asyncio.Queue[tuple[str | None, BaseException | None]] = asyncio.Queue()

            def done(job_id: str | None, failure: BaseException | None) -> None:
                outcomes.put_nowait((job_id, failure))

            scheduler.submissions.schedule_then(JobRequest(model="echo", inputs="first"), done)
            job_id, failure = await asyncio.wait_for(outcomes.get(), 30)
            assert failed and job_id is None and isinstance(failure, JournalError)
            (withdrawn,) = [job for job in scheduler.table.jobs.values() if job.status is JobStatus.CANCELLED]
            assert "not accepted" in (withdrawn.error or "")
            assert scheduler.journal is not None
            await until(lambda: scheduler.journal.problem() is None, message="commits succeed again")
            scheduler.submissions.schedule_then(JobRequest(model="echo", inputs="second"), done)
            job_id, failure = await asyncio.wait_for(outcomes.get(), 30)
            assert job_id is not None and failure is None
            assert (await scheduler.wait_for(job_id, 30))["status"] == "completed"
            assert scheduler.job_status(withdrawn.id)["status"] == "cancelled"  # and stays so

    asyncio.run(scenario())


def test_how_many_fronts_auto_and_a_cluster_choose() -> None:
    assert auto_http_workers(2) == 0 and auto_http_workers(5) == 0  # small machines: none
    assert auto_http_workers(6) >= 1 and auto_http_workers(128) <= 16
    assert Settings(http_workers=2).front_count == 2 and Settings(http_workers=0).front_count == 0
    # a cluster daemon answers from Redis in its main process: no fronts, whatever was asked
    assert Settings(http_workers=2, cluster_url="unix:///tmp/redis.sock").front_count == 0
