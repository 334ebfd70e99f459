#!/usr/bin/env python
"""The journal's cost: echo jobs/s through the Python API with the SQLite journal off and on.

    .venv/bin/python scripts/bench_journal.py                 # 20,000 jobs per run, NORMAL and FULL
    .venv/bin/python scripts/bench_journal.py --jobs 5000 --json out.json

Each client submits with `schedule_job` (which returns once the job's group commit is done) and then
waits for the end (shown once the end record is committed), so every job costs its full journal path.
Runs alternate (off, NORMAL, FULL, off, ...) and the median of the rounds is kept, so a neighbour's load
on a shared machine weighs on every configuration alike. `scripts/bench.py --journal` calls
`journal_cost`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ECHO_INPUT = {"text": "hello", "n": 1}


async def echo_rate(
    n_jobs: int, in_flight: int, journal_path: str, synchronous: str = "NORMAL"
) -> dict[str, float]:
    """Jobs/s of echo through the Python API, `in_flight` clients each submitting then waiting."""
    from scheduler import JobRequest, Scheduler
    from scheduler.settings import ModelConfig, Settings
    from scripts.bench import closed_loop

    settings = Settings(
        journal_path=journal_path,
        journal_synchronous=synchronous,
        cpu_workers=1,
        log_level="warning",
        max_queue=max(10_000, in_flight * 2),
        models=[ModelConfig(name="echo", adapter="echo")],
    )
    scheduler = Scheduler(settings, environ={**os.environ, "MODELSCHED_FORCE_CPU": "1"})
    async with scheduler:
        await scheduler.wait_ready(120)
        await scheduler.wait_for(
            await scheduler.schedule_job(JobRequest(model="echo", inputs=ECHO_INPUT)), 60
        )
        journal = scheduler.journal
        commits_before = journal.commits if journal else 0
        records_before = journal.records_written if journal else 0
        elapsed, failures = await closed_loop(scheduler, "echo", ECHO_INPUT, in_flight, n_jobs)
        commits = (journal.commits - commits_before) if journal else 0
        records = (journal.records_written - records_before) if journal else 0
    return {
        "jobs_per_s": n_jobs / elapsed,
        "failures": failures,
        "commits": commits,
        "records_per_commit": records / commits if commits else 0.0,
    }


def journal_cost(
    n_jobs: int = 20_000,
    in_flight: int = 256,
    rounds: int = 3,
    synchronous: tuple[str, ...] = ("NORMAL", "FULL"),
) -> dict[str, Any]:
    """Echo jobs/s with the journal off and on (per `synchronous` mode), and on/off ratios."""
    runs: dict[str, list[dict[str, float]]] = {"off": [], **{mode: [] for mode in synchronous}}
    with tempfile.TemporaryDirectory(prefix="modelsched-bench-journal-") as folder:
        for round_index in range(rounds):
            runs["off"].append(asyncio.run(echo_rate(n_jobs, in_flight, "")))
            for mode in synchronous:
                path = str(Path(folder) / f"journal-{mode}-{round_index}.db")  # a fresh file per run
                runs[mode].append(asyncio.run(echo_rate(n_jobs, in_flight, path, mode)))
    off = statistics.median(run["jobs_per_s"] for run in runs["off"])
    figures: dict[str, Any] = {
        "jobs": n_jobs,
        "in_flight": in_flight,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "off_jobs_per_s": round(off, 1),
        "failures": sum(run["failures"] for per_mode in runs.values() for run in per_mode),
    }
    for mode in synchronous:
        on = statistics.median(run["jobs_per_s"] for run in runs[mode])
        key = mode.lower()
        figures[f"on_{key}_jobs_per_s"] = round(on, 1)
        figures[f"ratio_{key}"] = round(on / off, 3)
        figures[f"records_per_commit_{key}"] = round(
            statistics.median(run["records_per_commit"] for run in runs[mode]), 1
        )
    figures["ratio"] = figures[f"ratio_{synchronous[0].lower()}"]
    figures["all_runs_jobs_per_s"] = {
        mode: [round(run["jobs_per_s"], 1) for run in per_mode] for mode, per_mode in runs.items()
    }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    figures = journal_cost(args.jobs, args.in_flight, args.rounds)
    print(f"echo via Python API, journal off:          {figures['off_jobs_per_s']:>9,.0f} jobs/s")
    for mode in ("normal", "full"):
        print(
            f"echo via Python API, journal {mode.upper():<6} on:   {figures[f'on_{mode}_jobs_per_s']:>9,.0f} jobs/s"
            f" = {figures[f'ratio_{mode}']:.1%} of off ({figures[f'records_per_commit_{mode}']:.0f} records"
            " a commit)"
        )
    print(json.dumps(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
