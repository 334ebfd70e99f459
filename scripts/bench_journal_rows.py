"""The journal writer's CPU per job, by how a job is written: as one row (`END_ROW_SQL`, a submission
and its end in one commit, or an infer's held submission) or as two statements in two commits (the
submission's insert, later its end's update). The journal's own schema and statements, on a fresh
file in a temporary folder; batches of `--batch` jobs a commit, as the group commit makes them.

    .venv/bin/python scripts/bench_journal_rows.py                 # batches of 10 and 50
    .venv/bin/python scripts/bench_journal_rows.py --batch 5 --jobs 50000
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import msgspec

from scheduler.journal.rows import END_ROW_SQL, END_UPDATE_SQL, SCHEMA, SUBMIT_SQL

ENCODE = msgspec.msgpack.Encoder().encode


def connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.executescript(SCHEMA)
    return connection


def cpu_us_per_job(one_row: bool, jobs: int, batch: int) -> float:
    now = time.time()
    blob = ENCODE({"x": [1.0, 2.0]})

    def job_id(n: int) -> str:
        return f"{int(now * 1000) + n:012x}{n:020x}"

    with tempfile.TemporaryDirectory(prefix="modelsched-rows-") as folder:
        connection = connect(Path(folder) / "journal.db")
        started = time.process_time()
        for first in range(0, jobs, batch):
            numbers = range(first, min(jobs, first + batch))
            if one_row:
                rows = [
                    (job_id(n), "echo", 1, None, now, "completed", 1, now, now, "cpu-w0", "cpu", blob, 0.0)
                    + (0.001, None, None, None, None, None)
                    for n in numbers
                ]
                connection.execute("BEGIN")
                connection.executemany(END_ROW_SQL, rows)
                connection.execute("COMMIT")
                continue
            submissions = [
                (job_id(n), "echo", 1, None, None, 0, now, blob, None, 0, None, None) for n in numbers
            ]
            ends = [
                ("completed", 1, now, now, "cpu-w0", "cpu", blob, 0.0, 0.001, None, None, None, job_id(n))
                for n in numbers
            ]
            connection.execute("BEGIN")
            connection.executemany(SUBMIT_SQL, submissions)
            connection.execute("COMMIT")
            connection.execute("BEGIN")
            connection.executemany(END_UPDATE_SQL, ends)
            connection.execute("COMMIT")
        spent = time.process_time() - started
        connection.close()
    return 1e6 * spent / jobs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument(
        "--batch", type=int, action="append", help="jobs a commit (repeatable; default 10 and 50)"
    )
    args = parser.parse_args()
    for batch in args.batch or [10, 50]:
        one = cpu_us_per_job(True, args.jobs, batch)
        two = cpu_us_per_job(False, args.jobs, batch)
        print(f"batches of {batch:>3}: one row {one:5.1f} µs CPU a job; submission then end {two:5.1f} µs")


if __name__ == "__main__":
    main()
