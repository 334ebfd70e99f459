"""The fronts' waits for jobs' ends (`scheduler.http.fronts.waits.Waits`): a wait is answered once,
when its job's end is durable or when its time has run out (never before, at most `GRAIN_S` after),
and none is answered after the front's death. Over a real `JobEndings` with a fake journal whose
commits the test makes (`tests.support.fakes`), on a real event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from scheduler.core.jobs import Job, JobStatus
from scheduler.http.fronts.waits import GRAIN_S, Failed, Owner, Waits
from tests.support.fakes import Core, FakeJournal, make_journaled_core

Answered = list[tuple[int, str, float]]


def answer(answered: Answered, request_id: int, job: Job) -> None:
    answered.append((request_id, job.status.value, asyncio.get_running_loop().time()))


def front_waits(owner: Owner, failed: Failed = lambda *_: None) -> tuple[FakeJournal, Core, Waits[Owner]]:
    """A journaled core (the fake journal's commits made by the test) and waits over its endings, on
    the running loop."""
    journal, core = make_journaled_core()
    return journal, core, Waits(owner, asyncio.get_running_loop(), core.endings, failed)


def processing(core: Core) -> Job:
    job = core.submit()
    core.table.mark_processing(job, "cpu-w0", "cpu")
    return job


async def until(condition: Callable[[], bool], deadline_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while not condition():
        assert loop.time() < deadline, "the condition did not come true"
        await asyncio.sleep(0.005)


def test_a_wait_is_answered_once_when_the_end_is_durable() -> None:
    async def scenario() -> None:
        answered: Answered = []
        journal, core, waits = front_waits(answered)
        job = processing(core)
        waits.add(7, job, 30.0, answer)
        assert len(waits) == 1 and core.endings._callbacks[job.id]  # registered with the endings
        core.endings.finish(job, JobStatus.COMPLETED, result=1)
        assert answered == []  # ended, not yet durable
        journal.commit(core.endings)
        assert [(request_id, status) for request_id, status, _ in answered] == [(7, "completed")]
        assert len(waits) == 0 and job.id not in core.endings._callbacks
        assert waits.timer is not None  # its bucket's timer still runs; firing, it answers nothing
        waits._expire()
        assert len(answered) == 1
        waits.add(8, job, 30.0, answer)  # durable already: answered at once, nothing kept
        assert [request_id for request_id, _, _ in answered] == [7, 8] and len(waits) == 0

    asyncio.run(scenario())


def test_a_wait_runs_out_after_its_deadline_never_before_and_forgets_its_callback() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        answered: Answered = []
        _, core, waits = front_waits(answered)
        long_job, short_job = core.submit(), core.submit()
        start = loop.time()
        waits.add(1, long_job, 0.4, answer)
        waits.add(2, short_job, 0.1, answer)  # a shorter wait re-arms the timer earlier
        await until(lambda: len(answered) == 1)
        request_id, status, at = answered[0]
        assert (request_id, status) == (2, "queued")
        assert 0.1 - 1e-6 <= at - start <= 0.1 + GRAIN_S + 2.0  # late by the loop's own lateness at most
        assert short_job.id not in core.endings._callbacks
        await until(lambda: len(answered) == 2)
        request_id, _, at = answered[1]
        assert request_id == 1 and at - start >= 0.4 - 1e-6
        assert not core.endings._callbacks and len(waits) == 0 and waits.timer is None

    asyncio.run(scenario())


def test_the_fronts_death_ends_its_waits_unanswered() -> None:
    async def scenario() -> None:
        answered: Answered = []
        journal, core, waits = front_waits(answered)
        job = processing(core)
        waits.add(1, job, 0.05, answer)
        waits.release()
        assert len(waits) == 0 and waits.timer is None and not core.endings._callbacks
        core.endings.finish(job, JobStatus.COMPLETED, result=1)
        journal.commit(core.endings)
        assert answered == []  # and no timer is left to answer it later

    asyncio.run(scenario())


def test_an_answer_that_raises_becomes_the_failure_reply() -> None:
    async def scenario() -> None:
        failures: list[tuple[int, str]] = []
        journal, core, waits = front_waits(None, lambda rid, exc: failures.append((rid, str(exc))))

        def broken(_: None, request_id: int, job: Job) -> None:
            raise ValueError(f"cannot answer {request_id}")

        job = processing(core)
        waits.add(3, job, 30.0, broken)
        core.endings.finish(job, JobStatus.COMPLETED, result=1)
        journal.commit(core.endings)
        assert failures == [(3, "cannot answer 3")] and len(waits) == 0

    asyncio.run(scenario())
