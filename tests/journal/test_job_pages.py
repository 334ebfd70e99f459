"""The job list's pages (`scheduler.core.job_pages`, `GET /jobs?before=`): newest first by id, over
the table and the journal, so jobs the table has trimmed and jobs from before a restart are listed;
every job once across pages; filters by status, model and time; the walk of the table stops early."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

from scheduler import JobRequest, Scheduler
from scheduler.core.job_pages import JobFilter, id_bound, newest_in_memory, page
from scheduler.core.jobs import Job, JobStatus
from scheduler.scheduler import ASYNC
from tests.support.faults import fault_settings


async def all_pages(scheduler: Scheduler, where: JobFilter, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    before = where.before
    while True:
        cursor = JobFilter(where.status, where.model, before, where.since)
        jobs, before = await page(
            scheduler.table,
            scheduler.journal,
            lambda job: scheduler.endings.shown_status(job).value,
            cursor,
            limit,
        )
        pages.append([job.id for job in jobs])
        if before is None:
            return pages


def test_pages_cover_the_table_the_journal_and_a_restart(tmp_path: Path) -> None:
    settings = fault_settings(journal_path=str(tmp_path / "journal.db"), max_finished_in_memory=4)

    async def first_life() -> tuple[list[str], list[str], float]:
        async with Scheduler(settings, scheduler_type=ASYNC) as scheduler:
            ids: list[str] = []
            failed: list[str] = []
            for n in range(23):
                inputs = {"fail": "on purpose"} if n % 5 == 0 else {"n": n}
                job_id = await scheduler.schedule_job(JobRequest(model="echo", inputs=inputs))
                await scheduler.wait_for(job_id, 10)
                (failed if n % 5 == 0 else ids).append(job_id)
                if n == 11:  # a time between two jobs, a few milliseconds from each
                    await asyncio.sleep(0.01)
                    middle = time.time()
                    await asyncio.sleep(0.01)
            assert len(scheduler.table.jobs) <= 4 + 1  # the rest is only in the journal
            everything = sorted(ids + failed, reverse=True)
            pages = await all_pages(scheduler, JobFilter(), 5)
            assert [len(one) for one in pages] == [5, 5, 5, 5, 3]
            assert [job_id for one in pages for job_id in one] == everything
            errors = await all_pages(scheduler, JobFilter(status="error"), 2)
            assert [job_id for one in errors for job_id in one] == sorted(failed, reverse=True)
            assert await all_pages(scheduler, JobFilter(model="sleep"), 5) == [[]]
            recent = await all_pages(scheduler, JobFilter(since=id_bound(middle)), 50)
            assert recent == [[job_id for job_id in everything if job_id >= id_bound(middle)]]
            assert len(recent[0]) == 11
            return everything, failed, middle

    everything, failed, middle = asyncio.run(first_life())

    async def second_life() -> None:
        async with Scheduler(settings, scheduler_type=ASYNC) as scheduler:
            queued = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 5000}))
            pages = await all_pages(scheduler, JobFilter(), 7)
            assert [job_id for one in pages for job_id in one] == [queued, *everything]
            older = await all_pages(scheduler, JobFilter(before=id_bound(middle)), 50)
            assert older == [[job_id for job_id in everything if job_id < id_bound(middle)]]
            shown = await all_pages(scheduler, JobFilter(status="processing"), 50)
            assert shown in ([[queued]], [[]])  # it may still be queued: its worker was just started
            await scheduler.cancel_job(queued)

    asyncio.run(second_life())


def test_the_walk_of_the_table_stops_early_and_keeps_id_order() -> None:
    now_ms = int(time.time() * 1000)

    def job(ms: int, tail: str, status: JobStatus = JobStatus.COMPLETED) -> Job:
        return Job(id=f"{ms:012x}{tail:0>20}", model="echo", inputs=None, status=status)

    # Insertion order strays from id order within a millisecond (random id tails).
    inserted = [job(now_ms - 10_000 + n // 2, "b" if n % 2 == 0 else "a") for n in range(10_000)]
    walked: list[Job] = []

    def newest_first() -> Iterator[Job]:
        for one in reversed(inserted):
            walked.append(one)
            yield one

    found = newest_in_memory(newest_first(), lambda job: job.status.value, JobFilter(), 10)
    assert [one.id for one in found] == sorted((one.id for one in inserted), reverse=True)[:10]
    assert len(walked) < 200  # the page's 5 ms, then 50 ms of slack at 2 jobs a ms: not 10,000
    stage = Job(id=found[0].id + ".0", model="echo", inputs=None, parent_id=found[0].id)
    assert newest_in_memory([stage, *found], lambda job: job.status.value, JobFilter(), 3) == found[:3]


def test_a_time_bound_is_the_millisecond_it_names() -> None:
    # `1.001 * 1000` is `1000.9999999999999` in binary: the bound must not fall a millisecond short
    for wall_s, ms in [
        (1.001, 1001),
        (4.35, 4350),
        (1764732000.123, 1764732000123),
        (1764732000.1239, 1764732000123),
    ]:
        assert id_bound(wall_s) == f"{ms:012x}"
    assert id_bound(-5.0) == "0" * 12
