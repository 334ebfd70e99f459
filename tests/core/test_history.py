"""The dashboard's history (`scheduler.core.history`): rates, latency percentiles, queue depth per model
and priority, cost per minute, the main process's CPU and RSS, the ring's bound, and the columns the
charts draw (None where a series had no value)."""

from __future__ import annotations

import time

from scheduler.core.costs import CostLedger
from scheduler.core.devices import Inventory, parse_simulated
from scheduler.core.history import MAIN, History, Sample, columns, percentile
from scheduler.core.jobs import Job, JobStatus, Priority
from scheduler.core.table import JobTable


def ended(job_id: str, model: str, status: JobStatus, took_s: float, parent_id: str | None = None) -> Job:
    now = time.time()
    return Job(
        id=job_id,
        model=model,
        inputs=None,
        status=status,
        created_at=now - took_s,
        ended_at=now,
        parent_id=parent_id,
    )


def test_a_sample_holds_rates_percentiles_queues_cards_costs_and_processes() -> None:
    table = JobTable()
    for n, priority in enumerate([Priority.HIGH, Priority.LOW, Priority.LOW]):
        table.add(Job(id=f"q{n}", model="mlp", inputs=None, priority=priority))
    table.add(Job(id="s0", model="mlp", inputs=None, attempts=1))  # a suspect, normal priority
    inventory = Inventory(512)
    inventory.gpus = parse_simulated("2x24GiB")
    costs = CostLedger({"cpu": 0.5})
    history = History(table, {}, inventory, costs, interval_s=2.0, window_s=6.0)
    history.tick(100.0)  # the first interval starts
    history.on_jobs_end(  # told in bulk, as `JobEndings.tally` tells them
        [
            *(ended(f"c{n}", "echo", JobStatus.COMPLETED, 0.010) for n in range(98)),
            ended("slow", "echo", JobStatus.COMPLETED, 2.0),
            ended("e", "echo", JobStatus.ERROR, 0.010),
            ended("x", "echo", JobStatus.CANCELLED, 50.0),  # no latency, no rate
            ended("p.0", "stage", JobStatus.COMPLETED, 1.0, parent_id="p"),  # its pipeline's
        ]
    )
    costs.charge("echo", None, 3.0)  # $1.50 in the interval
    history.tick(101.0)
    assert not history.samples  # not 2 s yet
    history.tick(102.0)
    (sample,) = history.samples
    assert sample.completed_per_s == {"echo": 49.5} and sample.errors_per_s == {"echo": 0.5}
    assert sample.latency_p50_s is not None and abs(sample.latency_p50_s - 0.010) < 1e-3
    assert sample.latency_p99_s is not None and abs(sample.latency_p99_s - 0.010) < 1e-3  # 99 of 100
    assert sample.queue_depth == {"mlp/high": 1, "mlp/low": 2, "mlp/normal": 1}
    assert sample.gpu_memory_used_mb == {"0": 0.0, "1": 0.0} and sample.gpu_ledger_mb == {"0": 0.0, "1": 0.0}
    assert abs(sample.cost_per_min_usd - 45.0) < 1e-6  # $1.50 in 2 s
    assert sample.worker_rss_mb[MAIN] > 10 and MAIN in sample.worker_cpu_pct
    for now in (104.0, 106.0, 108.0, 110.0):
        history.tick(now)
    assert len(history.samples) == 3  # 6 s of 2 s samples
    last = history.samples[-1]
    assert (
        last.completed_per_s == {"echo": 0.0} and last.latency_p50_s is None and last.cost_per_min_usd == 0.0
    )


def test_columns_align_every_series_with_the_samples() -> None:
    def sample(at: float, workers: dict[str, float]) -> Sample:
        return Sample(
            at=at,
            completed_per_s={},
            errors_per_s={},
            latency_p50_s=None,
            latency_p99_s=None,
            queue_depth={},
            gpu_memory_used_mb={},
            gpu_ledger_mb={},
            gpu_utilization_pct={},
            worker_cpu_pct=workers,
            worker_rss_mb={},
            cost_per_min_usd=0.0,
        )

    shaped = columns([sample(1.0, {"cpu-w0": 5.0}), sample(3.0, {"cpu-w0": 7.0, "cpu-w1": 1.0})])
    assert shaped.at == [1.0, 3.0]
    assert shaped.worker_cpu_pct == {"cpu-w0": [5.0, 7.0], "cpu-w1": [None, 1.0]}
    assert percentile([], 0.5) is None and percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([float(n) for n in range(1, 101)], 0.99) == 99.0
