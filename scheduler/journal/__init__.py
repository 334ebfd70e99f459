"""The journal: every job kept in a file so that none is lost to a restart. `SqliteJournal` (the
single-host default) implements the core's `JobJournal`: a writer thread with grouped commits
(`sqlite`), the table and its statements (`rows`), and the recovery of unfinished jobs at start
(`recovery`)."""

from scheduler.journal.sqlite import SqliteJournal, journal_enabled

__all__ = ["SqliteJournal", "journal_enabled"]
