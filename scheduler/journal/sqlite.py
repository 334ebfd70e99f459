"""The job journal: every job in a SQLite file (WAL), so that no acknowledged job is lost to a restart.

Writes are grouped. The event loop hands records to one writer thread (with its own connection) at
most once per loop turn; the writer commits everything waiting in one transaction, then resolves
that group's future on the loop. So a submission waits for one group commit, shared with every other
job submitted meanwhile, and the loop never waits for the disk.

What is written: a job when it is submitted (inputs as msgpack), its `attempts` when a worker died
under it, and its end (status, result as msgpack, error) when it ends; its inputs are dropped then.
A job submitted and ended within one commit (a fast model under load) is written once, as its ended
row. Job ids begin with their creation time in milliseconds, so the id index grows at its right edge.
At start the jobs that had not ended are read back, in submission order; ended jobs are read one at
a time, by id or idempotency key, when the in-memory table no longer holds them (there may be a
million of them). Rows of jobs that ended more than `result_retention_s` ago are deleted in chunks.
The table, its statements and the job/row conversions are in `scheduler.journal.rows`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scheduler.core.jobs import ENDED, Job
from scheduler.errors import JournalError
from scheduler.journal.rows import (
    ADDED_COLUMNS,
    ATTEMPTS,
    END,
    END_ROW,
    ENDED_COLUMNS,
    OPEN_SQL,
    PRUNE_SQL,
    SCHEMA,
    SQL_BY_KIND,
    STAGE,
    SUBMIT,
    end_params,
    ended_job,
    open_job,
    stage_params,
    statements,
    submit_params,
)

log = logging.getLogger("modelsched.journal")

NO_JOURNAL = ("", ":memory:")
PRUNE_CHUNK_ROWS = 5_000


def journal_enabled(path: str) -> bool:
    return path not in NO_JOURNAL


class _Group:
    """Records handed to the writer in one loop turn, and the future resolved when they are committed."""

    __slots__ = ("records", "future", "ended_ids")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.records: list[tuple[int, tuple[Any, ...]]] = []
        self.future = future
        self.ended_ids: list[str] = []


class _Prune:
    __slots__ = ("cutoff",)

    def __init__(self, cutoff: float) -> None:
        self.cutoff = cutoff


_STOP = object()


class SqliteJournal:
    """One SQLite journal (implements `scheduler.core.ports.JobJournal`). Made closed; `open()` at the
    scheduler's start reads what had not ended and starts the writer. Every method but the writer's
    runs on the event loop's thread."""

    def __init__(self, path: str, synchronous: str = "NORMAL", retention_s: float = 86_400.0) -> None:
        self.path = path
        self.synchronous = synchronous.upper()
        self.retention_s = retention_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self.on_ends_committed: Callable[[list[str]], None] | None = None
        self.commits = 0
        self.records_written = 0
        self.last_error: str | None = None
        self._group: _Group | None = None
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._closed = True

    # ---- opening -------------------------------------------------------------------------------

    async def open(self, on_ends_committed: Callable[[list[str]], None] | None = None) -> list[Job]:
        """Open (or create) the file and start the writer; returns the jobs that had not ended, oldest
        first. `on_ends_committed(job_ids)` is called on the loop after each commit that held ends."""
        self.loop = asyncio.get_running_loop()
        self.on_ends_committed = on_ends_committed
        open_jobs = await asyncio.to_thread(self._prepare)
        self._reader = self._connect(check_same_thread=False)
        self._inbox = queue.SimpleQueue()
        ready = threading.Event()
        self._writer = threading.Thread(
            target=self._writer_main, args=(ready,), name="modelsched-journal", daemon=True
        )
        self._writer.start()
        await asyncio.to_thread(ready.wait, 30.0)
        self._closed = False
        return open_jobs

    def _connect(self, check_same_thread: bool = True) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=check_same_thread, timeout=30.0
        )
        connection.execute(f"PRAGMA synchronous={self.synchronous}")
        connection.execute("PRAGMA busy_timeout=30000")
        return connection

    def _prepare(self) -> list[Job]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        connection = self._connect()
        try:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise JournalError(f"journal {self.path!r}: SQLite refused WAL mode (got {mode!r})")
            connection.executescript(SCHEMA)
            have = {row[1] for row in connection.execute("PRAGMA table_info(jobs)")}
            for column, kind in ADDED_COLUMNS.items():
                if column not in have:  # a journal of an older version
                    connection.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
            jobs = [open_job(row) for row in connection.execute(OPEN_SQL)]
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path!r} cannot be opened: {exc}") from exc
        finally:
            connection.close()
        log.info(
            "journal %s opened (synchronous=%s): %d job(s) had not ended",
            self.path,
            self.synchronous,
            len(jobs),
        )
        return jobs

    # ---- recording (on the loop) ---------------------------------------------------------------

    def _current_group(self) -> _Group:
        if self._closed:
            raise JournalError("the journal is closed")
        group = self._group
        if group is None:
            assert self.loop is not None
            group = self._group = _Group(self.loop.create_future())
            self.loop.call_soon(self._hand_off)
        return group

    def _hand_off(self) -> None:
        group, self._group = self._group, None
        if group is not None:
            self._inbox.put(group)

    def record_submitted_nowait(self, job: Job) -> asyncio.Future[None]:
        """Queue the job's submission record; the future is done once it is committed."""
        group = self._current_group()
        if job.status in ENDED:  # it ended before it was recorded (its model is in load back-off)
            group.records.append((END_ROW, end_params(job)))
            return group.future
        group.records.append((SUBMIT, submit_params(job)))
        return group.future

    def record_ended(self, job: Job) -> asyncio.Future[None]:
        """Queue the job's end record (fire-and-forget; the future says when it is durable)."""
        group = self._current_group()
        group.records.append((END, end_params(job)))
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
        if not self._closed:
            self._inbox.put(_Prune(time.time() - self.retention_s if cutoff_wall is None else cutoff_wall))

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

    # ---- closing -------------------------------------------------------------------------------

    async def close(self) -> None:
        """Commit what is waiting, stop the writer, close both connections."""
        if self._closed:
            return
        self._hand_off()
        self._closed = True
        self._inbox.put(_STOP)
        if self._writer is not None:
            await asyncio.to_thread(self._writer.join, 60.0)
            self._writer = None
        await asyncio.sleep(0)  # let the last groups' callbacks run
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        log.info(
            "journal %s closed after %d commit(s) of %d record(s)",
            self.path,
            self.commits,
            self.records_written,
        )

    # ---- the writer thread ---------------------------------------------------------------------

    def _writer_main(self, ready: threading.Event) -> None:
        connection = self._connect()
        ready.set()
        prune_cutoff: float | None = None
        try:
            while True:
                if prune_cutoff is not None and self._inbox.empty():
                    if self._prune_chunk(connection, prune_cutoff) < PRUNE_CHUNK_ROWS:
                        prune_cutoff = None
                    continue
                item = self._inbox.get()
                groups: list[_Group] = []
                stop = False
                while True:
                    if item is _STOP:
                        stop = True
                    elif isinstance(item, _Prune):
                        prune_cutoff = item.cutoff
                    else:
                        groups.append(item)
                    try:
                        item = self._inbox.get_nowait()
                    except queue.Empty:
                        break
                if groups:
                    self._commit(connection, groups)
                if stop:
                    return
        finally:
            connection.close()

    def _commit(self, connection: sqlite3.Connection, groups: list[_Group]) -> None:
        error: BaseException | None = None
        count = sum(len(group.records) for group in groups)
        try:
            records = statements([record for group in groups for record in group.records])
            connection.execute("BEGIN")
            start = 0
            while start < len(records):  # consecutive records of one kind go in one executemany
                kind = records[start][0]
                end = start + 1
                while end < len(records) and records[end][0] == kind:
                    end += 1
                connection.executemany(SQL_BY_KIND[kind], [params for _, params in records[start:end]])
                start = end
            connection.execute("COMMIT")
        except Exception as exc:  # not only sqlite3.Error: whatever it is, the waiting submitters hear of it
            error = exc
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            log.error(
                "journal commit of %d record(s) failed: %s",
                count,
                exc,
                exc_info=not isinstance(exc, sqlite3.Error),
            )
        else:
            self.commits += 1
            self.records_written += count
        with contextlib.suppress(
            RuntimeError, AttributeError
        ):  # the loop is closed: nobody is waiting any more
            assert self.loop is not None
            self.loop.call_soon_threadsafe(self._committed, groups, error)

    def _prune_chunk(self, connection: sqlite3.Connection, cutoff: float) -> int:
        try:
            deleted = connection.execute(PRUNE_SQL, (cutoff, PRUNE_CHUNK_ROWS)).rowcount
        except sqlite3.Error as exc:
            log.error("journal prune failed: %s", exc)
            return 0
        if deleted:
            log.debug("journal: pruned %d job(s) that ended before %.0f", deleted, cutoff)
        return deleted

    # ---- back on the loop ----------------------------------------------------------------------

    def _committed(self, groups: list[_Group], error: BaseException | None) -> None:
        if error is not None:
            self.last_error = str(error)
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
        if ended_ids and self.on_ends_committed is not None:
            self.on_ends_committed(ended_ids)
