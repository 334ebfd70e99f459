"""The journal's listing indexes (`scheduler.journal.rows`): a page by status other than `completed`
is found through `jobs_ended_unsuccessful`, which holds no completed job (most rows are written
without it); a page of completed jobs walks the id index; a journal made with the index of every
ended job by status loses it at open. Over a real SQLite file; the plans are SQLite's own."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from scheduler.core.admission import new_job_id
from scheduler.core.jobs import Job, JobStatus
from scheduler.journal.opening import prepare
from scheduler.journal.rows import END_ROW_SQL, end_params, page_query

OLD_INDEX = "CREATE INDEX jobs_ended_by_status ON jobs(status, id) WHERE ended_at IS NOT NULL"


def ended_row(status: str, model: str) -> tuple[object, ...]:
    now = time.time()
    ended = Job(
        id=new_job_id(), model=model, inputs=None, status=JobStatus(status), attempts=1, created_at=now,
        started_at=now, ended_at=now, worker_id="w0", device="cpu",
    )  # fmt: skip
    return end_params(ended)


def opened(path: Path) -> sqlite3.Connection:
    prepare(str(path), lambda: sqlite3.connect(str(path), isolation_level=None), 2**30, checked=False)
    return sqlite3.connect(str(path), isolation_level=None)


def indexes(connection: sqlite3.Connection) -> set[str]:
    return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


def plan(connection: sqlite3.Connection, status: str | None, model: str | None = None) -> str:
    sql, params = page_query(None, None, status, model, 0.0, 50)
    return " / ".join(row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params))


def test_pages_by_status_use_the_index_of_unsuccessful_jobs_and_completed_ones_the_ids(
    tmp_path: Path,
) -> None:
    connection = opened(tmp_path / "journal.db")
    rows = [ended_row("error" if n % 50 == 0 else "completed", "echo") for n in range(2_000)]
    connection.executemany(END_ROW_SQL, rows)
    indexed = connection.execute("SELECT count(*) FROM jobs INDEXED BY jobs_ended_unsuccessful WHERE status = 'error' AND ended_at IS NOT NULL AND status <> 'completed'").fetchone()[0]  # fmt: skip
    assert indexed == 40
    assert "jobs_ended_unsuccessful" in plan(connection, "error")
    assert "jobs_ended_unsuccessful" in plan(connection, "cancelled", "echo")
    assert "jobs_ended_by_model" in plan(connection, "completed", "echo")
    completed = plan(connection, "completed")
    assert "jobs_ended_unsuccessful" not in completed and "sqlite_autoindex_jobs" in completed
    for status, expected in (("error", 40), ("completed", 1_960)):
        sql, params = page_query(None, None, status, None, 0.0, 5_000)
        assert len(connection.execute(sql, params).fetchall()) == expected


def test_an_older_journal_loses_the_index_of_every_ended_job_by_status(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    connection = opened(path)
    connection.execute("DROP INDEX jobs_ended_unsuccessful")
    connection.execute(OLD_INDEX)  # as a journal of an earlier version has it
    connection.executemany(END_ROW_SQL, [ended_row("error", "echo"), ended_row("completed", "echo")])
    connection.close()
    connection = opened(path)
    assert "jobs_ended_by_status" not in indexes(connection)
    assert {"jobs_ended_unsuccessful", "jobs_ended_by_model"} <= indexes(connection)
    sql, params = page_query(None, None, "error", None, 0.0, 50)
    assert len(connection.execute(sql, params).fetchall()) == 1
