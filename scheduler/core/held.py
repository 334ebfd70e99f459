"""Submissions a journal holds back while their client waits for the end (`infer`).
`HeldSubmissions` is pure (no I/O, no clock of its own); `HeldReleases` is its shell on the event
loop, one timer that hands the journal (`scheduler.journal.sqlite`, the cluster's `RedisJournal`)
the submissions that fall due, to write.

An infer is acknowledged by its answer, and the answer is sent once the job's end is durable. So its
submission need not be committed on its own first: held here, it is written together with its end,
as one row (one insert, where a submission and then its end are an insert and an update: on this
machine 8 µs against 12 to 19 µs of the writer's CPU per job). A job that has not ended `HOLD_S`
after its submission is released: its submission goes to the writer as any other, so a long job is
in the journal (and runs again after a restart) as it would be without the hold. What a crash can
lose is a job submitted less than `HOLD_S` before it, whose client got no answer: not acknowledged.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from scheduler.core.jobs import Job

HOLD_S = 0.1  # an infer's submission waits this long for its end before it is written alone


class HeldSubmissions:
    """held: jobs whose submission is not written yet, by id; released: ids of jobs whose submission
    was written before their end (their end is written as an upsert, which holds even if that
    submission's commit failed)."""

    def __init__(self, hold_s: float | None = None) -> None:
        self.hold_s = HOLD_S if hold_s is None else hold_s
        self.held: dict[str, Job] = {}
        self.released: set[str] = set()
        self._order: deque[tuple[float, str]] = deque()  # (held at, id), oldest first

    def hold(self, job: Job, now: float) -> bool:
        """Hold the job's submission; True when nothing was held before (a release must be timed)."""
        first = not self._order
        self.held[job.id] = job
        self._order.append((now, job.id))
        return first

    def ended(self, job_id: str) -> bool:
        """The job ended: True when its end must be written as its whole row (its submission was held,
        or released and maybe not committed); it is held no more."""
        if self.held.pop(job_id, None) is not None:
            return True
        if job_id in self.released:
            self.released.discard(job_id)
            return True
        return False

    def release(self, job_id: str) -> Job | None:
        """Release one held job now (its submission is to be written at once), or None: not held."""
        job = self.held.pop(job_id, None)
        if job is not None:
            self.released.add(job_id)
        return job

    def due(self, now: float) -> list[Job]:
        """The jobs held `hold_s` or more that have not ended: released (write their submissions)."""
        due: list[Job] = []
        order = self._order
        while order and order[0][0] + self.hold_s <= now:
            _, job_id = order.popleft()
            job = self.held.pop(job_id, None)
            if job is not None:
                self.released.add(job_id)
                due.append(job)
        return due

    def next_due(self) -> float | None:
        """When the oldest submission still held is due (the clock `hold` was given), or None. (The
        ones that ended meanwhile leave the order here: timed by them, a busy journal's release
        timer went off about once per job instead of once per `hold_s`.)"""
        order, held = self._order, self.held
        while order and order[0][1] not in held:
            order.popleft()
        return order[0][0] + self.hold_s if order else None

    def release_all(self) -> list[Job]:
        """Every held job (the journal closes: what has not ended is written as submitted)."""
        jobs = list(self.held.values())
        self.released.update(self.held)
        self.held.clear()
        self._order.clear()
        return jobs


class HeldReleases:
    """`held`'s submissions handed to `write` as they fall due: one timer on the loop, timed by the
    oldest submission still held (`HeldSubmissions.next_due`)."""

    def __init__(self, held: HeldSubmissions, write: Callable[[list[Job]], object]) -> None:
        self.held = held
        self.write = write
        self._timer: asyncio.TimerHandle | None = None

    def hold(self, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        """Hold the job's submission; the timer is started for the first one held."""
        if self.held.hold(job, loop.time()):
            self._timer = loop.call_at(loop.time() + self.held.hold_s, self._release_due, loop)

    def release_all(self) -> list[Job]:
        """Every held job, the timer stopped (the journal closes)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return self.held.release_all()

    def _release_due(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        due = self.held.due(loop.time())
        if due:
            self.write(due)
        next_due = self.held.next_due()
        if next_due is not None:
            self._timer = loop.call_at(next_due, self._release_due, loop)
