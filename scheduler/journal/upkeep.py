"""What the journal's writer thread does between commits: keep the journal under its size bound
(`journal_max_mb`), prune jobs past their retention, and return free pages to the file system.

- The bound counts the database's pages in use (page count less free pages, read from its header:
  microseconds, at most every `MEASURE_EVERY_S`). Past it, the oldest ended jobs (by their end) are
  deleted, a chunk a step, down to `LOW_WATER` of the bound; a queued or running job is never
  deleted. A page is freed once every job on it is deleted, so when jobs end far from their
  submission order more jobs go than the excess alone would want. The WAL beside the database is bounded apart, by SQLite's checkpoints and
  `WAL_SIZE_LIMIT`.
- When nothing ended is left to delete and the pages in use are over the bound, the journal is
  `full`: submissions are refused (REST 503 with Retry-After) until jobs end and can be pruned.
- Pages freed by pruning go back to the file system with `incremental_vacuum` (the database is made
  with `auto_vacuum=INCREMENTAL`), a chunk a step, then a passive checkpoint shrinks the file.

Each step is one short statement of its own, so a commit never waits long behind one: the writer
runs one step after each commit and steps on while no records wait. A step that fails (a full disk)
is retried after `RETRY_S`.
"""

from __future__ import annotations

import logging
import sqlite3
import time

log = logging.getLogger("modelsched.journal")

LOW_WATER = 0.9  # pruning for size goes down to this share of the bound
FIRST_CHUNK = 256  # ended jobs deleted by the first step past the bound; then as many as the pages
MIN_CHUNK = 16  # freed a job say are needed, twice as many when no page was freed
MAX_CHUNK = 16_384
AGE_CHUNK = 5_000  # jobs past their retention deleted a step
VACUUM_PAGES = 2_000  # pages returned to the file system a step
MEASURE_EVERY_S = 0.05
RETRY_S = 1.0
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # a WAL grown larger (a long backup held checkpoints back) is cut back

MEASURE_SQL = "SELECT * FROM pragma_page_count(), pragma_freelist_count()"
NTH_OLDEST_ENDED_SQL = (
    "SELECT ended_at FROM jobs WHERE ended_at IS NOT NULL ORDER BY ended_at LIMIT 1 OFFSET ?"
)
NEWEST_ENDED_SQL = "SELECT MAX(ended_at) FROM jobs WHERE ended_at IS NOT NULL"
PRUNE_ENDED_THROUGH_SQL = "DELETE FROM jobs WHERE ended_at IS NOT NULL AND ended_at <= ?"
PRUNE_AGE_SQL = """
DELETE FROM jobs WHERE n IN (
    SELECT n FROM jobs WHERE ended_at IS NOT NULL AND ended_at < ? ORDER BY ended_at LIMIT ?)
"""


