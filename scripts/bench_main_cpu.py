#!/usr/bin/env python
"""The main process's CPU time per job: echo jobs through the Python API (journal off, 256 in flight),
measured with `time.process_time()` of this process (the worker is another process).

    .venv/bin/python scripts/bench_main_cpu.py                      # this checkout
    .venv/bin/python scripts/bench_main_cpu.py --repo ../other-tree # another checkout (e.g. a worktree
                                                                    # at an older commit), same venv

Alternate runs of two checkouts to compare them on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path


async def measure(jobs: int, in_flight: int) -> tuple[float, float]:
    """(jobs/s, main-process CPU µs per job) over `jobs` echo jobs, after 2,000 to warm up."""
    from scheduler import JobRequest, Scheduler
    from scheduler.settings import ModelConfig, Settings

    settings = Settings(journal_path="", models=[ModelConfig(name="echo", adapter="echo")])
    scheduler = Scheduler(settings, environ={"MODELSCHED_FORCE_CPU": "1"})
    await scheduler.start()
    await scheduler.wait_ready(60)
    slots = asyncio.Semaphore(in_flight)

    async def one(index: int) -> None:
        async with slots:
            await scheduler.wait_for(scheduler.submit(JobRequest(model="echo", inputs={"n": index})), 60)

    await asyncio.gather(*(one(index) for index in range(2_000)))
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(index) for index in range(jobs)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await scheduler.stop()
    return jobs / wall, 1e6 * cpu / jobs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--in-flight", type=int, default=256)
    args = parser.parse_args()
    sys.path.insert(0, str(args.repo.resolve()))
    rate, cpu_us = asyncio.run(measure(args.jobs, args.in_flight))
    print(f"{args.repo}: {rate:,.0f} jobs/s, main-process CPU {cpu_us:.1f} µs/job")


if __name__ == "__main__":
    main()
