"""Where jobs end (`JobEndings`: shown at once or once the journal commits, waiters woken, observers
told) and their deadlines (`Deadlines`: a late job ends as a timeout, its worker restarted when it
was running). Over real collaborators wired as `Scheduler` wires them, with a fake journal whose
commits the tests make and fake worker channels (`tests.support.fakes`): no process, no thread."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.core.jobs import Job, JobStatus
from scheduler.errors import ErrorKind, WorkerState
from tests.support.fakes import Core, fake, make_core, make_journaled_core, make_worker


def processing(core: Core, job: Job) -> Job:
    core.table.mark_processing(job, "cpu-w0", "cpu")
    return job


# ---- JobEndings ------------------------------------------------------------------------------


def test_without_a_journal_an_end_shows_at_once_and_wakes_the_waiter() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        core = make_core()
        job = processing(core, core.submit())
        waiter = core.endings.waiter(job, loop)
        assert waiter is not None and not waiter.done()
        assert core.endings.finish(job, JobStatus.COMPLETED, result="done") is None
        await asyncio.wait_for(waiter, 5.0)
        assert core.endings.settled(job)
        assert (core.endings.view(job)["status"], core.endings.view(job)["result"]) == ("completed", "done")
        assert core.endings.waiter(job, loop) is None  # settled: nothing to wait for

    asyncio.run(scenario())


def test_with_a_journal_an_end_shows_and_wakes_waiters_once_committed() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        journal, core = make_journaled_core()
        job = processing(core, core.submit())
        waiter, forgotten = core.endings.waiter(job, loop), core.endings.waiter(job, loop)
        assert waiter is not None and forgotten is not None
        durable = core.endings.finish(job, JobStatus.ERROR, error="boom", error_kind=ErrorKind.MODEL)
        assert durable is journal.pending[job.id] and job.status is JobStatus.ERROR
        shown = core.endings.view(job)
        assert (shown["status"], shown["result"], shown["ended_at"], shown["error"]) == (
            "processing",
            None,
            None,
            None,
        )
        assert not core.endings.settled(job) and core.endings.waiter(job, loop) is not None
        with pytest.raises(TimeoutError):  # not durable yet
            await asyncio.wait_for(asyncio.shield(waiter), 0.01)
        core.endings.forget_waiter(job.id, forgotten)  # its wait_for timed out
        journal.commit(core.endings)
        await asyncio.wait_for(waiter, 5.0)
        assert durable.done() and core.endings.settled(job) and not forgotten.done()
        shown = core.endings.view(job)
        assert (shown["status"], shown["error"]) == ("error", "boom") and shown["ended_at"] is not None
        assert core.endings.waiter(job, loop) is None

    asyncio.run(scenario())


def test_an_end_after_the_journal_closed_shows_at_once() -> None:
    async def scenario() -> None:
        journal, core = make_journaled_core()
        job = core.submit()
        waiter = core.endings.waiter(job, asyncio.get_running_loop())
        journal.closed = True
        assert core.endings.finish(job, JobStatus.CANCELLED, error_kind=ErrorKind.CANCELLED) is None
        assert core.endings.settled(job) and core.endings.view(job)["status"] == "cancelled"
        assert waiter is not None and waiter.done()

    asyncio.run(scenario())


def test_release_all_wakes_every_waiter() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        journal, core = make_journaled_core()
        never, unsettled = core.submit(), processing(core, core.submit())
        core.endings.finish(unsettled, JobStatus.COMPLETED, result=1)
        waiters = [core.endings.waiter(job, loop) for job in (never, unsettled)]
        assert all(waiter is not None and not waiter.done() for waiter in waiters)
        core.endings.release_all()
        assert all(waiter is not None and waiter.done() for waiter in waiters)
        assert core.endings.view(never)["status"] == "queued"
        assert core.endings.view(unsettled)["status"] == "completed"  # shown as it stands

    asyncio.run(scenario())


def test_a_callback_waits_for_the_durable_end_or_the_release_and_can_be_taken_back() -> None:
    asyncio.run(_a_callback_waits())


async def _a_callback_waits() -> None:
    journal, core = make_journaled_core()
    endings = core.endings
    job, taken_back, stopped = processing(core, core.submit()), core.submit(), core.submit()
    calls: list[str] = []

    def seen(name: str, job: Job) -> None:
        calls.append(f"{name}:{endings.view(job)['status']}")

    def first() -> None:
        seen("first", job)

    def second() -> None:
        seen("second", job)

    def broken() -> None:
        raise RuntimeError("a waiter's bug")

    assert endings.when_settled(job, broken) and endings.when_settled(job, first)
    assert endings.when_settled(job, second)
    endings.forget_callback(job.id, second)

    def on_taken_back() -> None:
        calls.append("taken back")

    assert endings.when_settled(taken_back, on_taken_back)
    endings.forget_callback(taken_back.id, on_taken_back)
    endings.finish(job, JobStatus.COMPLETED, result="r")
    endings.finish(taken_back, JobStatus.CANCELLED)  # settled by the same commit: its callback is gone
    assert calls == []  # ended, not durable yet
    journal.commit(endings)
    assert calls == ["first:completed"]  # after the broken one, which was logged
    assert not endings.when_settled(job, first)  # durable already: the caller answers at once
    # At the stop a waiting callback is called with the end not shown unless it is durable.
    processing(core, stopped)
    endings.finish(stopped, JobStatus.COMPLETED, result="r")
    assert endings.when_settled(stopped, lambda: seen("stopped", stopped))
    endings.release_all()
    assert calls == ["first:completed", "stopped:processing"]


def test_observers_are_told_of_every_end() -> None:
    core = make_core()
    seen: list[tuple[str, JobStatus]] = []
    core.endings.observers.append(lambda job: seen.append((job.id, job.status)))
    first, second, third = processing(core, core.submit()), core.submit(), core.submit()
    core.endings.finish(first, JobStatus.COMPLETED)
    core.endings.fail([second, third], "no", ErrorKind.PLACEMENT)
    assert seen == [
        (first.id, JobStatus.COMPLETED),
        (second.id, JobStatus.ERROR),
        (third.id, JobStatus.ERROR),
    ]
    assert third.error_kind == "placement"


# ---- Deadlines -------------------------------------------------------------------------------


def test_a_job_past_its_deadline_ends_as_a_timeout() -> None:
    core = make_core()
    job = core.submit(timeout_s=2.0)
    assert len(core.deadlines) == 1 and job.deadline is not None
    assert core.deadlines.expire(job.deadline - 0.001) == [] and job.status is JobStatus.QUEUED
    assert core.deadlines.expire(job.deadline) == [job]
    assert (job.status, job.error_kind) == (JobStatus.ERROR, "timeout")
    assert job.error == "timeout: the job did not end within 2.0s"
    assert len(core.deadlines) == 0


def test_an_entry_whose_job_ended_or_whose_deadline_changed_is_skipped() -> None:
    core = make_core()
    ended, moved = processing(core, core.submit()), core.submit()
    core.deadlines.watch(ended, 100.0)
    core.deadlines.watch(moved, 100.0)
    core.endings.finish(ended, JobStatus.COMPLETED, result="in time")
    core.deadlines.watch(moved, 200.0)  # set again: its first entry is stale
    assert core.deadlines.expire(150.0) == []
    assert (ended.status, ended.result) == (JobStatus.COMPLETED, "in time")
    assert moved.status is JobStatus.QUEUED and len(core.deadlines) == 1
    assert core.deadlines.expire(200.0) == [moved]


def test_a_running_job_past_its_deadline_restarts_its_worker_and_its_mates_go_back_without_a_try() -> None:
    worker = make_worker()
    core = make_core((worker,))
    late, mate = core.submit(timeout_s=1.0), core.submit()
    core.dispatcher.dispatch()
    assert late.worker_id == mate.worker_id == "cpu-w0"
    assert late.deadline is not None
    assert core.deadlines.expire(late.deadline) == [late]
    assert fake(worker).kills == 1 and worker.no_penalty
    core.events.on_exit(worker)
    assert (late.status, late.error_kind) == (JobStatus.ERROR, "timeout")
    assert (mate.status, mate.attempts) == (JobStatus.QUEUED, 0) and core.table.waiting_suspects() == []


@pytest.mark.parametrize(("killable", "state"), [(False, WorkerState.READY), (True, WorkerState.STOPPING)])
def test_a_thread_or_a_stopping_worker_is_not_killed_for_a_timeout(
    killable: bool, state: WorkerState
) -> None:
    worker = make_worker(killable=killable)
    channel = fake(worker)
    core = make_core((worker,))
    job = core.submit(timeout_s=1.0)
    core.dispatcher.dispatch()
    worker.watch.state = state
    assert job.deadline is not None and core.deadlines.expire(job.deadline) == [job]
    assert job.error_kind == "timeout"
    assert channel.kills == 0 and not worker.no_penalty