class Upkeep:
    """The writer thread's work between commits (its attributes are read, not written, elsewhere).

    max_bytes: the bound on the pages in use (0: none); incremental: the database returns free pages
    (`auto_vacuum=INCREMENTAL`)."""

    def __init__(self, max_bytes: int, incremental: bool) -> None:
        self.max_bytes = max_bytes
        self.low_water = int(max_bytes * LOW_WATER)
        self.incremental = incremental
        self.used_bytes = 0
        self.free_pages = 0
        self.pruned_for_size = 0
        self.pruned_for_age = 0
        self.pruned_ended_through: float | None = None  # jobs that ended by then were pruned for size
        self.age_cutoff: float | None = None
        self._page_size = 0
        self._over = False  # past the bound, and not yet back down to the low water
        self._exhausted = False  # over, and nothing ended was left to prune
        self._ended_since = False  # jobs ended since: there may be something to prune again
        self._chunk = FIRST_CHUNK
        self._vacuum = False
        self._measured_at = 0.0
        self._unmeasured = False  # commits came since the last measure
        self._retry_at = 0.0

    @property
    def full(self) -> bool:
        """Over the bound with only unfinished jobs left: no submission fits."""
        return self._exhausted and self.used_bytes > self.max_bytes

    def measure(self, connection: sqlite3.Connection) -> None:
        if not self._page_size:
            self._page_size = int(connection.execute("PRAGMA page_size").fetchone()[0])
        pages, free = connection.execute(MEASURE_SQL).fetchone()  # one step: the GIL let go once
        self.free_pages = int(free)
        self.used_bytes = (int(pages) - self.free_pages) * self._page_size
        self._measured_at = time.monotonic()
        self._unmeasured = False
        if not self.max_bytes:
            return
        if self.used_bytes > self.max_bytes:
            self._over = True
        elif self.used_bytes <= self.low_water:
            if self._exhausted:
                log.info("journal: back under its bound; submissions are accepted again")
            self._over = self._exhausted = False
            self._chunk = FIRST_CHUNK

    def committed(self, connection: sqlite3.Connection, ended: bool) -> None:
        """After a commit (`ended`: it held ends, which may be pruned)."""
        if ended:
            self._ended_since = True
        if time.monotonic() - self._measured_at >= MEASURE_EVERY_S:
            self.measure(connection)
        else:
            self._unmeasured = True  # measured by a step a little later

    def wait_s(self, now: float) -> float | None:
        """How long the writer may wait for records before its next step: 0 when one is due, the
        time to the retry after a failed step or to the next measure, None when there is nothing to do."""
        if self._prune_due() or self.age_cutoff is not None or self._vacuum_due():
            return max(0.0, self._retry_at - now)
        if self._unmeasured:
            return max(0.0, self._measured_at + MEASURE_EVERY_S - now)
        return None

    def _prune_due(self) -> bool:
        return self._over and (not self._exhausted or self._ended_since)

    def _vacuum_due(self) -> bool:
        return self._vacuum and self.incremental

    def step(self, connection: sqlite3.Connection) -> None:
        """One step of what is due: pruning for size first, then for age, then returning pages, then
        a measure that commits made due."""
        now = time.monotonic()
        if now < self._retry_at:
            return
        try:
            if self._prune_due():
                self._prune_for_size(connection)
            elif self.age_cutoff is not None:
                self._prune_for_age(connection, self.age_cutoff)
            elif self._vacuum_due():
                self._return_pages(connection)
            elif self._unmeasured and now - self._measured_at >= MEASURE_EVERY_S:
                self.measure(connection)
        except sqlite3.Error as exc:
            log.error("journal upkeep failed (retried in %.0f s): %s", RETRY_S, exc)
            self._retry_at = time.monotonic() + RETRY_S
            if connection.in_transaction:
                connection.execute("ROLLBACK")

    def _prune_for_size(self, connection: sqlite3.Connection) -> None:
        self._ended_since = False
        row = connection.execute(NTH_OLDEST_ENDED_SQL, (self._chunk - 1,)).fetchone()
        through = row[0] if row is not None else connection.execute(NEWEST_ENDED_SQL).fetchone()[0]
        if through is None:
            if not self._exhausted:
                log.warning(
                    "journal: %.1f MiB in use, bound %.1f MiB, and every job in it is unfinished: "
                    "submissions are refused until jobs end",
                    self.used_bytes / 2**20,
                    self.max_bytes / 2**20,
                )
            self._exhausted = True
            return
        self.measure(connection)
        before = self.used_bytes
        deleted = connection.execute(PRUNE_ENDED_THROUGH_SQL, (through,)).rowcount
        self._exhausted = False
        self.pruned_for_size += deleted
        self.pruned_ended_through = max(through, self.pruned_ended_through or through)
        self._vacuum = True
        log.debug("journal: pruned %d ended job(s) to stay under its bound", deleted)
        self.measure(connection)
        freed = before - self.used_bytes
        if self._over:  # the next chunk: what this one freed a job, else twice as many
            wanted = (
                (self.used_bytes - self.low_water) * deleted // freed + 1 if freed > 0 else 2 * self._chunk
            )
            self._chunk = max(MIN_CHUNK, min(wanted, MAX_CHUNK))

    def _prune_for_age(self, connection: sqlite3.Connection, cutoff: float) -> None:
        deleted = connection.execute(PRUNE_AGE_SQL, (cutoff, AGE_CHUNK)).rowcount
        self.pruned_for_age += deleted
        if deleted:
            self._vacuum = True
            log.debug("journal: pruned %d job(s) that ended before %.0f", deleted, cutoff)
        if deleted < AGE_CHUNK:
            self.age_cutoff = None
            self.measure(connection)

    def _return_pages(self, connection: sqlite3.Connection) -> None:
        # executescript steps the pragma to its end (execute would free one page only)
        before = self.free_pages
        connection.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES})")
        self.measure(connection)
        if self.free_pages == 0 or self.free_pages >= before:
            self._vacuum = False
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()  # the file shrinks now
