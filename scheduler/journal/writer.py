"""The journal's writer thread. It has its own connection; it takes every group of records waiting
(the loop hands one over per loop turn) and commits them in one transaction, then tells the loop
(`on_committed`: the groups' futures, the ends made durable). Between commits it runs the journal's
upkeep (`scheduler.journal.upkeep`: the size bound, the retention, free pages). While commits fail it
tries a small probe commit every `PROBE_S` and tells the loop how that went (`on_probed`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from itertools import groupby
from operator import itemgetter
from typing import Any

from scheduler.journal.rows import PROBE_SQL, executions, statements
from scheduler.journal.upkeep import WAL_SIZE_LIMIT, Upkeep

_KIND, _PARAMS = itemgetter(0), itemgetter(1)  # of a record (kind, params)

log = logging.getLogger("modelsched.journal")

PROBE_S = 0.5  # while commits fail, a probe commit this often


class Group:
    """Records handed to the writer in one loop turn, and the future resolved when they are committed."""

    __slots__ = ("records", "future", "ended_ids")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.records: list[tuple[int, tuple[Any, ...]]] = []
        self.future = future
        self.ended_ids: list[str] = []


class Prune:
    """Prune jobs that ended before `cutoff` (wall clock)."""

    __slots__ = ("cutoff",)

    def __init__(self, cutoff: float) -> None:
        self.cutoff = cutoff


STOP = object()


class Writer:
    """connect: opens the writer's connection; upkeep: its work between commits; loop: where
    `on_committed(groups, error, wrote)` and `on_probed(error)` are called."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        upkeep: Upkeep,
        loop: asyncio.AbstractEventLoop,
        on_committed: Callable[[list[Group], BaseException | None, bool], None],
        on_probed: Callable[[str | None], None],
    ) -> None:
        self.connect = connect
        self.upkeep = upkeep
        self.loop = loop
        self.on_committed = on_committed
        self.on_probed = on_probed
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.commits = 0
        self.records_written = 0
        self._thread: threading.Thread | None = None

    def start(self) -> threading.Event:
        """Start the thread; the event is set once its connection is open."""
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._main, args=(ready,), name="modelsched-journal", daemon=True
        )
        self._thread.start()
        return ready

    def stop(self, timeout: float) -> None:
        """Commit what is waiting, then end the thread (blocks: call it off the loop)."""
        self.inbox.put(STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    def _main(self, ready: threading.Event) -> None:
        connection = self.connect()
        connection.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        ready.set()
        upkeep = self.upkeep
        failing = False  # the last commit (or probe) failed
        probe_at = 0.0
        try:
            while True:
                now = time.monotonic()
                wait = upkeep.wait_s(now)
                if failing:
                    wait = max(0.0, probe_at - now) if wait is None else min(wait, max(0.0, probe_at - now))
                try:  # block while there is nothing to do: an idle journal costs no CPU
                    item = self.inbox.get(timeout=wait)  # None: until records come; 0: at once
                except queue.Empty:
                    if failing and time.monotonic() >= probe_at:
                        failing = not self.probe(connection)
                        probe_at = time.monotonic() + PROBE_S
                    upkeep.step(connection)
                    continue
                groups: list[Group] = []
                stop = False
                while True:
                    if item is STOP:
                        stop = True
                    elif isinstance(item, Prune):
                        upkeep.age_cutoff = item.cutoff
                    else:
                        groups.append(item)
                    try:
                        item = self.inbox.get_nowait()
                    except queue.Empty:
                        break
                if groups:
                    written = self.commit(connection, groups)
                    if written is False and not failing:
                        probe_at = time.monotonic() + PROBE_S
                    failing = written is False or (failing and written is None)
                if stop:
                    return
                if upkeep.wait_s(time.monotonic()) == 0:
                    upkeep.step(connection)  # one step a commit: the upkeep goes on under load too
        finally:
            connection.close()

    def commit(self, connection: sqlite3.Connection, groups: list[Group]) -> bool | None:
        """Commit the groups' records in one transaction; tell the loop. True when it wrote rows,
        False when it failed, None when it changed nothing (an end of a job whose submission failed
        to commit): that says nothing of whether writes succeed."""
        error: BaseException | None = None
        count = sum(len(group.records) for group in groups)
        changes = connection.total_changes
        try:
            records = statements([record for group in groups for record in group.records])
            runs = [  # consecutive records of one kind: together
                execution
                for kind, run in groupby(records, key=_KIND)
                for execution in executions(kind, list(map(_PARAMS, run)))
            ]
            if len(runs) == 1 and not runs[0][2]:  # one statement: its own transaction
                connection.execute(runs[0][0], runs[0][1])
            else:
                connection.execute("BEGIN")
                for sql, params, many in runs:
                    if many:
                        connection.executemany(sql, params)
                    else:
                        connection.execute(sql, params)
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
            with contextlib.suppress(sqlite3.Error):
                self.upkeep.committed(connection, any(group.ended_ids for group in groups))
        wrote = error is None and connection.total_changes > changes
        self._tell_loop(self.on_committed, groups, error, wrote)
        if error is not None:
            return False
        return True if wrote else None

    def probe(self, connection: sqlite3.Connection) -> bool:
        """While commits fail: one small commit of its own. True when it succeeded."""
        try:
            connection.execute(PROBE_SQL, (time.time(),))
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
            self._tell_loop(self.on_probed, str(exc))
            return False
        log.warning("journal: commits succeed again")
        self._tell_loop(self.on_probed, None)
        return True

    def _tell_loop(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self.loop.call_soon_threadsafe(callback, *args)
