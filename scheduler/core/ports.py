"""What the core needs from the rooms around it, as protocols: a journal that keeps jobs across
restarts (`scheduler.journal`), a channel to one worker (`scheduler.pool`), and an executor for the
jobs of a model that runs outside the model workers (`scheduler.render`). The core imports none of
those rooms; the composition root (`scheduler.assembly`) hands it their objects."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from scheduler.core.jobs import Job


class JournalStatus(msgspec.Struct):
    """The journal as `GET /system/status` shows it: its file, its size and bound, what was pruned,
    and why it takes no jobs now (None: it does)."""

    path: str
    size_mb: float  # the database and its WAL, on disk
    used_mb: float  # the database's pages in use: what `journal_max_mb` bounds
    max_mb: float  # 0: no bound
    pruned_for_size: int  # ended jobs deleted since the start to stay under the bound, oldest first
    pruned_ended_through: float | None  # jobs that ended by then (wall clock) were pruned for size
    pruned_for_age: int  # ended jobs deleted since the start past `result_retention_s`
    full: bool  # over the bound with only unfinished jobs left: submissions are refused
    problem: str | None  # why submissions are refused and readiness is 503: commits fail, or full
    commits: int


class JobJournal(Protocol):
    """Records jobs durably. Every method runs on the event loop; the `record_*` methods queue a
    record and return the future of the commit that holds it."""

    async def open(self, on_ends_committed: Callable[[list[str]], None]) -> list[Job]:
        """Start; returns the jobs that had not ended, oldest first. `on_ends_committed(job_ids)` is
        called after each commit that made ends durable."""

    async def close(self) -> None:
        """Commit what is waiting, then stop."""

    def record_submitted_nowait(self, job: Job) -> asyncio.Future[None]: ...

    def record_submitted_held(self, job: Job) -> None:
        """The job's client waits for its end and is answered once the end is durable (`infer`): its
        submission may be written with its end, not before (JournalError when the journal is closed)."""

    def record_ended(self, job: Job) -> asyncio.Future[None]: ...

    def record_attempts(self, job: Job) -> None: ...

    def record_stage(self, job: Job) -> None:
        """A pipeline job reached its next stage: keep the stage, its input and what the stages did."""

    def lookup(self, job_id: str) -> Job | None: ...

    def find_by_key(self, idempotency_key: str) -> Job | None: ...

    async def page_ended(
        self, before: str | None, since: str | None, status: str | None, model: str | None, limit: int
    ) -> list[Job]:
        """The newest `limit` ended jobs within their retention, newest first by id: ids below `before`
        and at or above `since` (either None: no bound), of `status` and `model` when given."""

    def prune(self) -> None: ...

    def problem(self) -> str | None:
        """Why the journal cannot take jobs now (its commits fail, or it is full), or None."""

    def check_room(self) -> None:
        """Raises JournalError when the journal cannot take a job now (`problem`)."""

    def status(self) -> JournalStatus: ...


class WorkerChannel(Protocol):
    """The transport to one worker: a child process (`scheduler.pool.child.ChildProcess`) or, for
    the ASYNC scheduler type, a thread (`scheduler.pool.workers.ThreadChannel`)."""

    killable: bool  # a process can be killed; a thread can only be asked to stop

    @property
    def pid(self) -> int | None: ...

    @property
    def exit_code(self) -> int | None: ...

    def send(self, data: bytes) -> None: ...

    def alive(self) -> bool: ...

    def kill(self) -> None: ...

    def join(self, timeout: float) -> None: ...

    def close(self) -> None: ...


class JobExecutor(Protocol):
    """Runs the jobs of one model outside the model workers; they live in the job table like any
    other job. The dispatch pass calls `dispatch()`; admission calls `precheck` and `check_room`."""

    model: str

    async def precheck(self, inputs: Any) -> None:
        """Checks at submission that may do I/O (DNS); raises InvalidInputError."""

    def check_room(self) -> None:
        """Raises QueueFullError when it holds as many jobs as it takes."""

    def dispatch(self) -> None:
        """Takes its model's queued jobs (suspects included) from the table."""

    def status(self) -> dict[str, Any]: ...
