"""`JobEvents`: a job's events as they happen, for whoever listens (`GET /jobs/{id}/events`, the
clients' `events()`), and the queue position of a queued job.

A listener gets the job's state each time it changes: `queued` (with its queue position: how many
jobs of its model run before it), `processing` (worker, device), `progress` (items done of a job split
into items, or a pipeline's stage), then its end (`completed`, `error` or `cancelled`, with the job's
view, once the end is durable), and the stream closes. At shutdown every stream gets `shutdown` and
closes. Nothing is kept for a job that nobody listens to: each hook is one dict lookup then.

Events are derived from the job's state when something may have changed it, not logged: a listener
that connects late, or comes back, is told the state as it stands. An event's id orders the states of
a job: `round.phase.k`, where the round counts the job's runs, and phase 0 is queued at position k,
1 processing, 2 progress with k done, 3 the end. A listener that comes back with `Last-Event-ID`
gets only what is newer than what it saw.

The hooks the core calls (`JobEndings` owns the one instance, as `endings.events`):
  changed()                  after a dispatch pass: positions moved, jobs started (coalesced, and
                             positions recounted at most every `POSITIONS_EVERY_S`)
  settled(job)               a job's end became durable (`JobEndings`)
  progress(job, done, total, stage=None)
                             a job made progress: items done (worker results); a pipeline job's stage
                             was sent to a worker (`Pipelines.stage_started`: the stage's index, the
                             number of stages, its name)
  close_all() / reopen()     the scheduler stops / starts
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from scheduler.core.jobs import ENDED, Job, JobStatus
from scheduler.core.table import JobTable

Key = tuple[int, int, int]  # (round, phase, k), ordered as the job's states follow each other
QUEUED, PROCESSING, PROGRESS, END = 0, 1, 2, 3
POSITIONS_EVERY_S = 0.05


class JobEvent(NamedTuple):
    """One event: its key (None for `shutdown`, which names no state of the job), its name, its data."""

    key: Key | None
    name: str
    data: dict[str, Any]

    @property
    def id(self) -> str | None:
        if self.key is None:
            return None
        round_, phase, k = self.key
        return f"{round_}.{phase}.{-k if phase == QUEUED else k}"

    @property
    def final(self) -> bool:
        return self.key is None or self.key[1] == END


def parse_event_id(text: str | None) -> Key | None:
    """The key an event id names (a `Last-Event-ID`); None when it names none."""
    try:
        round_, phase, k = (int(part) for part in (text or "").split("."))
    except ValueError:
        return None
    if not QUEUED <= phase <= END:
        return None
    return (round_, phase, -k if phase == QUEUED else k)


def newer(key: Key, seen: Key | None) -> bool:
    """Whether a listener that saw `seen` is to be told `key`: a later state, or the queue position
    moved (either way) within the same wait."""
    if seen is None:
        return True
    if seen[1] == END:
        return False
    return key > seen or (key[:2] == seen[:2] == (key[0], QUEUED) and key != seen)


def queue_positions(table: JobTable, model: str, wanted: Iterable[str] = ()) -> dict[str, int]:
    """How many queued jobs of `model` run before each of its queued jobs, in dispatch order: its
    suspects first, then its lanes, high priority first, first in first out. With `wanted`, the scan
    stops once those jobs are counted."""
    left = set(wanted)
    positions: dict[str, int] = {}
    for job in table.suspects:
        if job.model == model and job.status is JobStatus.QUEUED and job.attempts > 0:
            positions.setdefault(job.id, len(positions))
            left.discard(job.id)
            if not left and wanted:
                return positions
    for lane in table.queued_by_model.get(model, ()):
        for job in lane:
            if job.status is JobStatus.QUEUED:
                positions.setdefault(job.id, len(positions))
                left.discard(job.id)
                if not left and wanted:
                    return positions
    return positions


def queue_position(table: JobTable, job: Job) -> int | None:
    """How many jobs run before `job` on its model (None when it is not waiting in a queue)."""
    if job.status is not JobStatus.QUEUED:
        return None
    return queue_positions(table, job.model, (job.id,)).get(job.id)


class Listener:
    """One stream of one job's events; the HTTP layer reads it with `next`."""

    def __init__(self, job_id: str, seen: Key | None) -> None:
        self.job_id = job_id
        self.seen = seen  # the key of the last event sent, or named by Last-Event-ID
        self.closed = False
        self._queue: asyncio.Queue[JobEvent | None] = asyncio.Queue()

    def offer(self, event: JobEvent) -> None:
        if self.closed:
            return
        if event.key is not None:
            if not newer(event.key, self.seen):
                if event.final:
                    self.close()  # the end was seen before: nothing more to say
                return
            self.seen = event.key
        self._queue.put_nowait(event)
        if event.final:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(None)

    async def next(self, timeout: float) -> JobEvent | None:
        """The next event; None once the stream has ended; TimeoutError when none came in `timeout`."""
        return await asyncio.wait_for(self._queue.get(), timeout)


