"""The requests of one front that wait for a job's end (`infer`, `GET /jobs/{id}?wait=`): each is
answered once the job's end is durable (`JobEndings.when_settled` calls it) or when its wait runs
out, whichever comes first, and exactly once; the front's death ends them all unanswered.

Deadlines are kept in buckets of `GRAIN_S` with one loop timer, armed for the earliest bucket: a
wait costs a few dict operations, not a timer of its own (with a `call_later` per request and its
`cancel` the loop spent about 41 µs a request behind one front, without them 31, in one interleaved
A/B: `docs/performance.md`). A wait runs out at most `GRAIN_S` after its deadline, not before it
(to the loop timer's precision: uvloop's is a millisecond)."""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable
from typing import Generic, TypeVar

from scheduler.core.endings import JobEndings
from scheduler.core.jobs import Job

GRAIN_S = 0.05

Owner = TypeVar("Owner")  # what the waits' answers go through (the front's link)
Answer = Callable[[Owner, int, Job], None]  # (owner, request id, the job as it stands): queues the reply
Failed = Callable[[int, Exception], None]  # (request id, what the answer raised): queues an error reply


class EndWait(Generic[Owner]):
    """One waiting request; called (without arguments) by `JobEndings` once its job's end is durable."""

    __slots__ = ("waits", "request_id", "job", "answer", "tick")

    def __init__(
        self, waits: Waits[Owner], request_id: int, job: Job, answer: Answer[Owner], tick: int
    ) -> None:
        self.waits = waits
        self.request_id = request_id
        self.job = job
        self.answer = answer
        self.tick = tick

    def __call__(self) -> None:
        self.waits.end(self, settled=True)


class Waits(Generic[Owner]):
    """owner: passed to each answer; loop: whose clock and timer; endings: where each wait is
    registered; failed: the reply of a wait whose answer raised."""

    def __init__(
        self, owner: Owner, loop: asyncio.AbstractEventLoop, endings: JobEndings, failed: Failed
    ) -> None:
        self.owner = owner
        self.loop = loop
        self.endings = endings
        self.failed = failed
        self.by_request: dict[int, EndWait[Owner]] = {}
        self.buckets: dict[int, dict[int, EndWait[Owner]]] = {}  # tick -> its waits by request id
        self.ticks: list[int] = []  # the buckets' ticks, a heap
        self.timer: asyncio.TimerHandle | None = None
        self.timer_tick = 0

    def __len__(self) -> int:
        return len(self.by_request)

    def add(self, request_id: int, job: Job, wait_s: float, answer: Answer[Owner]) -> None:
        """Answer the request when the job's end is durable or `wait_s` has passed; at once (here)
        when the end is durable already."""
        tick = math.ceil((self.loop.time() + wait_s) / GRAIN_S)
        wait = EndWait(self, request_id, job, answer, tick)
        if not self.endings.when_settled(job, wait):
            self._answer(wait)
            return
        self.by_request[request_id] = wait
        bucket = self.buckets.get(tick)
        if bucket is None:
            bucket = self.buckets[tick] = {}
            heapq.heappush(self.ticks, tick)
            if self.timer is None or tick < self.timer_tick:
                self._arm(tick)
        bucket[request_id] = wait

    def end(self, wait: EndWait[Owner], settled: bool) -> None:
        """Answer `wait` now (its job's end is durable: `settled`, or its time ran out)."""
        if self.by_request.pop(wait.request_id, None) is None:
            return  # answered already, or the front is gone
        bucket = self.buckets.get(wait.tick)
        if bucket is not None:
            bucket.pop(wait.request_id, None)
        if not settled:
            self.endings.forget_callback(wait.job.id, wait)
        self._answer(wait)

    def release(self) -> None:
        """The front is gone: every wait ends unanswered (the jobs go on; they are in the journal)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        waits, self.by_request = self.by_request, {}
        self.buckets.clear()
        self.ticks.clear()
        for wait in waits.values():
            self.endings.forget_callback(wait.job.id, wait)

    def _answer(self, wait: EndWait[Owner]) -> None:
        try:
            wait.answer(self.owner, wait.request_id, wait.job)
        except Exception as exc:
            self.failed(wait.request_id, exc)

    def _arm(self, tick: int) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_tick = tick
        self.timer = self.loop.call_at(tick * GRAIN_S, self._expire)

    def _expire(self) -> None:
        """The earliest bucket's time has come: its waits (and any other bucket's that are due) run out."""
        self.timer = None
        due = max(self.timer_tick, math.floor(self.loop.time() / GRAIN_S))
        ticks = self.ticks
        while ticks and ticks[0] <= due:
            bucket = self.buckets.pop(heapq.heappop(ticks), None)
            for wait in list(bucket.values()) if bucket else ():
                self.end(wait, settled=False)
        if ticks:
            self._arm(ticks[0])
