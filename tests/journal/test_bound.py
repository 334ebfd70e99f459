"""The journal's size bound (`journal_max_mb`): past it the oldest ended jobs are pruned, never an
unfinished one, and the freed pages go back to the file system; with only unfinished jobs left at
the bound, submissions get 503 with Retry-After (a real daemon), and are taken again once jobs end."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import httpx
import msgspec

from scheduler.core.jobs import Job, JobStatus
from scheduler.journal import SqliteJournal
from tests.support.daemon import running_daemon
from tests.support.polling import until, until_sync

MIB = 2**20


def rows(path: str, sql: str, *params: object) -> list[tuple]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def test_past_its_bound_the_oldest_ended_jobs_are_pruned_every_unfinished_one_kept_and_pages_returned(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "journal.db")
    bound = 1 * MIB
    unfinished = [Job(id=f"open{n:04d}", model="echo", inputs="i" * 1000) for n in range(300)]
    ended = [Job(id=f"done{n:04d}", model="echo", inputs=None) for n in range(4000)]
    base = time.time() - 1000
    # Jobs end a little out of their submission order (within 20 places, as a queue does): the oldest
    # *end* goes first, not the oldest submission. The first 3000 are written without a bound, the
    # last 1000 (ending after all of them) while the bound holds.
    ended_at = {job.id: base + (n + (n * 7919) % 41 - 20) * 0.1 for n, job in enumerate(ended[:3000])}
    ended_at |= {job.id: base + 300 + n * 0.1 for n, job in enumerate(ended[3000:])}

    async def write(journal: SqliteJournal, jobs: list[Job]) -> None:
        for start in range(0, len(jobs), 250):
            chunk = jobs[start : start + 250]
            await asyncio.gather(*(journal.record_submitted_nowait(job) for job in chunk))
            for job in chunk:
                job.status, job.result, job.ended_at = JobStatus.COMPLETED, "r" * 1000, ended_at[job.id]
            await asyncio.gather(*(journal.record_ended(job) for job in chunk))

    async def unbounded() -> None:
        journal = SqliteJournal(path)
        await journal.open()
        await asyncio.gather(*(journal.record_submitted_nowait(job) for job in unfinished))
        await write(journal, ended[:3000])
        await journal.close()

    async def bounded() -> None:
        journal = SqliteJournal(path, max_bytes=bound)
        await journal.open()  # over the bound from the start: pruned at once
        await until(lambda: journal.upkeep.used_bytes <= bound, message="pruned under the bound")
        assert_kept_newest(len(ended[:3000]))
        pruned_at_start = journal.upkeep.pruned_for_size
        await write(journal, ended[3000:])  # and while jobs are written
        await until(
            lambda: (
                journal.upkeep.pruned_for_size > pruned_at_start
                and journal.upkeep.wait_s(time.monotonic()) is None
            ),  # nothing more to do
            message="pruned under the bound again",
        )
        assert journal.upkeep.used_bytes <= bound and journal.upkeep.free_pages == 0  # pages returned
        status = journal.status()
        assert status.used_mb <= 1.0 and status.max_mb == 1.0 and not status.full and status.problem is None
        kept = rows(path, "SELECT COUNT(*) FROM jobs WHERE ended_at IS NOT NULL")[0][0]
        assert status.pruned_for_size == len(ended) - kept
        oldest_kept = rows(path, "SELECT MIN(ended_at) FROM jobs WHERE ended_at IS NOT NULL")[0][0]
        assert status.pruned_ended_through is not None and status.pruned_ended_through < oldest_kept
        await journal.close()

    def assert_kept_newest(written: int) -> None:
        # Every unfinished job is still there, with its inputs; the ended jobs left are the newest.
        assert rows(path, "SELECT id, length(inputs) FROM jobs WHERE ended_at IS NULL ORDER BY n") == [
            (job.id, 1003) for job in unfinished
        ]
        kept = {job_id for (job_id,) in rows(path, "SELECT id FROM jobs WHERE ended_at IS NOT NULL")}
        newest_first = sorted(list(ended_at)[:written], key=lambda job_id: ended_at[job_id], reverse=True)
        assert 0 < len(kept) < written and kept == set(newest_first[: len(kept)])

    asyncio.run(unbounded())
    assert os.path.getsize(path) > 3 * bound  # ~3.5 MB
    asyncio.run(bounded())
    assert_kept_newest(len(ended))
    # The freed pages went back to the file system: the file is within the bound again.
    assert not os.path.exists(path + "-wal")
    assert os.path.getsize(path) <= bound
    assert rows(path, "PRAGMA freelist_count") == [(0,)]


def test_with_only_unfinished_jobs_at_the_bound_submissions_get_503_until_jobs_end(tmp_path: Path) -> None:
    padding = "p" * 64 * 1024  # a job of 64 KiB: 16 of them fill 1 MiB

    def submit(client: httpx.Client) -> httpx.Response:
        return client.post("/jobs", json={"model": "sleep", "inputs": {"ms": 600_000, "pad": padding}})

    with running_daemon(tmp_path, MODELSCHED_JOURNAL_MAX_MB="1") as daemon, daemon.client() as client:
        accepted: list[str] = []
        answer = submit(client)
        while answer.status_code == 202 and len(accepted) < 100:
            accepted.append(answer.json()["job_id"])
            answer = submit(client)
        assert 8 <= len(accepted) < 100, answer.text
        assert answer.status_code == 503 and answer.headers["Retry-After"]
        assert answer.json()["error"] == "journal_unavailable" and "full" in answer.json()["detail"]
        assert all(client.get(f"/jobs/{job_id}").status_code == 200 for job_id in accepted)
        journal = client.get("/system/status").json()["journal"]
        assert journal["full"] and journal["used_mb"] > journal["max_mb"] == 1.0
        assert journal["pruned_for_size"] == 0  # nothing ended: nothing was pruned
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "full" in ready.json()["reason"]
        assert "modelsched_journal_available 0.0" in client.get("/metrics").text
        assert submit(client).status_code == 503  # still full

        for job_id in accepted:  # jobs end: they can be pruned, and there is room again
            assert client.delete(f"/jobs/{job_id}").status_code == 200
        until_sync(lambda: client.get("/readyz").status_code == 200, message="ready again")
        journal = client.get("/system/status").json()["journal"]
        assert not journal["full"] and journal["problem"] is None and journal["pruned_for_size"] > 0
        assert "modelsched_journal_available 1.0" in client.get("/metrics").text
        again = submit(client)
        assert again.status_code == 202
        assert client.delete(f"/jobs/{again.json()['job_id']}").status_code == 200


OLD_SCHEMA = """
CREATE TABLE jobs (
    n INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, model TEXT NOT NULL, priority INTEGER NOT NULL,
    timeout_s REAL, idempotency_key TEXT, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, started_at REAL, ended_at REAL, worker_id TEXT, device TEXT, inputs BLOB,
    result BLOB, error TEXT, error_kind TEXT, end_records INTEGER NOT NULL DEFAULT 0
);
"""


def test_an_older_journal_made_without_incremental_vacuum_is_converted_and_keeps_its_jobs(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "journal.db")
    connection = sqlite3.connect(path)
    # as an earlier version made it: auto_vacuum NONE, and without the pipeline and cost columns
    connection.executescript(OLD_SCHEMA)
    connection.execute(
        "INSERT INTO jobs (id, model, priority, timeout_s, idempotency_key, status, attempts, created_at, "
        "inputs) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
        ("old", "echo", 1, None, None, 0, time.time(), msgspec.msgpack.encode([1])),
    )
    connection.commit()
    connection.close()
    os.chmod(path, 0o600)
    assert rows(path, "PRAGMA auto_vacuum") == [(0,)]

    async def scenario() -> None:
        journal = SqliteJournal(path, max_bytes=bound)
        open_jobs = await journal.open()
        assert [(job.id, job.inputs, job.pipeline, job.cost_usd) for job in open_jobs] == [
            ("old", [1], None, 0.0)
        ]
        assert journal.upkeep.incremental
        await journal.close()

    bound = MIB
    asyncio.run(scenario())
    assert rows(path, "PRAGMA auto_vacuum") == [(2,)]


def test_an_idle_journal_costs_no_cpu_bounded_or_while_its_commits_fail(tmp_path: Path) -> None:
    """The writer blocks while it has nothing to do; while commits fail it probes twice a second."""

    async def scenario() -> None:
        journal = SqliteJournal(str(tmp_path / "journal.db"), max_bytes=MIB)
        await journal.open()
        await journal.record_submitted_nowait(Job(id="a", model="echo", inputs=1))
        await until(lambda: journal.upkeep.wait_s(time.monotonic()) is None, message="upkeep idle")
        for state in ("idle", "failing"):
            began = time.process_time()
            await asyncio.sleep(1.0)  # a window to measure the CPU spent meanwhile, not a wait for a state
            assert time.process_time() - began < 0.2, state
            if state == "idle":
                assert journal._writer is not None
                journal._writer.probe = lambda connection: False  # type: ignore[method-assign]
                journal._writer.commit = lambda connection, groups: False  # type: ignore[method-assign]
                journal.record_attempts(Job(id="a", model="echo", inputs=1, attempts=1))
        await journal.close()

    asyncio.run(scenario())
