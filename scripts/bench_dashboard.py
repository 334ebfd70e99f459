#!/usr/bin/env python
"""What the dashboard costs the daemon: the history's observer per job end and one sample (with a
full queue), a page of the job list read from a large journal (with and without filters), and what the
job list's two journal indexes add to writing jobs.

    .venv/bin/python scripts/bench_dashboard.py                  # 100,000 journal rows
    .venv/bin/python scripts/bench_dashboard.py --rows 20000
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scheduler.core.costs import CostLedger  # noqa: E402
from scheduler.core.devices import Inventory  # noqa: E402
from scheduler.core.history import History  # noqa: E402
from scheduler.core.jobs import Job, JobStatus, Priority  # noqa: E402
from scheduler.core.table import JobTable  # noqa: E402
from scheduler.journal import SqliteJournal  # noqa: E402
from scheduler.journal import rows as journal_rows  # noqa: E402

LISTING_INDEXES = ("jobs_ended_by_model", "jobs_ended_unsuccessful")


def job_id(n: int, base_ms: int) -> str:
    return f"{base_ms + n:012x}{n:020x}"


def ended_job(n: int, base_ms: int) -> Job:
    now = time.time()
    return Job(
        id=job_id(n, base_ms),
        model="rare" if n % 100 == 0 else "echo",
        inputs={"n": n},
        status=JobStatus.ERROR if n % 100 == 1 else JobStatus.COMPLETED,
        created_at=now,
        started_at=now,
        ended_at=now,
        result={"n": n},
        error="boom" if n % 100 == 1 else None,
    )


def history_costs() -> dict[str, float]:
    table = JobTable()
    for n in range(10_000):
        table.add(Job(id=f"q{n}", model=f"m{n % 4}", inputs=None, priority=Priority(n % 3)))
    history = History(table, {}, Inventory(512), CostLedger({}))
    ends = [ended_job(0, 0)] * 64  # told in bulk, once a loop turn
    calls = 200_000 // len(ends)
    started = time.perf_counter()
    for _ in range(calls):
        history.on_jobs_end(ends)
    per_end = (time.perf_counter() - started) / (calls * len(ends))
    history.tick(0.0)
    samples = []
    for round_ in range(20):
        started = time.perf_counter()
        history.sample(float(round_ + 1))
        samples.append(time.perf_counter() - started)
    return {"on_job_end_us": per_end * 1e6, "sample_10k_queued_ms": statistics.median(samples) * 1e3}


def table_page_costs() -> dict[str, float]:
    """A page of 50 from a table of 100,000 jobs made as fast as this machine makes them."""
    from scheduler.core.admission import new_job_id
    from scheduler.core.job_pages import JobFilter, newest_in_memory

    jobs = [Job(id=new_job_id(), model="echo", inputs=None) for _ in range(100_000)]
    timings = {}
    for name, where in (
        ("table_page_newest_ms", JobFilter()),
        ("table_page_no_match_ms", JobFilter(model="x")),
    ):
        started = time.perf_counter()
        newest_in_memory(reversed(jobs), lambda job: job.status.value, where, 50)
        timings[name] = (time.perf_counter() - started) * 1e3
    return timings


async def page_costs(path: str, n_rows: int) -> dict[str, float]:
    journal = SqliteJournal(path)
    await journal.open()
    base_ms = int(time.time() * 1000) - n_rows
    for start in range(0, n_rows, 1000):
        await asyncio.gather(
            *(
                journal.record_submitted_nowait(ended_job(n, base_ms))  # an ended job: written as its end row
                for n in range(start, min(n_rows, start + 1000))
            )
        )
    cases = {
        "page_newest_ms": (None, None, None),
        "page_deep_cursor_ms": (job_id(n_rows // 2, base_ms), None, None),
        "page_rare_model_ms": (None, None, "rare"),
        "page_errors_ms": (None, "error", None),
        "page_errors_of_rare_model_ms": (None, "error", "rare"),  # none: walks every error row
    }
    timings: dict[str, float] = {}
    for name, (before, status, model) in cases.items():
        runs = []
        for _ in range(20):
            started = time.perf_counter()
            found = await journal.page_ended(before, None, status, model, 50)
            runs.append(time.perf_counter() - started)
        assert len(found) == (0 if name == "page_errors_of_rare_model_ms" else 50), name
        timings[name] = statistics.median(runs) * 1e3
    await journal.close()
    return timings


def write_cost(folder: Path, n_rows: int, with_indexes: bool) -> float:
    """Seconds to submit and then end `n_rows` jobs, 100 a transaction, as the journal's writer does."""
    path = folder / f"write-{with_indexes}-{time.monotonic_ns()}.db"
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.executescript(journal_rows.SCHEMA)
    if not with_indexes:
        for index in LISTING_INDEXES:
            connection.execute(f"DROP INDEX {index}")
    base_ms = int(time.time() * 1000)
    jobs = [ended_job(n, base_ms) for n in range(n_rows)]
    started = time.perf_counter()
    for start in range(0, n_rows, 100):
        group = jobs[start : start + 100]
        connection.execute("BEGIN")
        for job in group:
            connection.execute(journal_rows.SUBMIT_SQL, journal_rows.submit_params(job))
        connection.execute("COMMIT")
        connection.execute("BEGIN")
        for job in group:
            params = journal_rows.update_params(journal_rows.END, journal_rows.end_params(job))
            connection.execute(journal_rows.END_UPDATE_SQL, params)
        connection.execute("COMMIT")
    took = time.perf_counter() - started
    connection.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000, help="ended jobs in the journal read")
    args = parser.parse_args()
    print(history_costs())
    print(table_page_costs())
    with tempfile.TemporaryDirectory() as folder:
        print(asyncio.run(page_costs(str(Path(folder) / "journal.db"), args.rows)))
        rounds = {True: [], False: []}  # alternated, so a neighbour's load weighs on both alike
        for _ in range(3):
            for with_indexes in (False, True):
                rounds[with_indexes].append(write_cost(Path(folder), 20_000, with_indexes))
        without, with_ = statistics.median(rounds[False]), statistics.median(rounds[True])
        print(
            {
                "write_20k_jobs_without_listing_indexes_s": round(without, 3),
                "write_20k_jobs_with_listing_indexes_s": round(with_, 3),
                "ratio": round(with_ / without, 3),
            }
        )


if __name__ == "__main__":
    main()