class JobEvents:
    """table: the jobs; shown_status: the status a client sees (an end shows once durable); view:
    the job as a client sees it (the end event's data)."""

    def __init__(
        self,
        table: JobTable,
        shown_status: Callable[[Job], JobStatus],
        view: Callable[[Job], dict[str, Any]],
    ) -> None:
        self.table = table
        self.shown_status = shown_status
        self.view = view
        self.closed = False
        self._listeners: dict[str, list[Listener]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._soon = False
        self._later: asyncio.TimerHandle | None = None
        self._positions_at = float("-inf")

    @property
    def listening(self) -> int:
        """How many jobs have listeners."""
        return len(self._listeners)

    def listened(self, job_id: str) -> bool:
        """Whether somebody listens to `job_id` (a cluster's front then reads the job's end)."""
        return job_id in self._listeners

    # ---- listeners ----------------------------------------------------------------------------

    def listen(self, job: Job, last_event_id: str | None = None) -> Listener:
        """A stream of `job`'s events, starting with its state as it stands (unless `last_event_id`
        names it or a later one)."""
        self._loop = asyncio.get_running_loop()
        listener = Listener(job.id, parse_event_id(last_event_id))
        event = self._current(job, None)
        if event is not None:
            listener.offer(event)
        if self.closed:
            listener.offer(self._shutdown(job))
        if not listener.closed:
            self._listeners.setdefault(job.id, []).append(listener)
        return listener

    def forget(self, listener: Listener) -> None:
        """The client went away."""
        listener.close()
        listeners = self._listeners.get(listener.job_id)
        if listeners and listener in listeners:
            listeners.remove(listener)
            if not listeners:
                del self._listeners[listener.job_id]

    # ---- hooks ---------------------------------------------------------------------------------

    def changed(self) -> None:
        """Jobs may have moved in their queues or started: tell the listeners, soon."""
        if self._listeners and not self._soon and self._loop is not None and not self.closed:
            self._soon = True
            self._loop.call_soon(self._refresh)

    def settled(self, job: Job) -> None:
        """`job`'s end is durable: its listeners get the end and their streams close."""
        listeners = self._listeners.pop(job.id, None)
        if listeners:
            event = self._end(job)
            for listener in listeners:
                listener.offer(event)
        if self._listeners:
            self.changed()  # the jobs behind it moved up

    def progress(self, job: Job, done: int, total: int | None = None, stage: str | None = None) -> None:
        """`job` has `done` of `total` items (or stages) done; `stage` names the stage it entered.
        `done` must not go down within one run of the job."""
        listeners = self._listeners.get(job.id)
        if not listeners:
            return
        running = self._current(job, None)  # a job that makes progress runs: that is said first
        if running is not None and running.name == "processing":
            for listener in list(listeners):
                listener.offer(running)
        data: dict[str, Any] = {"job_id": job.id, "status": "processing", "done": done, "total": total}
        if stage is not None:
            data["stage"] = stage
        event = JobEvent((max(job.attempts - 1, 0), PROGRESS, done), "progress", data)
        for listener in list(listeners):
            listener.offer(event)

    def close_all(self) -> None:
        """The scheduler stops: every stream gets `shutdown` and ends."""
        self.closed = True
        if self._later is not None:
            self._later.cancel()
            self._later = None
        listeners, self._listeners = self._listeners, {}
        for job_id, streams in listeners.items():
            job = self.table.get(job_id)
            for listener in streams:
                if job is not None:
                    listener.offer(self._shutdown(job))
                listener.close()

    def reopen(self) -> None:
        self.closed = False

    # ---- events from the job's state ------------------------------------------------------------

    def _refresh(self) -> None:
        self._soon = False
        now = time.monotonic()
        count_positions = now - self._positions_at >= POSITIONS_EVERY_S
        positions_by_model: dict[str, dict[str, int]] = {}
        deferred = False
        for job_id, listeners in list(self._listeners.items()):
            job = self.table.get(job_id)
            if job is None:
                continue
            if self.shown_status(job) is JobStatus.QUEUED and job.status is JobStatus.QUEUED:
                if not count_positions:
                    deferred = True
                    continue
                positions = positions_by_model.get(job.model)
                if positions is None:
                    positions = positions_by_model[job.model] = queue_positions(self.table, job.model)
            else:
                positions = None
            event = self._current(job, positions)
            if event is not None:
                for listener in list(listeners):
                    listener.offer(event)
        if positions_by_model:
            self._positions_at = now
        if deferred and self._later is None and self._loop is not None:
            delay = max(0.0, self._positions_at + POSITIONS_EVERY_S - now)
            self._later = self._loop.call_later(delay, self._refresh_later)

    def _refresh_later(self) -> None:
        self._later = None
        self._refresh()

    def _current(self, job: Job, positions: dict[str, int] | None) -> JobEvent | None:
        """The event that says `job`'s state as a client may see it."""
        status = self.shown_status(job)
        if status in ENDED:
            return self._end(job)
        if status is JobStatus.QUEUED:
            if job.status is not JobStatus.QUEUED:
                return None  # it ended; its end shows (and is sent) once durable
            position = queue_position(self.table, job) if positions is None else positions.get(job.id)
            queued = {
                "job_id": job.id,
                "status": "queued",
                "queue_position": position,
                "attempts": job.attempts,
            }
            return JobEvent((job.attempts, QUEUED, -(position or 0)), "queued", queued)
        data: dict[str, Any] = {
            "job_id": job.id,
            "status": "processing",
            "worker": job.worker_id,
            "device": job.device,
            "attempts": job.attempts,
            "started_at": job.started_at,
        }
        return JobEvent((max(job.attempts - 1, 0), PROCESSING, 0), "processing", data)

    def _end(self, job: Job) -> JobEvent:
        view = self.view(job)
        return JobEvent((job.attempts, END, 0), view["status"], view)

    def _shutdown(self, job: Job) -> JobEvent:
        detail = "the daemon is shutting down; the job goes on after its restart unless it has ended"
        return JobEvent(None, "shutdown", {"job_id": job.id, "detail": detail})
