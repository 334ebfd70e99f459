"""The daemon's recent history for the dashboard's charts (`GET /system/history`): a ring buffer of
samples taken every `SAMPLE_EVERY_S` by the supervision tick, `WINDOW_S` long, in the main process.

Each sample holds, over the interval since the one before: jobs completed and failed per second per
model, the p50 and p99 of the client jobs' latency (submission to end) that ended in it, and the cost
per minute; and, as it stands when taken: queued jobs per model and priority, each card's memory
(as the card reports it, and as the VRAM ledger counts it) and utilization, each worker's CPU and RSS
(the main process as `main`). `columns(samples)` turns them into the column form the charts draw,
with None where a series has no value (a worker that was not running yet)."""

from __future__ import annotations

import math
import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

import msgspec
import psutil

from scheduler.core.costs import CostLedger
from scheduler.core.devices import MIB, Inventory
from scheduler.core.jobs import PRIORITY_NAMES, Job, JobStatus, Priority
from scheduler.core.table import JobTable
from scheduler.core.workers import Worker

SAMPLE_EVERY_S = 2.0
WINDOW_S = 900.0
MAIN = "main"  # the main process's key among the workers
MAX_LATENCIES = 50_000  # latencies kept per interval; past it, a uniform sample of them (reservoir)


class Sample(msgspec.Struct):
    at: float  # wall clock, seconds
    completed_per_s: dict[str, float]  # by model (a pipeline's jobs under its pipeline's name)
    errors_per_s: dict[str, float]
    latency_p50_s: float | None  # None: no job ended in the interval
    latency_p99_s: float | None
    queue_depth: dict[str, int]  # "model/priority" -> queued jobs
    gpu_memory_used_mb: dict[str, float]  # card index -> MiB in use as the card reports it
    gpu_ledger_mb: dict[str, float]  # card index -> MiB the VRAM ledger gives models
    gpu_utilization_pct: dict[str, float | None]
    worker_cpu_pct: dict[str, float]  # worker id (and `main`) -> CPU percent of one core
    worker_rss_mb: dict[str, float]
    cost_per_min_usd: float


class HistoryColumns(msgspec.Struct):
    """`GET /system/history`: the samples as columns (`at` is the x axis); every series has one value
    per sample, None where it had none."""

    interval_s: float
    window_s: float
    at: list[float]
    completed_per_s: dict[str, list[float | None]]
    errors_per_s: dict[str, list[float | None]]
    latency_p50_s: list[float | None]
    latency_p99_s: list[float | None]
    queue_depth: dict[str, list[float | None]]
    gpu_memory_used_mb: dict[str, list[float | None]]
    gpu_ledger_mb: dict[str, list[float | None]]
    gpu_utilization_pct: dict[str, list[float | None]]
    worker_cpu_pct: dict[str, list[float | None]]
    worker_rss_mb: dict[str, list[float | None]]
    cost_per_min_usd: list[float | None]


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of values sorted ascending (None for none)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def series(
    samples: list[Sample], read: Callable[[Sample], Mapping[str, float | None]]
) -> dict[str, list[float | None]]:
    """One list per key that any sample has, aligned with the samples."""
    keys: dict[str, None] = {}
    for sample in samples:
        keys.update(dict.fromkeys(read(sample)))
    return {key: [read(sample).get(key) for sample in samples] for key in sorted(keys)}


def columns(
    samples: list[Sample], interval_s: float = SAMPLE_EVERY_S, window_s: float = WINDOW_S
) -> HistoryColumns:
    return HistoryColumns(
        interval_s=interval_s,
        window_s=window_s,
        at=[sample.at for sample in samples],
        completed_per_s=series(samples, lambda s: s.completed_per_s),
        errors_per_s=series(samples, lambda s: s.errors_per_s),
        latency_p50_s=[sample.latency_p50_s for sample in samples],
        latency_p99_s=[sample.latency_p99_s for sample in samples],
        queue_depth=series(samples, lambda s: s.queue_depth),
        gpu_memory_used_mb=series(samples, lambda s: s.gpu_memory_used_mb),
        gpu_ledger_mb=series(samples, lambda s: s.gpu_ledger_mb),
        gpu_utilization_pct=series(samples, lambda s: s.gpu_utilization_pct),
        worker_cpu_pct=series(samples, lambda s: s.worker_cpu_pct),
        worker_rss_mb=series(samples, lambda s: s.worker_rss_mb),
        cost_per_min_usd=[sample.cost_per_min_usd for sample in samples],
    )


def queue_depth(table: JobTable) -> dict[str, int]:
    """Queued jobs per "model/priority" (suspects counted under their own priority)."""
    depth: dict[str, int] = {}
    for model, lanes in table.queued_by_model.items():
        for priority, lane in zip(Priority, lanes, strict=True):
            count = sum(1 for job in lane if job.status is JobStatus.QUEUED and job.attempts == 0)
            if count:
                depth[f"{model}/{PRIORITY_NAMES[priority]}"] = count
    for job in table.waiting_suspects():
        key = f"{job.model}/{PRIORITY_NAMES[job.priority]}"
        depth[key] = depth.get(key, 0) + 1
    return depth


