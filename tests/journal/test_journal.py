"""The SQLite journal: committed before a submission is acknowledged, grouped writes, ends shown once
durable, restarts (in process and after a SIGKILL) that lose nothing, keep order, attempts and
idempotency keys, lazy answers for ended jobs, retention."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from scheduler import JobRequest, JobStatus, Scheduler
from scheduler.core.jobs import Job
from scheduler.errors import JobNotFoundError
from scheduler.journal import SqliteJournal, journal_enabled
from scheduler.journal.writer import Writer
from tests.support.faults import fault_settings
from tests.support.polling import until, until_sync

REPO = Path(__file__).resolve().parents[2]


def rows(path: str, sql: str, *params: object) -> list[tuple]:
    """Read the journal with a connection of our own, as another process would."""
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


# ---- the journal alone (no processes) ------------------------------------------------------------


def test_no_journal_for_an_empty_path_or_memory() -> None:
    assert not journal_enabled("") and not journal_enabled(":memory:") and journal_enabled("var/x.db")


def test_group_commit_end_before_submit_lookups_and_synchronous(tmp_path: Path) -> None:
    path = str(tmp_path / "sub" / "journal.db")  # the folder is made

    async def scenario() -> None:
        journal = SqliteJournal(path, "FULL")
        open_jobs = await journal.open()
        assert open_jobs == []
        assert journal._reader is not None
        assert journal._reader.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert journal._reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        jobs = [
            Job(id=f"job{n}", model="echo", inputs={"n": n, "blob": b"\x00\x01"}, idempotency_key=f"key{n}")
            for n in range(500)
        ]
        await asyncio.gather(*(journal.record_submitted_nowait(job) for job in jobs))
        assert journal.records_written == 500 and journal.commits <= 10  # grouped, not one commit a job
        # A job that ends before its submission is recorded (a model in load back-off) still ends.
        early = Job(
            id="early",
            model="echo",
            inputs=1,
            status=JobStatus.ERROR,
            ended_at=time.time(),
            error="model 'echo' failed to load: boom",
            error_kind="load",
        )
        journal.record_ended(early)
        await journal.record_submitted_nowait(early)
        ended = journal.lookup("early")
        assert ended is not None and ended.status is JobStatus.ERROR and ended.error_kind == "load"
        assert journal.lookup("job1") is None  # not ended: the table holds it, not the journal
        jobs[1].status, jobs[1].result, jobs[1].ended_at = JobStatus.COMPLETED, [1.5, "x"], time.time()
        await journal.record_ended(jobs[1])
        found = journal.find_by_key("key1")
        assert found is not None and found.id == "job1" and found.result == [1.5, "x"]
        await journal.close()

    asyncio.run(scenario())
    inputs = rows(path, "SELECT inputs FROM jobs WHERE id = 'job7'")[0][0]
    assert msgspec.msgpack.decode(inputs) == {"n": 7, "blob": b"\x00\x01"}
    assert rows(path, "SELECT inputs, end_records FROM jobs WHERE id = 'job1'") == [(None, 1)]
    assert rows(path, "SELECT status, end_records FROM jobs WHERE id = 'early'") == [("error", 1)]

    async def reopen() -> None:
        journal = SqliteJournal(path)
        open_jobs = await journal.open()
        assert [job.id for job in open_jobs] == [f"job{n}" for n in range(500) if n != 1]  # submission order
        assert open_jobs[0].inputs == {"n": 0, "blob": b"\x00\x01"} and open_jobs[0].idempotency_key == "key0"
        await journal.close()

    asyncio.run(reopen())


# ---- with a scheduler ----------------------------------------------------------------------------


def test_a_job_is_committed_before_it_is_acknowledged_and_its_end_before_it_is_shown(
    tmp_path: Path, make_scheduler: Callable[..., Scheduler]
) -> None:
    path = str(tmp_path / "journal.db")

    async def scenario() -> None:
        scheduler = make_scheduler(fault_settings(journal_path=path))
        async with scheduler:
            await scheduler.wait_ready(60)
            job_id = await scheduler.schedule_job(
                JobRequest(model="sleep", inputs={"ms": 200}, idempotency_key="a")
            )
            # Acknowledged: it is in the file, for any other connection to read.
            assert rows(path, "SELECT status, idempotency_key FROM jobs WHERE id = ?", job_id) == [
                ("queued", "a")
            ]
            done = await scheduler.wait_for(job_id, 30)
            assert done["status"] == "completed"
            # Shown as ended: the end is committed already.
            assert rows(path, "SELECT status, end_records FROM jobs WHERE id = ?", job_id) == [
                ("completed", 1)
            ]
            assert msgspec.msgpack.decode(
                rows(path, "SELECT result FROM jobs WHERE id = ?", job_id)[0][0]
            ) == {"slept_ms": 200}
            assert scheduler.journal is not None and scheduler.journal.last_error is None

    asyncio.run(scenario())


def test_a_restart_queues_unfinished_jobs_in_order_and_answers_ended_ones_and_keys(
    tmp_path: Path, make_scheduler: Callable[..., Scheduler]
) -> None:
    path = str(tmp_path / "journal.db")

    async def first_life() -> dict[str, object]:
        scheduler = make_scheduler(fault_settings(journal_path=path))
        await scheduler.start()
        await scheduler.wait_ready(60)
        done = await scheduler.schedule_job(JobRequest(model="echo", inputs={"v": 1}, idempotency_key="done"))
        await scheduler.wait_for(done, 30)
        blockers = [
            await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 5_000})) for _ in range(2)
        ]
        await until(lambda: all(scheduler.job_status(b)["status"] == "processing" for b in blockers))
        waiting = [
            await scheduler.schedule_job(
                JobRequest(model="sleep", inputs={"ms": 1, "n": n}, idempotency_key=f"w{n}")
            )
            for n in range(4)
        ]
        await scheduler.stop(grace_s=0)  # the blockers are stopped mid-run; nothing has ended but `done`
        return {"done": done, "blockers": blockers, "waiting": waiting}

    ids = asyncio.run(first_life())

    async def second_life() -> None:
        scheduler = make_scheduler(fault_settings(journal_path=path))
        async with scheduler:
            for blocker in ids["blockers"]:  # type: ignore[union-attr]
                await scheduler.cancel_job(blocker)
            queued_in_order = [
                job.id for job in sorted(scheduler.table.jobs.values(), key=lambda job: job.seq)
            ]
            assert queued_in_order == [*ids["blockers"], *ids["waiting"]]  # type: ignore[misc]
            assert all(scheduler.table.jobs[job_id].attempts == 0 for job_id in ids["waiting"])  # type: ignore[union-attr]
            # The ended job is not loaded into memory, but still answered, by id and by key.
            assert ids["done"] not in scheduler.table.jobs
            done = scheduler.job_status(ids["done"])  # type: ignore[arg-type]
            assert done["status"] == "completed" and done["result"] == {"v": 1}
            assert (await scheduler.wait_for(ids["done"], 1))["status"] == "completed"  # type: ignore[arg-type]
            again = await scheduler.schedule_job(
                JobRequest(model="echo", inputs={"v": 2}, idempotency_key="done")
            )
            assert again == ids["done"]
            same = await scheduler.schedule_job(
                JobRequest(model="sleep", inputs={"ms": 1}, idempotency_key="w2")
            )
            assert same == ids["waiting"][2]  # type: ignore[index]
            results = [await scheduler.wait_for(job_id, 30) for job_id in ids["waiting"]]  # type: ignore[union-attr]
            assert [r["status"] for r in results] == ["completed"] * 4
            started = [r["started_at"] for r in results]
            assert started == sorted(started)
            with pytest.raises(JobNotFoundError):
                scheduler.job_status("no-such-job")

    asyncio.run(second_life())
    assert rows(path, "SELECT COUNT(*) FROM jobs WHERE end_records > 1") == [(0,)]


def test_attempts_survive_a_restart_and_a_poison_job_still_fails_after_it(
    tmp_path: Path, make_scheduler: Callable[..., Scheduler]
) -> None:
    path = str(tmp_path / "journal.db")

    async def first_life() -> str:
        scheduler = make_scheduler(fault_settings(journal_path=path, max_attempts=3))
        await scheduler.start()
        await scheduler.wait_ready(60)
        poison = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"exit": 1}))
        job = scheduler.table.jobs[poison]
        await until(lambda: job.attempts == 1 and job.status is JobStatus.QUEUED, interval=0.002)
        await scheduler.stop(grace_s=0)
        return poison

    poison = asyncio.run(first_life())
    assert rows(path, "SELECT status, attempts FROM jobs WHERE id = ?", poison) == [("queued", 1)]

    async def second_life() -> None:
        scheduler = make_scheduler(fault_settings(journal_path=path, max_attempts=3))
        async with scheduler:
            assert [job.id for job in scheduler.table.waiting_suspects()] == [poison]  # runs alone
            innocent = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 1}))
            done = await scheduler.wait_for(poison, 60)
            assert (
                done["status"] == "error" and done["attempts"] == 3 and done["error"].startswith("poison job")
            )
            assert (await scheduler.wait_for(innocent, 60))["status"] == "completed"
            assert scheduler.workers["cpu-w0"].restarts == 2

    asyncio.run(second_life())


_CHILD = textwrap.dedent("""
    import asyncio, sys
    from scheduler import JobRequest, Scheduler
    from scheduler.settings import ModelConfig, Settings

    async def main():
        settings = Settings(journal_path=sys.argv[1], cpu_workers=1, models=[ModelConfig(name="sleep", adapter="sleep")])
        scheduler = Scheduler(settings, environ={"MODELSCHED_FORCE_CPU": "1"})
        await scheduler.start()
        await scheduler.wait_ready(60)
        for n in range(60):
            job_id = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 20}, idempotency_key=f"k{n}"))
            print(job_id, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
""")


def test_every_job_acknowledged_before_a_sigkill_of_the_main_process_ends_after_the_restart(
    tmp_path: Path, make_scheduler: Callable[..., Scheduler]
) -> None:
    path = str(tmp_path / "journal.db")
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, path], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    acknowledged: list[str] = []
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 90
        while len(acknowledged) < 60 and time.monotonic() < deadline:
            readable, _, _ = select.select([child.stdout], [], [], 1.0)
            if readable:
                acknowledged.append(child.stdout.readline().strip())
        assert len(acknowledged) == 60
        until_sync(
            lambda: rows(path, "SELECT COUNT(*) FROM jobs WHERE ended_at IS NOT NULL")[0][0] >= 5,
            message="a few jobs ended before the kill",
        )
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
    ended_before = {job_id for (job_id,) in rows(path, "SELECT id FROM jobs WHERE ended_at IS NOT NULL")}
    assert 5 <= len(ended_before) < 60

    async def after_restart() -> None:
        scheduler = make_scheduler(fault_settings(journal_path=path))
        async with scheduler:
            assert set(scheduler.table.jobs) == set(acknowledged) - ended_before
            results = [await scheduler.wait_for(job_id, 60) for job_id in acknowledged]
            assert [r["status"] for r in results] == ["completed"] * 60

    asyncio.run(after_restart())
    assert rows(path, "SELECT COUNT(*), SUM(end_records) FROM jobs") == [(60, 60)]  # each ended exactly once


def test_ended_jobs_are_forgotten_after_the_retention_and_pruned(
    tmp_path: Path, make_scheduler: Callable[..., Scheduler]
) -> None:
    path = str(tmp_path / "journal.db")

    async def first_life() -> tuple[str, float]:
        scheduler = make_scheduler(fault_settings(journal_path=path, result_retention_s=0.5))
        async with scheduler:
            job_id = await scheduler.schedule_job(JobRequest(model="echo", inputs=1, idempotency_key="old"))
            done = await scheduler.wait_for(job_id, 30)
        return job_id, done["ended_at"]

    job_id, ended_at = asyncio.run(first_life())
    until_sync(lambda: time.time() > ended_at + 0.6, message="the retention passed")

    async def second_life() -> None:
        scheduler = make_scheduler(fault_settings(journal_path=path, result_retention_s=0.5))
        async with scheduler:
            with pytest.raises(JobNotFoundError):
                scheduler.job_status(job_id)
            fresh = await scheduler.schedule_job(JobRequest(model="echo", inputs=2, idempotency_key="old"))
            assert fresh != job_id  # the old key expired with its job
            await until(
                lambda: rows(path, "SELECT COUNT(*) FROM jobs WHERE id = ?", job_id) == [(0,)],
                message="pruned at start",
            )

    asyncio.run(second_life())


def test_a_job_submitted_and_ended_within_one_commit_is_written_once() -> None:
    from scheduler.core.jobs import Job, JobStatus
    from scheduler.journal.rows import (
        ATTEMPTS,
        END,
        END_ROW,
        STAGE,
        SUBMIT,
        end_params,
        stage_params,
        statements,
        submit_params,
        update_params,
    )

    def job(job_id: str, status: JobStatus = JobStatus.QUEUED) -> Job:
        return Job(
            id=job_id,
            model="m",
            inputs="in",
            status=status,
            result="r",
            attempts=1,
            cost_usd=0.5,
            created_at=1.0,
        )

    a, b, old = job("a"), job("b"), job("old", JobStatus.COMPLETED)
    records = [
        (SUBMIT, submit_params(a)),
        (END, end_params(old)),  # submitted in an earlier commit
        (ATTEMPTS, (1, "a")),
        (STAGE, stage_params(a)),
        (SUBMIT, submit_params(b)),
        (STAGE, stage_params(b)),
        (END, end_params(job("a", JobStatus.COMPLETED))),
    ]
    written = statements(records)
    assert written == [
        (END_ROW, end_params(job("a", JobStatus.COMPLETED))),
        (END, update_params(END, end_params(old))),
        (SUBMIT, submit_params(b)),
        (STAGE, stage_params(b)),
    ]
    # status, attempts .. result, cost, compute time, then error, its kind, stages, and the id
    assert written[1][1][:2] == ("completed", 1) and written[1][1][-6:] == (0.5, 0.0, None, None, None, "old")


def test_a_lean_end_writes_the_row_a_whole_one_writes() -> None:
    """An end without key, pipeline or error leaves those columns to their NULL defaults
    (`END_ROW_LEAN_SQL`): the row it writes, as its job's first write or as an update of the submitted
    row, is the row the whole end writes; an end with any of them set is written whole."""
    from scheduler.journal.rows import (
        END,
        END_LEAN,
        END_ROW,
        END_ROW_LEAN,
        SCHEMA,
        SQL_BY_KIND,
        SUBMIT,
        end_params,
        end_record,
        statements,
        submit_params,
    )

    def ended(job_id: str, **fields: object) -> Job:
        values: dict[str, object] = dict(
            id=job_id, model="m", inputs="in", status=JobStatus.COMPLETED, result=[1.5], attempts=1,
            cost_usd=0.25, compute_s=0.5, created_at=1.0, started_at=2.0, ended_at=3.0, worker_id="w",
            device="cpu",
        )  # fmt: skip
        return Job(**{**values, **fields})  # type: ignore[arg-type]

    assert end_record(ended("x", idempotency_key="k"))[0] == END
    assert end_record(ended("x", error="why", status=JobStatus.ERROR))[0] == END
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.executescript(SCHEMA)

    def write(records: list[tuple[int, tuple[object, ...]]]) -> list[int]:
        written = statements(records)
        for kind, params in written:
            connection.execute(SQL_BY_KIND[kind], params)
        return [kind for kind, _ in written]

    def row(job_id: str) -> tuple[object, ...]:
        found = connection.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return found[2:]  # past `n` and `id`

    for name in ("lean-row", "whole-row", "lean-update", "whole-update"):
        queued = Job(id=name, model="m", inputs="in", created_at=1.0)
        kind, params = end_record(ended(name))
        assert kind == END_LEAN
        if name == "whole-row":
            kind, params = END, end_params(ended(name))
        if name.endswith("row"):  # submitted and ended within one commit
            kinds = write([(SUBMIT, submit_params(queued)), (kind, params)])
            assert kinds == [END_ROW_LEAN if name == "lean-row" else END_ROW]
        else:  # ended in a later commit: an update of the submitted row
            write([(SUBMIT, submit_params(queued))])
            assert write([(kind, params)]) == [END]
    assert row("lean-row") == row("whole-row") == row("lean-update") == row("whole-update")
    assert row("lean-row")[2:6] == (None, None, "completed", 1)  # timeout, key, status, attempts


def test_lean_rows_written_many_to_a_statement_are_the_rows_one_at_a_time() -> None:
    """A commit's run of lean rows goes `MAX_LEAN_ROWS` to a statement, the rest in one more
    (`rows.executions`); the rows are those `executemany` writes, an upsert of a row written before
    included."""
    from scheduler.journal.rows import (
        END_ROW_LEAN,
        MAX_LEAN_ROWS,
        SCHEMA,
        SQL_BY_KIND,
        end_record,
        executions,
    )

    def ended(job_id: str) -> Job:
        return Job(
            id=job_id, model="m", inputs=None, status=JobStatus.COMPLETED, result={"n": job_id},
            attempts=1, created_at=1.0, started_at=2.0, ended_at=3.0, worker_id="w", device="cpu",
        )  # fmt: skip

    count = 2 * MAX_LEAN_ROWS + 11
    connections = []
    for together in (True, False):
        connection = sqlite3.connect(":memory:", isolation_level=None)
        connection.executescript(SCHEMA)
        connection.execute(
            "INSERT INTO jobs (id, model, priority, status, created_at) VALUES ('j7', 'm', 1, 'queued', 1)"
        )
        params = [end_record(ended(f"j{n}"))[1] for n in range(count)]
        done = executions(END_ROW_LEAN, params) if together else [(SQL_BY_KIND[END_ROW_LEAN], params, True)]
        if together:
            assert [len(values) // len(params[0]) for _, values, _ in done] == [MAX_LEAN_ROWS] * 2 + [11]
            assert not any(many for _, _, many in done)
        for sql, values, many in done:
            (connection.executemany if many else connection.execute)(sql, values)
        connections.append(connection)
    rows = [connection.execute("SELECT * FROM jobs ORDER BY id").fetchall() for connection in connections]
    assert len(rows[0]) == count and rows[0] == rows[1]
    assert connections[0].execute("SELECT end_records FROM jobs WHERE id = 'j7'").fetchone() == (1,)


def test_an_end_is_not_shown_before_its_record_is_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_scheduler: Callable[..., Scheduler]
) -> None:
    """Were an end shown before it is durable, a crash in between would run the job again after the
    restart: a client would get a second answer. Hold the writer before it commits an end."""
    import threading

    release = threading.Event()
    commit = Writer.commit

    def held(self: Writer, connection: sqlite3.Connection, groups: list) -> bool:
        if any(group.ended_ids for group in groups):
            release.wait(30)
        return commit(self, connection, groups)

    monkeypatch.setattr(Writer, "commit", held)

    async def scenario() -> None:
        scheduler = make_scheduler(fault_settings(journal_path=str(tmp_path / "journal.db")))
        async with scheduler:
            await scheduler.wait_ready(60)
            job_id = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 100}))
            await until(lambda: scheduler.table.jobs[job_id].status is JobStatus.COMPLETED)  # ended in memory
            shown = scheduler.job_status(job_id)
            assert shown["status"] == "processing" and shown["result"] is None and shown["ended_at"] is None
            assert (await scheduler.wait_for(job_id, 0.2))["status"] == "processing"
            assert scheduler.list_jobs()[0]["status"] == "processing"
            release.set()
            done = await scheduler.wait_for(job_id, 10)
            assert done["status"] == "completed" and done["result"] == {"slept_ms": 100}

    try:
        asyncio.run(scenario())
    finally:
        release.set()
