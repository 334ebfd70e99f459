"""Opening the journal file, on a worker thread at the scheduler's start: its folder and file made
private (or warned about), the integrity check (read-only: a damaged file is left as it is), then
incremental vacuum, WAL, the schema, and the jobs that had not ended."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable

from scheduler.core.jobs import Job
from scheduler.errors import JournalError
from scheduler.journal.files import check_or_raise, damaged_error, is_damage, make_private
from scheduler.journal.rows import ADDED_COLUMNS, OPEN_SQL, SCHEMA, open_job
from scheduler.journal.upkeep import Upkeep

log = logging.getLogger("modelsched.journal")

MIB = 2**20
CONVERT_MAX_BYTES = 256 * MIB  # an older journal without incremental vacuum is converted up to this size


def prepare(
    path: str, connect: Callable[[], sqlite3.Connection], max_bytes: int, checked: bool
) -> tuple[list[Job], Upkeep]:
    """Open (or create) the journal at `path`: the jobs that had not ended, oldest first, and the
    writer's `Upkeep` with the pages in use measured. `checked`: the integrity check passed already."""
    make_private(path)
    if not checked:
        check_or_raise(path)
    connection = connect()
    try:
        incremental = incremental_vacuum(connection, path)
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(f"journal {path!r}: SQLite refused WAL mode (got {mode!r})")
        connection.executescript(SCHEMA)
        have = {row[1] for row in connection.execute("PRAGMA table_info(jobs)")}
        for column, kind in ADDED_COLUMNS.items():
            if column not in have:  # a journal of an older version
                connection.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        jobs = [open_job(row) for row in connection.execute(OPEN_SQL)]
        upkeep = Upkeep(max_bytes, incremental)
        upkeep.measure(connection)
    except sqlite3.Error as exc:
        if is_damage(exc):
            raise damaged_error(path, str(exc)) from exc
        raise JournalError(f"journal {path!r} cannot be opened: {exc}") from exc
    finally:
        connection.close()
    return jobs, upkeep


def incremental_vacuum(connection: sqlite3.Connection, path: str) -> bool:
    """A new journal is made with `auto_vacuum=INCREMENTAL` (pages freed by pruning can go back to the
    file system); an older one is converted (`VACUUM`) up to `CONVERT_MAX_BYTES`, a larger one is left
    as it is, with a note saying how to convert it."""
    if connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
        return True
    connection.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes at once on an empty database
    if connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
        return True
    size = os.path.getsize(path)
    if size > CONVERT_MAX_BYTES:
        log.warning(
            "journal %s (%.0f MiB) was made without incremental vacuum: pruned pages are reused, not "
            "returned to the file system; with the daemon stopped, "
            "`sqlite3 %s 'PRAGMA auto_vacuum=INCREMENTAL; VACUUM'` converts it",
            path,
            size / MIB,
            path,
        )
        return False
    connection.execute("VACUUM")
    log.info("journal %s converted to incremental vacuum (%.1f MiB)", path, size / MIB)
    return True
