"""An infer's submission is held back and written with its end, as one row (`scheduler.core.held`):
a job that ends within the hold is one insert, not an insert and an update; one that does not is
written as submitted once the hold is over (and runs again after a restart, as any other); at close
what is held is written as submitted; an end of a held job whose commit failed is written by a later
commit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

import scheduler.core.held as held_module
from scheduler import JobRequest, JobStatus, Scheduler
from scheduler.core.held import HeldSubmissions
from scheduler.core.jobs import Job
from scheduler.journal import SqliteJournal
from tests.journal.test_failed_commits import fail_once
from tests.journal.test_journal import rows
from tests.support.faults import fault_settings
from tests.support.polling import until


def ended(job: Job, result: object = "done") -> Job:
    job.status, job.result, job.started_at, job.ended_at = JobStatus.COMPLETED, result, 1.0, 2.0
    return job


def test_the_hold_releases_what_has_not_ended_in_time_and_nothing_twice() -> None:
    held = HeldSubmissions(hold_s=1.0)
    a, b, c = (Job(id=name, model="echo", inputs=1) for name in "abc")
    assert held.hold(a, 10.0) is True  # the first: a release must be timed
    assert held.hold(b, 10.5) is False and held.hold(c, 10.6) is False
    assert held.next_due() == 11.0
    assert held.ended("a") is True  # its end is its whole row
    assert held.next_due() == 11.5  # timed by the oldest still held (b), not by a, which ended
    assert held.due(10.9) == []
    assert held.due(11.5) == [b]  # a ended; b is due; c not yet
    assert held.ended("b") is True  # released, maybe not committed: its end is still an upsert
    assert held.ended("b") is False and held.ended("unknown") is False
    assert held.release_all() == [c] and held.ended("c") is True
    assert held.next_due() is None and held.due(100.0) == []


def test_a_held_submission_is_written_with_its_end_or_alone_after_the_hold_or_at_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "journal.db")
    monkeypatch.setattr(held_module, "HOLD_S", 0.2)

    async def scenario() -> None:
        journal = SqliteJournal(path)
        await journal.open()
        quick, slow, open_at_close = (Job(id=name, model="echo", inputs=[name]) for name in ("q", "s", "o"))
        for job in (quick, slow, open_at_close):
            journal.record_submitted_held(job)
        await journal.record_ended(ended(quick))
        assert journal.records_written == 1  # one row: its submission and its end
        assert rows(path, "SELECT status, end_records, inputs FROM jobs WHERE id = 'q'") == [
            ("completed", 1, None)
        ]
        assert rows(path, "SELECT id FROM jobs WHERE id IN ('s', 'o')") == []  # held
        # Not ended within the hold: written as submitted, as an unheld submission is.
        await until(lambda: len(rows(path, "SELECT id FROM jobs WHERE status = 'queued'")) == 2, timeout=10)
        await journal.record_ended(ended(slow))
        assert rows(path, "SELECT status, end_records FROM jobs WHERE id = 's'") == [("completed", 1)]
        await journal.close()

    asyncio.run(scenario())

    monkeypatch.setattr(held_module, "HOLD_S", 30.0)

    async def close_with_one_held() -> None:
        journal = SqliteJournal(path)
        reopened = await journal.open()
        assert [job.id for job in reopened] == ["o"] and reopened[0].inputs == ["o"]
        late = Job(id="late", model="echo", inputs=2)
        journal.record_submitted_held(late)
        await journal.close()  # held, not ended: written as submitted, to run after the restart
        journal = SqliteJournal(path)
        assert [job.id for job in await journal.open()] == ["o", "late"]
        await journal.close()

    asyncio.run(close_with_one_held())


def test_the_end_of_a_held_job_whose_commit_failed_is_written_by_a_later_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "journal.db")
    monkeypatch.setattr(held_module, "HOLD_S", 30.0)
    failed = fail_once(monkeypatch, lambda groups: any(group.ended_ids for group in groups))

    async def scenario() -> None:
        journal = SqliteJournal(path)
        await journal.open()
        job = Job(id="j", model="echo", inputs=1)
        journal.record_submitted_held(job)
        first = journal.record_ended(ended(job))
        with pytest.raises(Exception, match="could not record"):
            await first
        assert failed
        await until(
            lambda: rows(path, "SELECT status, end_records FROM jobs WHERE id = 'j'") == [("completed", 1)],
            timeout=10,
            message="the end written by a later commit",
        )
        await journal.close()

    asyncio.run(scenario())


def test_infers_through_the_scheduler_write_one_record_a_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_scheduler: Callable[..., Scheduler]
) -> None:
    path = str(tmp_path / "journal.db")
    monkeypatch.setattr(held_module, "HOLD_S", 30.0)  # every job ends within it, however slow the machine

    async def scenario() -> None:
        async with make_scheduler(fault_settings(journal_path=path)) as scheduler:
            await scheduler.wait_ready(60)
            assert scheduler.journal is not None
            before = scheduler.journal.records_written
            results = await asyncio.gather(*(scheduler.infer("echo", {"n": n}) for n in range(20)))
            assert results == [{"n": n} for n in range(20)]
            assert scheduler.journal.records_written - before == 20  # not 40: one row a job
            # A submission whose caller does not wait for the end is committed before its id comes.
            job_id = await scheduler.schedule_job(JobRequest(model="echo", inputs=1))
            assert rows(path, "SELECT count(*) FROM jobs WHERE id = ?", job_id) == [(1,)]
        assert rows(path, "SELECT count(*), sum(end_records), min(status) FROM jobs") == [
            (21, 21, "completed")
        ]

    asyncio.run(scenario())


def test_a_long_infer_is_in_the_journal_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_scheduler: Callable[..., Scheduler]
) -> None:
    path = str(tmp_path / "journal.db")
    monkeypatch.setattr(held_module, "HOLD_S", 0.05)

    async def scenario() -> None:
        async with make_scheduler(fault_settings(journal_path=path)) as scheduler:
            await scheduler.wait_ready(60)
            running = asyncio.ensure_future(scheduler.infer("sleep", {"ms": 3000}))
            await until(
                lambda: rows(path, "SELECT status FROM jobs WHERE model = 'sleep'") == [("queued",)],
                timeout=20,
                message="the running infer's submission in the file",
            )
            assert not running.done()
            assert await running == {"slept_ms": 3000}
            assert rows(path, "SELECT status, end_records FROM jobs WHERE model = 'sleep'") == [
                ("completed", 1)
            ]

    asyncio.run(scenario())
