"""What a failed commit means for the jobs in it (found in review): a submission whose record was
not committed is withdrawn (its client got 503 and no id: were it run, a retry would run it twice);
an end whose record was not committed is not shown, and is written by a later commit; and an end is
shown, with its webhook and its event stream, even when the table dropped the job before the
commit (`max_finished_in_memory`)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler import JobRequest, Scheduler
from scheduler.core.jobs import Job, JobStatus
from scheduler.errors import JournalError
from scheduler.journal.writer import Writer
from scheduler.settings import ModelConfig, Settings
from tests.support.polling import until

Make = Callable[..., Scheduler]


def settings(journal: Path, **options: object) -> Settings:
    return Settings(journal_path=str(journal), models=[ModelConfig(name="echo", adapter="echo")], **options)  # type: ignore[arg-type]


class FailingCommit:
    """A connection whose commits fail as on a full disk: COMMIT, and a statement that is its own
    transaction (the writer runs a commit of one statement without BEGIN); everything else goes through."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    @property
    def total_changes(self) -> int:
        return self.connection.total_changes

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "COMMIT" or (sql != "BEGIN" and not self.connection.in_transaction):
            raise sqlite3.OperationalError("database or disk is full (test)")
        return self.connection.execute(sql, *args)

    def executemany(self, sql: str, *args: object) -> sqlite3.Cursor:
        return self.connection.executemany(sql, *args)


def fail_once(monkeypatch: pytest.MonkeyPatch, wanted: Callable[[list], bool]) -> list[int]:
    """The writer's first commit of groups that `wanted` picks fails as on a full disk."""
    failed: list[int] = []
    commit = Writer.commit

    def failing(self: Writer, connection: sqlite3.Connection, groups: list) -> bool | None:
        if not failed and wanted(groups):
            failed.append(1)
            return commit(self, FailingCommit(connection), groups)  # type: ignore[arg-type]
        return commit(self, connection, groups)

    monkeypatch.setattr(Writer, "commit", failing)
    return failed


def test_a_submission_not_committed_is_withdrawn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_scheduler: Make
) -> None:
    failed = fail_once(monkeypatch, lambda groups: any(g.records and g.records[0][0] == 0 for g in groups))

    async def scenario() -> None:
        async with make_scheduler(settings(tmp_path / "journal.db")) as scheduler:
            await scheduler.wait_ready(30)
            with pytest.raises(JournalError):
                await scheduler.schedule_job(JobRequest(model="echo", inputs="first"))
            assert failed
            (withdrawn,) = [job for job in scheduler.table.jobs.values() if job.status is JobStatus.CANCELLED]
            assert "not accepted" in (withdrawn.error or "")
            assert scheduler.workers["cpu-w0"].jobs_done == 0  # it never ran
            assert scheduler.journal is not None
            await until(lambda: scheduler.journal.problem() is None, message="commits succeed again")
            job_id = await scheduler.schedule_job(JobRequest(model="echo", inputs="second"))
            assert (await scheduler.wait_for(job_id, 30))["status"] == "completed"

    asyncio.run(scenario())


def test_an_end_not_committed_is_not_shown_and_a_later_commit_writes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_scheduler: Make
) -> None:
    failed = fail_once(monkeypatch, lambda groups: any(g.ended_ids for g in groups))
    journal = tmp_path / "journal.db"

    async def scenario() -> None:
        async with make_scheduler(settings(journal)) as scheduler:
            job_id = await scheduler.schedule_job(JobRequest(model="echo", inputs=7))
            view = await scheduler.wait_for(job_id, 30)
            assert failed and view["status"] == "completed" and view["result"] == 7
            return job_id

    job_id = asyncio.run(scenario())
    with sqlite3.connect(journal) as connection:
        assert connection.execute(
            "SELECT status, end_records FROM jobs WHERE id = ?", (job_id,)
        ).fetchall() == [("completed", 1)]


def test_an_end_is_settled_even_when_the_table_dropped_the_job_before_its_commit(
    tmp_path: Path, make_scheduler: Make
) -> None:
    async def scenario() -> None:
        async with make_scheduler(settings(tmp_path / "journal.db", max_finished_in_memory=1)) as scheduler:
            settled: list[Job] = []
            scheduler.endings.settle_observers.append(settled.append)  # what the webhooks hear
            await scheduler.wait_ready(30)
            ids = [scheduler.submit(JobRequest(model="echo", inputs=n)) for n in range(50)]
            views = await asyncio.gather(*(scheduler.wait_for(job_id, 30) for job_id in ids))
            assert [view["status"] for view in views].count("completed") >= 1
            assert sorted(job.id for job in settled) == sorted(ids)

    asyncio.run(scenario())
