"""Pages of the job list (`GET /jobs`), newest first, by id: ids begin with their creation time, so
`before=<id>` is a cursor and a time range is a range of ids (`id_bound`).

A page merges the table in memory (every job not ended, and the ended ones it still holds; it is the
truth for them) with the journal's ended jobs (`JobJournal.page_ended`: jobs the table has trimmed, and
those from before a restart). An ended job's status never changes and its end is in the table before
it is in the journal, so a journal row whose job the table also holds matches the same filter there:
taking the newest `limit` of each source, dropping the journal's duplicates and keeping the newest
`limit` of the union gives exactly the page."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from scheduler.core.jobs import ENDED, Job, JobStatus
from scheduler.core.ports import JobJournal
from scheduler.core.table import JobTable

ID_TIME_DIGITS = 12  # an id's first 12 hex digits: its creation time in milliseconds
ORDER_SLACK_MS = 50  # how far the table's insertion order may stray from id order (same-ms ids)


@dataclass(frozen=True)
class JobFilter:
    """status, model: as shown (a pipeline's jobs by its name); before: ids below it (the cursor);
    since: ids at or above it (`id_bound` of a time)."""

    status: str | None = None
    model: str | None = None
    before: str | None = None
    since: str | None = None

    def admits_id(self, job_id: str) -> bool:
        return (self.before is None or job_id < self.before) and (self.since is None or job_id >= self.since)


def id_bound(wall_s: float) -> str:
    """The smallest id of a job created at or after `wall_s` (epoch seconds), to the millisecond (an
    id's resolution). The thousandth of a millisecond added keeps `1.001` from flooring to 1000 ms
    (`1.001 * 1000` is `1000.9999999999999` in binary)."""
    return f"{max(0, int(wall_s * 1000 + 0.001)):0{ID_TIME_DIGITS}x}"


def created_ms(job_id: str) -> int | None:
    try:
        return int(job_id[:ID_TIME_DIGITS], 16)
    except ValueError:
        return None  # an id of another form (none is made so now): no early stop past it


def newest_in_memory(
    jobs_newest_first: Iterable[Job], shown_status: Callable[[Job], str], where: JobFilter, limit: int
) -> list[Job]:
    """The newest `limit` client jobs that match, newest first, from jobs in insertion order reversed
    (nearly id order: ids made in the same millisecond may come in any order). The walk stops once
    it is `ORDER_SLACK_MS` older than the page's oldest job, or than `since`."""
    page: list[tuple[str, Job]] = []  # a min-heap by id: the newest `limit` so far, the oldest on top
    stop_below_ms = created_ms(where.since) if where.since is not None else None
    for job in jobs_newest_first:
        if job.parent_id is not None:
            continue  # a stage's or a CPU call's job: not a client's
        if stop_below_ms is not None:
            made = created_ms(job.id)
            if made is not None and made < stop_below_ms - ORDER_SLACK_MS:
                break
        if not where.admits_id(job.id):
            continue
        if where.model is not None and job.model != where.model:
            continue
        if where.status is not None and shown_status(job) != where.status:
            continue
        if len(page) < limit:
            heapq.heappush(page, (job.id, job))
        elif job.id > page[0][0]:
            heapq.heapreplace(page, (job.id, job))
        else:
            continue
        if len(page) == limit:  # a full page: nothing much older than its oldest job can be in it
            oldest_ms = created_ms(page[0][0])
            if oldest_ms is not None and (stop_below_ms is None or oldest_ms > stop_below_ms):
                stop_below_ms = oldest_ms
    return [job for _, job in sorted(page, key=lambda entry: entry[0], reverse=True)]


async def page(
    table: JobTable,
    journal: JobJournal | None,
    shown_status: Callable[[Job], str],
    where: JobFilter,
    limit: int,
) -> tuple[list[Job], str | None]:
    """The page and the cursor of the next one (`before`), None when this one is the last."""
    jobs = newest_in_memory(reversed(table.jobs.values()), shown_status, where, limit)
    ended_wanted = where.status is None or JobStatus(where.status) in ENDED
    if journal is not None and ended_wanted:
        held = {job.id for job in jobs}
        for job in await journal.page_ended(where.before, where.since, where.status, where.model, limit):
            if job.id not in held and table.get(job.id) is None:
                jobs.append(job)  # only in the journal (a job the table holds was matched there)
        jobs.sort(key=lambda job: job.id, reverse=True)
        del jobs[limit:]
    return jobs, (jobs[-1].id if len(jobs) == limit else None)
