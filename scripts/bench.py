#!/usr/bin/env python
"""Benchmarks: a model called directly against the same model through modelsched.

    .venv/bin/python scripts/bench.py                 # mlp direct at batch 32; echo and mlp through the Python API
    .venv/bin/python scripts/bench.py --rest          # and the REST infer endpoint under 64 clients
    .venv/bin/python scripts/bench.py --journal       # and the cost of the SQLite journal

Every figure of one run comes from the same machine at the same time: compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MLP_ROW = [((i * 37) % 101) / 101.0 - 0.5 for i in range(256)]
ECHO_INPUT = {"text": "hello", "n": 1}


def direct_mlp_rate(batch_size: int, seconds: float = 3.0, repeats: int = 7) -> float:
    """Items/s of the mlp model called in this process at `batch_size` (median of `repeats`)."""
    import torch

    from adapters.builtin import MLPAdapter

    adapter = MLPAdapter()
    state = adapter.load("cpu")
    batch = [list(MLP_ROW) for _ in range(batch_size)]
    adapter.predict(state, batch)  # warm up
    rates = []
    per_repeat = seconds / repeats
    for _ in range(repeats):
        count = 0
        started = time.perf_counter()
        while time.perf_counter() - started < per_repeat:
            adapter.predict(state, batch)
            count += batch_size
        rates.append(count / (time.perf_counter() - started))
    del torch
    return statistics.median(rates)


async def closed_loop(
    scheduler: Any, model: str, inputs: Any, in_flight: int, total_jobs: int
) -> tuple[float, int]:
    """`in_flight` clients each submit a job and wait for its end, until `total_jobs` have run:
    (seconds taken, jobs that did not complete)."""
    from scheduler import JobRequest

    remaining = total_jobs
    failures = 0

    async def client() -> None:
        nonlocal remaining, failures
        while remaining > 0:
            remaining -= 1
            job_id = await scheduler.schedule_job(JobRequest(model=model, inputs=inputs))
            if (await scheduler.wait_for(job_id, 120))["status"] != "completed":
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(in_flight)))
    return time.perf_counter() - started, failures


async def api_rate(
    model: str, inputs: Any, in_flight: int, total_jobs: int, torch_threads: int, journal_path: str = ""
) -> dict[str, float]:
    """Jobs/s through the Python API with `in_flight` jobs outstanding at all times."""
    from scheduler import JobRequest, Scheduler
    from scheduler.settings import ModelConfig, Settings
    from workers.gc_tuning import tune_gc

    settings = Settings(
        journal_path=journal_path,
        cpu_workers=1,
        torch_threads=torch_threads,
        log_level="warning",
        max_queue=max(10_000, in_flight * 2),
        models=[ModelConfig(name=model, adapter=model)],
    )
    batch_sizes: list[int] = []
    scheduler = Scheduler(settings, environ={**os.environ, "MODELSCHED_FORCE_CPU": "1"})
    scheduler.on_batch.append(lambda worker, name, size, run_s: batch_sizes.append(size))
    async with scheduler:
        await scheduler.wait_ready(120)
        tune_gc()
        warm = await scheduler.schedule_job(JobRequest(feature=model, inputs=inputs))
        await scheduler.wait_for(warm, 60)
        batch_sizes.clear()
        elapsed, failures = await closed_loop(scheduler, model, inputs, in_flight, total_jobs)
    return {
        "jobs_per_s": total_jobs / elapsed,
        "failures": failures,
        "mean_batch": statistics.mean(batch_sizes) if batch_sizes else 0.0,
    }


def set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--echo-jobs", type=int, default=50_000)
    parser.add_argument("--mlp-jobs", type=int, default=20_000)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads for the direct call and for each worker (default 1, as the peer harness)",
    )
    parser.add_argument("--rest", action="store_true", help="also the REST infer endpoint under 64 clients")
    parser.add_argument("--journal", action="store_true", help="also the journal's cost (jobs/s on and off)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args()
    os.environ["MODELSCHED_TORCH_THREADS"] = str(args.torch_threads)
    set_torch_threads(args.torch_threads)
    figures: dict[str, Any] = {"torch_threads": args.torch_threads, "cpus": os.cpu_count()}

    direct_b32 = direct_mlp_rate(32)
    direct_b1 = direct_mlp_rate(1)
    figures["mlp_direct_b32_items_per_s"] = direct_b32
    figures["mlp_direct_b1_items_per_s"] = direct_b1
    print(f"mlp direct, batch 32:         {direct_b32:>10,.0f} items/s")
    print(f"mlp direct, batch 1:          {direct_b1:>10,.0f} items/s")

    echo = asyncio.run(api_rate("echo", ECHO_INPUT, args.in_flight, args.echo_jobs, args.torch_threads))
    figures["echo_api"] = echo
    print(
        f"echo via Python API ({args.in_flight} in flight): {echo['jobs_per_s']:>10,.0f} jobs/s "
        f"(mean batch {echo['mean_batch']:.1f}, failures {echo['failures']})"
    )

    mlp = asyncio.run(api_rate("mlp", MLP_ROW, args.in_flight, args.mlp_jobs, args.torch_threads))
    figures["mlp_api"] = mlp
    ratio = mlp["jobs_per_s"] / direct_b32
    figures["mlp_api_over_direct_b32"] = ratio
    print(
        f"mlp via Python API ({args.in_flight} in flight):  {mlp['jobs_per_s']:>10,.0f} jobs/s "
        f"= {ratio:.1%} of direct batch 32 (mean batch {mlp['mean_batch']:.1f}, failures {mlp['failures']})"
    )

    if args.journal:
        from scripts.bench_journal import journal_cost  # noqa: PLC0415 - optional part

        figures["journal"] = journal_cost()
        print(f"journal: {json.dumps(figures['journal'])}")
    if args.rest:
        from scripts.bench_rest import run_rest_bench  # noqa: PLC0415 - optional part

        figures["rest"] = run_rest_bench(direct_rates={"mlp": direct_b32})
        for row in figures["rest"]:
            print(f"REST: {json.dumps(row)}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
