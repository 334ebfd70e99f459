"""The job journal: every job in a SQLite file (WAL), so that no acknowledged job is lost to a restart.

Writes are grouped. The event loop hands records to one writer thread (with its own connection) at
most once per loop turn; the writer commits everything waiting in one transaction, then resolves
that group's future on the loop. So a submission waits for one group commit, shared with every other
job submitted meanwhile, and the loop never waits for the disk.

What is written: a job when it is submitted (inputs as msgpack), its `attempts` when a worker died
under it, and its end (status, result as msgpack, error) when it ends; its inputs are dropped then.
A job submitted and ended within one commit (a fast model under load) is written once, as its ended
row; so is an infer's job that ends within `HOLD_S` (its submission is held back until its end:
`scheduler.core.held`). Job ids begin with their creation time in milliseconds, so the id index
grows at its right edge.
At start the jobs that had not ended are read back, in submission order; ended jobs are read one at
a time, by id or idempotency key, when the in-memory table no longer holds them (there may be a
million of them). Between commits the writer keeps the journal under `journal_max_mb` and prunes
jobs past `result_retention_s` (`scheduler.journal.upkeep`).

While commits fail (a full disk, an I/O error, a lock held too long), `problem()` says why: readiness
answers 503 and submissions are refused; the writer tries a small probe commit every `PROBE_S`
(`writer.py`) and the journal takes jobs again once one succeeds. At open, the file is made private (or
warned about) and checked (`scheduler.journal.files`). The table, its statements and the job/row
conversions are in `scheduler.journal.rows`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from scheduler.core.held import HeldReleases, HeldSubmissions
from scheduler.core.jobs import ENDED, Job
from scheduler.core.ports import JournalStatus
from scheduler.errors import JournalError
from scheduler.journal.files import check_or_raise, size_on_disk
from scheduler.journal.opening import MIB, prepare
from scheduler.journal.rows import (
    ATTEMPTS,
    END_KINDS,
    ENDED_COLUMNS,
    ROW_OF,
    STAGE,
    SUBMIT,
    end_record,
    ended_job,
    page_query,
    stage_params,
    submit_params,
)
from scheduler.journal.upkeep import Upkeep
from scheduler.journal.writer import Group, Prune, Writer

log = logging.getLogger("modelsched.journal")

NO_JOURNAL = ("", ":memory:")

# sqlite3 (CPython 3.11) binds an int, float, str or bytearray as it is and sends any other value through
# its adapter lookup first: a key tuple built, a registry miss, then `__adapt__` and `__conform__` looked
# up (the first formats an AttributeError it throws away), twice the cost of the binding. A row holds a
# handful of NULLs, so None gets an adapter of its own, one C call that answers None: bound as NULL, as
# before. Blobs are bound as bytearrays (`rows._blob`) for the same reason.
_NONE_TO_NULL: dict[None, None] = {}
sqlite3.register_adapter(type(None), _NONE_TO_NULL.get)
RETRY_ENDS_S = 0.5  # end records of a failed commit are queued again this much later


def journal_enabled(path: str) -> bool:
    return path not in NO_JOURNAL


class SqliteJournal:
    """One SQLite journal (implements `scheduler.core.ports.JobJournal`). Made closed; `open()` at the
    scheduler's start reads what had not ended and starts the writer. Every method but the writer's
    runs on the event loop's thread."""

    def __init__(
        self, path: str, synchronous: str = "NORMAL", retention_s: float = 86_400.0, max_bytes: int = 0
    ) -> None:
        self.path = path
        self.synchronous = synchronous.upper()
        self.retention_s = retention_s
        self.max_bytes = max_bytes
        self.loop: asyncio.AbstractEventLoop | None = None
        self.on_ends_committed: Callable[[list[str]], None] | None = None
        self.last_error: str | None = None
        self.failing: str | None = None  # why the last commit failed; None once one succeeds
        self.upkeep = Upkeep(max_bytes, incremental=False)
        self._checked = False
        self._group: Group | None = None
        self._held = HeldSubmissions()
        self._releases = HeldReleases(self._held, self._write_released)
        self._writer: Writer | None = None
        self._reader: sqlite3.Connection | None = None
        self._lister: sqlite3.Connection | None = None  # the job list's pages, read in a thread
        self._lister_lock = threading.Lock()
        self._closed = True

    # ---- opening -------------------------------------------------------------------------------

    def check_file(self) -> None:
        """The integrity check, read-only (JournalDamagedError, in one line, when the file is damaged);
        `open` runs it unless it passed already. A missing file passes."""
        if not self._checked:
            check_or_raise(self.path)
            self._checked = True

    async def open(self, on_ends_committed: Callable[[list[str]], None] | None = None) -> list[Job]:
        """Open (or create) the file and start the writer; returns the jobs that had not ended, oldest
        first. `on_ends_committed(job_ids)` is called on the loop after each commit that held ends."""
        self.loop = asyncio.get_running_loop()
        self.on_ends_committed = on_ends_committed
        open_jobs = await asyncio.to_thread(self._prepare)
        self._reader = self._connect(check_same_thread=False)
        self.failing = None
        self._writer = Writer(self._connect, self.upkeep, self.loop, self._committed, self._probed)
        await asyncio.to_thread(self._writer.start().wait, 30.0)
        self._closed = False
        return open_jobs

    def _connect(self, check_same_thread: bool = True) -> sqlite3.Connection:
        connection = sqlite3.connect(  # statements kept prepared: the writer's take 70 (`rows.executions`)
            self.path,
            isolation_level=None,
            check_same_thread=check_same_thread,
            timeout=30.0,
            cached_statements=256,
        )
        connection.execute(f"PRAGMA synchronous={self.synchronous}")
        connection.execute("PRAGMA busy_timeout=30000")
        return connection

    def _prepare(self) -> list[Job]:
        jobs, self.upkeep = prepare(self.path, self._connect, self.max_bytes, self._checked)
        self._checked = True
        log.info(
            "journal %s opened (synchronous=%s, %.1f MiB in use, bound %s): %d job(s) had not ended",
            self.path,
            self.synchronous,
            self.upkeep.used_bytes / MIB,
            f"{self.max_bytes / MIB:.1f} MiB" if self.max_bytes else "none",
            len(jobs),
        )
        return jobs

    # ---- recording (on the loop) ---------------------------------------------------------------

    @property
    def commits(self) -> int:
        return self._writer.commits if self._writer is not None else 0

    @property
    def records_written(self) -> int:
        return self._writer.records_written if self._writer is not None else 0

    def _current_group(self) -> Group:
        if self._closed:
            raise JournalError("the journal is closed")
        group = self._group
        if group is None:
            assert self.loop is not None
            group = self._group = Group(self.loop.create_future())
            self.loop.call_soon(self._hand_off_last)
        return group

    def _hand_off_last(self) -> None:
        """Hand the group over after what this loop turn still has to do (its answers sent, the
        dispatch pass): the writer, woken, finds the GIL free then, not held by the turn."""
        assert self.loop is not None
        self.loop.call_soon(self._hand_off)

    def _hand_off(self) -> None:
        group, self._group = self._group, None
        if group is not None and self._writer is not None:
            self._writer.inbox.put(group)

    def record_submitted_nowait(self, job: Job) -> asyncio.Future[None]:
        """Queue the job's submission record; the future is done once it is committed."""
        group = self._current_group()
        if job.status in ENDED:  # it ended before it was recorded (its model is in load back-off)
            kind, params = end_record(job)
            group.records.append((ROW_OF[kind], params))
            return group.future
        group.records.append((SUBMIT, submit_params(job)))
        return group.future

    def record_submitted_held(self, job: Job) -> None:
        """The job's client waits for its end (`infer`): its submission is written with its end, or
        alone if it has not ended `HOLD_S` from now (`scheduler.core.held`)."""
        if job.status in ENDED:  # it ended before it was recorded: written as ended at once
            self.record_submitted_nowait(job)
            return
        if self._closed:
            raise JournalError("the journal is closed")
        assert self.loop is not None
        self._releases.hold(job, self.loop)

    def _write_released(self, jobs: list[Job]) -> None:
        """Held submissions written as submitted (not ended within the hold, or the journal closes)."""
        self._current_group().records.extend((SUBMIT, submit_params(job)) for job in jobs)

    def record_ended(self, job: Job) -> asyncio.Future[None]:
        """Queue the job's end record (fire-and-forget; the future says when it is durable)."""
        group = self._current_group()
        kind, params = end_record(job)
        group.records.append((ROW_OF[kind] if self._held.ended(job.id) else kind, params))
        group.ended_ids.append(job.id)
        return group.future

    def record_attempts(self, job: Job) -> None:
        """A worker died under the job: keep its try count for the next start."""
        self._current_group().records.append((ATTEMPTS, (job.attempts, job.id)))

    def record_stage(self, job: Job) -> None:
        """A pipeline job reached its next stage: its stage, that stage's input, what the stages did."""
        self._current_group().records.append((STAGE, stage_params(job)))

    def prune(self, cutoff_wall: float | None = None) -> None:
        """Delete jobs that ended before `cutoff_wall` (default: now less the retention), in chunks."""
        if not self._closed and self._writer is not None:
            self._writer.inbox.put(
                Prune(time.time() - self.retention_s if cutoff_wall is None else cutoff_wall)
            )

    # ---- whether it takes jobs, and its status (on the loop) -----------------------------------

    def problem(self) -> str | None:
        """Why the journal cannot take jobs now, or None: its commits fail, or it is full."""
        if self.failing is not None:
            return f"the journal cannot commit: {self.failing}"
        if self.upkeep.full:
            return (
                f"the journal is full: {self.upkeep.used_bytes / MIB:.1f} MiB of unfinished jobs, bound "
                f"{self.max_bytes / MIB:.1f} MiB (journal_max_mb); retry when jobs have ended"
            )
        return None

    def check_room(self) -> None:
        """Raises JournalError when the journal cannot take a job now (`problem`)."""
        problem = self.problem()
        if problem is not None:
            raise JournalError(problem)

    def status(self) -> JournalStatus:
        upkeep = self.upkeep
        return JournalStatus(
            path=os.path.abspath(self.path),
            size_mb=round(size_on_disk(self.path) / MIB, 2),
            used_mb=round(upkeep.used_bytes / MIB, 2),
            max_mb=round(self.max_bytes / MIB, 2),
            pruned_for_size=upkeep.pruned_for_size,
            pruned_ended_through=upkeep.pruned_ended_through,
            pruned_for_age=upkeep.pruned_for_age,
            full=upkeep.full,
            problem=self.problem(),
            commits=self.commits,
        )

    # ---- reading ended jobs (on the loop: indexed point reads) ---------------------------------

    def lookup(self, job_id: str) -> Job | None:
        """An ended job still within its retention, or None."""
        return self._read_ended("id = ?", job_id)

    def find_by_key(self, idempotency_key: str) -> Job | None:
        """The ended job submitted with this idempotency key, still within its retention, or None."""
        return self._read_ended("idempotency_key = ?", idempotency_key)

    def _read_ended(self, where: str, value: str) -> Job | None:
        if self._reader is None:
            return None
        try:
            row = self._reader.execute(
                f"SELECT {ENDED_COLUMNS} FROM jobs WHERE {where} AND ended_at IS NOT NULL AND ended_at >= ? "
                "ORDER BY n DESC LIMIT 1",
                (value, time.time() - self.retention_s),
            ).fetchone()
        except sqlite3.Error as exc:
            log.error("journal read failed: %s", exc)
            return None
        return None if row is None else ended_job(row)

    async def page_ended(
        self, before: str | None, since: str | None, status: str | None, model: str | None, limit: int
    ) -> list[Job]:
        """A page of ended jobs, newest id first (`ports.JobJournal.page_ended`). Read in a thread, on a
        connection of its own: a filter may walk many rows of its index, and the loop never waits."""
        if self._closed:
            return []
        sql, params = page_query(before, since, status, model, time.time() - self.retention_s, limit)
        return await asyncio.to_thread(self._read_page, sql, params)

    def _read_page(self, sql: str, params: tuple[object, ...]) -> list[Job]:
        with self._lister_lock:
            try:
                if self._lister is None:
                    self._lister = self._connect(check_same_thread=False)
                rows = self._lister.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                log.error("journal read of a job list page failed: %s", exc)
                return []
        return [ended_job(row) for row in rows]

    # ---- closing -------------------------------------------------------------------------------

    async def close(self) -> None:
        """Commit what is waiting, stop the writer, close both connections."""
        if self._closed:
            return
        held = self._releases.release_all()  # not ended: written as submitted, to run after a restart
        if held:
            self._write_released(held)
        self._hand_off()
        self._closed = True
        if self._writer is not None:
            await asyncio.to_thread(self._writer.stop, 60.0)
        await asyncio.sleep(0)  # let the last groups' callbacks run
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        with self._lister_lock:
            if self._lister is not None:
                self._lister.close()
                self._lister = None
        log.info(
            "journal %s closed after %d commit(s) of %d record(s)",
            self.path,
            self.commits,
            self.records_written,
        )

    # ---- back on the loop ----------------------------------------------------------------------

    def _probed(self, error: str | None) -> None:
        self.failing = error

    def _committed(self, groups: list[Group], error: BaseException | None, wrote: bool) -> None:
        if error is not None:
            self.failing = self.last_error = str(error)
        elif wrote:  # a commit that changed nothing proves nothing about writes
            self.failing = None
        ended_ids: list[str] = []
        for group in groups:
            ended_ids.extend(group.ended_ids)
            if group.future.done():
                continue
            if error is None:
                group.future.set_result(None)
            else:
                group.future.set_exception(JournalError(f"the journal could not record the job: {error}"))
                group.future.exception()  # fire-and-forget callers never look: no "never retrieved" noise
        if error is not None:
            # Not durable: shown as ended it could be run again after a restart. The ends are tried
            # again (the submissions' callers were told of the failure and withdrew their jobs).
            ended = set(ended_ids)  # an end, or an end's row written by `record_ended` (a held submission's)
            ends = [
                record
                for group in groups
                for record in group.records
                if record[0] in END_KINDS and record[1][0] in ended
            ]
            if ends and self.loop is not None:
                self.loop.call_later(RETRY_ENDS_S, self._retry_ends, ends, ended_ids)
            return
        if ended_ids and self.on_ends_committed is not None:
            self.on_ends_committed(ended_ids)

    def _retry_ends(self, ends: list[tuple[int, tuple[Any, ...]]], ended_ids: list[str]) -> None:
        if self._closed:
            log.warning("journal closed with %d end record(s) it could not commit", len(ends))
            return
        group = self._current_group()
        group.records.extend(ends)
        group.ended_ids.extend(ended_ids)
