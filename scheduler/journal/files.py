"""The journal as files an operator owns: every job's inputs and results are in them.

- Modes: before SQLite opens a new journal, its folder (when missing) is made 0700 and the database
  an empty 0600 file, whatever the umask; SQLite gives its -wal and -shm files the database's mode.
  An existing journal is left as it is, with a warning when other users may read it.
- Integrity: `check` runs SQLite's `quick_check` over a read-only connection (`immutable` when no
  WAL file is beside it, so not even a -wal or -shm file is created): a damaged journal is never
  written to, and `damaged_error` says in one line what to do.
- Backup: `backup` copies a journal, a running daemon's too, with SQLite's online backup: every page
  in one step, inside one read transaction, so the copy is one consistent snapshot, made 0600 and
  checked before it takes its name (which it never takes from an existing file).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from scheduler.errors import JournalDamagedError, JournalError

log = logging.getLogger("modelsched.journal")

FOLDER_MODE = 0o700
FILE_MODE = 0o600
SIDE_SUFFIXES = ("-wal", "-shm")
QUICK_CHECK_MAX_ERRORS = 100


def make_private(path: str) -> None:
    """Before the first connection: a missing folder is made 0700, a missing database an empty 0600
    file (SQLite takes an empty file for a new database). An existing one is warned about when it is
    open to other users."""
    folder = Path(path).parent
    with contextlib.suppress(FileExistsError):
        folder.mkdir(parents=True)
        os.chmod(folder, FOLDER_MODE)  # mkdir's mode is filtered by the umask; chmod is not
    if not create_private_file(path):
        warn_if_exposed(path)


def create_private_file(path: str) -> bool:
    """Create `path` empty with mode 0600 whatever the umask; False when it exists already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return True


def exposed_files(path: str) -> list[str]:
    """The journal's files (database, -wal, -shm) that users other than their owner may open, each
    with its mode as `ls -l` shows it."""
    found = []
    for name in (path, *(path + suffix for suffix in SIDE_SUFFIXES)):
        try:
            mode = os.stat(name).st_mode
        except FileNotFoundError:
            continue
        if mode & 0o077:
            found.append(f"{name} ({stat.filemode(mode)})")
    return found


def size_on_disk(path: str) -> int:
    """The database and its WAL, in bytes."""
    size = 0
    for name in (path, path + "-wal"):
        with contextlib.suppress(OSError):
            size += os.path.getsize(name)
    return size


def warn_if_exposed(path: str) -> None:
    exposed = exposed_files(path)
    if exposed:
        log.warning(
            "journal %s: other users may read every job's inputs and results in %s; "
            "to keep it to its owner: chmod 600 %s*; chmod 700 %s",
            path,
            ", ".join(exposed),
            path,
            Path(path).parent,
        )


# ---- integrity -----------------------------------------------------------------------------------


def read_only_uri(path: str) -> str:
    """A URI that opens `path` read-only: `immutable` when no -wal file is beside it (no connection
    has it open: SQLite then creates no file at all), else `mode=ro` (the WAL is read too)."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    return uri if os.path.exists(path + "-wal") else uri + "&immutable=1"


def is_damage(exc: sqlite3.Error) -> bool:
    """SQLite says the file is not a database, or a damaged one."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))


def check(path: str) -> str | None:
    """SQLite's `quick_check` of the journal at `path`, read-only: None when it passes, else the first
    problem found, in one line. JournalError when the file cannot be read at all (missing, no access)."""
    try:
        connection = sqlite3.connect(read_only_uri(path), uri=True)
    except sqlite3.Error as exc:
        raise JournalError(f"journal {path} cannot be opened: {exc}") from exc
    try:
        rows = connection.execute(f"PRAGMA quick_check({QUICK_CHECK_MAX_ERRORS})").fetchall()
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            return str(exc)
        raise JournalError(f"journal {path} cannot be checked: {exc}") from exc
    finally:
        connection.close()
    problems = [
        line.strip()
        for (row,) in rows
        for line in str(row).splitlines()
        if line.strip() and not line.startswith("***")
    ]
    if problems == ["ok"]:
        return None
    more = f" and {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
    return f"{problems[0]}{more}"


def damaged_error(path: str, problem: str) -> JournalDamagedError:
    """The one line an operator reads when the daemon refuses a damaged journal."""
    return JournalDamagedError(
        f"the journal {path} is damaged ({problem}); it was left as it is. To recover, move it and its "
        f"-wal and -shm files aside, then put a backup in its place (`modelsched journal backup` makes "
        f"one) or start with none (an empty journal); `sqlite3 FILE .recover` salvages what it can"
    )


def check_or_raise(path: str) -> None:
    """`check`, raising the `damaged_error` when the journal is damaged; a missing file passes."""
    if not os.path.exists(path):
        return
    problem = check(path)
    if problem is not None:
        raise damaged_error(path, problem)


# ---- backup --------------------------------------------------------------------------------------


@dataclass
class Summary:
    """What a journal file holds."""

    jobs: int
    unfinished: int
    size_bytes: int


def summarize(connection: sqlite3.Connection, path: str) -> Summary:
    jobs, unfinished = connection.execute("SELECT COUNT(*), COUNT(*) - COUNT(ended_at) FROM jobs").fetchone()
    return Summary(int(jobs), int(unfinished), os.path.getsize(path))


def summary_of(path: str) -> Summary:
    """Jobs and unfinished jobs in a journal that passed its check (read-only)."""
    connection = sqlite3.connect(read_only_uri(path), uri=True)
    try:
        return summarize(connection, path)
    finally:
        connection.close()


def backup(source: str, destination: str) -> Summary:
    """Copy the journal at `source` (a running daemon's too: it is not stopped, nor held up beyond
    SQLite's read lock) to `destination`, which must not exist. The copy holds every job committed
    before the backup began; it is one self-contained file, mode 0600, checked before it is named."""
    if not os.path.exists(source):
        raise JournalError(f"no journal at {source}")
    if os.path.lexists(destination):
        raise JournalError(f"{destination} exists already; a backup never replaces a file")
    if not Path(destination).parent.is_dir():
        raise JournalError(f"the folder of {destination} does not exist")
    partial = f"{destination}.partial-{os.getpid()}"
    if not create_private_file(partial):
        raise JournalError(f"{partial} exists already (another backup under way?)")
    try:
        summary = _copy(source, partial)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.link(partial, destination)  # unlike a rename, never replaces a file that appeared meanwhile
        folder = os.open(Path(destination).parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        return summary
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


def _copy(source: str, partial: str) -> Summary:
    reader = sqlite3.connect("file:" + urllib.parse.quote(os.path.abspath(source)) + "?mode=ro", uri=True)
    copy = sqlite3.connect(partial, isolation_level=None)
    try:
        reader.backup(copy)  # pages=-1: one step, so one read transaction, so one consistent snapshot
        copy.execute("PRAGMA journal_mode=DELETE")  # no -wal beside the copy: one file to keep
        problem = copy.execute("PRAGMA quick_check").fetchone()[0]
        if problem != "ok":
            raise JournalError(f"the copy of {source} fails its check ({problem}); is {source} damaged?")
        return summarize(copy, partial)
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            raise damaged_error(source, str(exc)) from exc
        raise JournalError(f"backup of {source} failed: {exc}") from exc
    finally:
        copy.close()
        reader.close()