class History:
    """The ring buffer and what fills it. `on_jobs_end` is a `JobEndings` tally; `tick(now)` (the
    supervision tick, monotonic `now`) takes a sample once `interval_s` has passed."""

    def __init__(
        self,
        table: JobTable,
        workers: Mapping[str, Worker],
        inventory: Inventory,
        costs: CostLedger,
        *,
        interval_s: float = SAMPLE_EVERY_S,
        window_s: float = WINDOW_S,
    ) -> None:
        self.table = table
        self.workers = workers
        self.inventory = inventory
        self.costs = costs
        self.interval_s = interval_s
        self.window_s = window_s
        self.samples: deque[Sample] = deque(maxlen=max(1, int(window_s / interval_s)))
        self._completed: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._latencies: list[float] = []
        self._ended = 0  # jobs whose latency counted in this interval (the reservoir's denominator)
        self._last_at: float | None = None  # monotonic time of the last sample
        self._last_cost = costs.total_usd
        self._processes: dict[int, psutil.Process] = {}

    def on_jobs_end(self, jobs: list[Job]) -> None:
        """Ended jobs (a `JobEndings` tally: in bulk, once a loop turn)."""
        completed, errors, latencies = self._completed, self._errors, self._latencies
        for job in jobs:
            if job.parent_id is not None:
                continue  # a stage's or a CPU call's job: its pipeline job counts
            status = job.status
            if status is JobStatus.COMPLETED:
                name = job.pipeline or job.model
                completed[name] = completed.get(name, 0) + 1
            elif status is JobStatus.ERROR:
                name = job.pipeline or job.model
                errors[name] = errors.get(name, 0) + 1
            elif status is JobStatus.CANCELLED:
                continue  # no latency
            if job.ended_at is None:
                continue
            latency = job.ended_at - job.created_at
            if latency < 0.0:
                latency = 0.0
            self._ended += 1
            if len(latencies) < MAX_LATENCIES:
                latencies.append(latency)
            elif (slot := random.randrange(self._ended)) < MAX_LATENCIES:
                latencies[slot] = latency

    def tick(self, now: float) -> None:
        if self._last_at is None:
            self._last_at = now  # the first interval starts here
            return
        if now - self._last_at >= self.interval_s:
            self.samples.append(self.sample(now))

    def sample(self, now: float) -> Sample:
        """Take a sample now (monotonic `now`) and start the next interval."""
        elapsed = max(1e-6, now - (self._last_at if self._last_at is not None else now - self.interval_s))
        self._last_at = now
        latencies = sorted(self._latencies)
        total_cost = self.costs.total_usd
        cpu, rss = self.processes()
        cards = self.inventory.current()
        sample = Sample(
            at=time.time(),
            completed_per_s={name: count / elapsed for name, count in self._completed.items()},
            errors_per_s={name: count / elapsed for name, count in self._errors.items()},
            latency_p50_s=percentile(latencies, 0.5),
            latency_p99_s=percentile(latencies, 0.99),
            queue_depth=queue_depth(self.table),
            gpu_memory_used_mb={str(card.index): round(card.used_bytes / MIB, 1) for card in cards},
            gpu_ledger_mb=self.ledger_mb(card.index for card in cards),
            gpu_utilization_pct={str(card.index): card.utilization_pct for card in cards},
            worker_cpu_pct=cpu,
            worker_rss_mb=rss,
            cost_per_min_usd=max(0.0, total_cost - self._last_cost) * 60.0 / elapsed,
        )
        self._completed = {name: 0 for name in self._completed}  # a model seen stays on the chart at 0
        self._errors = {name: 0 for name in self._errors}
        self._latencies = []
        self._ended = 0
        self._last_cost = total_cost
        return sample

    def ledger_mb(self, indices: Iterable[int]) -> dict[str, float]:
        by_card = dict.fromkeys(indices, 0.0)
        for worker in self.workers.values():
            if worker.gpu_index in by_card:
                by_card[worker.gpu_index] += sum(loaded.size_mb for loaded in worker.models.values())
        return {str(index): round(mb, 1) for index, mb in by_card.items()}

    def processes(self) -> tuple[dict[str, float], dict[str, float]]:
        """CPU percent (since the last sample) and RSS of the main process and each live worker."""
        pids = {MAIN: os.getpid()}
        for worker in self.workers.values():
            if worker.pid is not None and worker.alive():
                pids[worker.worker_id] = worker.pid
        read: dict[int, tuple[float, float]] = {}  # a thread worker shares the main process's pid
        for pid in set(pids.values()):
            process = self._processes.get(pid)
            try:
                if process is None:
                    process = self._processes[pid] = psutil.Process(pid)
                with process.oneshot():
                    read[pid] = (
                        round(process.cpu_percent(None), 1),
                        round(process.memory_info().rss / MIB, 1),
                    )
            except psutil.Error:
                self._processes.pop(pid, None)  # gone meanwhile
        cpu = {name: read[pid][0] for name, pid in pids.items() if pid in read}
        rss = {name: read[pid][1] for name, pid in pids.items() if pid in read}
        live = set(pids.values())
        for pid in [pid for pid in self._processes if pid not in live]:
            del self._processes[pid]
        return cpu, rss

    def columns(self) -> HistoryColumns:
        return columns(list(self.samples), self.interval_s, self.window_s)
