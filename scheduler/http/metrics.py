"""Prometheus metrics for `/metrics`, in a registry of their own.

Counters and histograms are fed by the scheduler's observers (`on_job_end`, `on_batch`, the cost
ledger's and the pipelines' stage observers) as things happen; gauges (queue depth, workers up, GPU memory, models loaded) are read from the system status
when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from scheduler.core.devices import MIB
from scheduler.core.jobs import Job
from scheduler.scheduler import Scheduler

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class StatusCollector(Collector):
    """Gauges read from the scheduler's status at scrape time."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        status = self.scheduler.status()
        queue = GaugeMetricFamily("modelsched_queue_jobs", "Jobs by state now", labels=["state"])
        queue.add_metric(["queued"], status.queue.queued)
        queue.add_metric(["processing"], status.queue.processing)
        yield queue
        workers_up = GaugeMetricFamily("modelsched_workers_up", "Workers alive and ready", labels=["device"])
        up_by_device: dict[str, int] = {}
        for worker in status.workers:
            kind = "cpu" if worker.gpu_index is None else f"gpu{worker.gpu_index}"
            up_by_device[kind] = up_by_device.get(kind, 0) + int(worker.alive and worker.state == "ready")
        for device, count in up_by_device.items():
            workers_up.add_metric([device], count)
        yield workers_up
        gpu_total = GaugeMetricFamily("modelsched_gpu_memory_total_bytes", "GPU memory", labels=["gpu"])
        gpu_used = GaugeMetricFamily("modelsched_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"])
        ledger = GaugeMetricFamily(
            "modelsched_gpu_ledger_bytes", "GPU memory the ledger assigns to models", labels=["gpu"]
        )
        for gpu in status.gpu:
            label = [str(gpu.index)]
            gpu_total.add_metric(label, gpu.total_mb * MIB)
            gpu_used.add_metric(label, gpu.used_mb * MIB)
            ledger.add_metric(label, gpu.ledger_used_mb * MIB)
        yield gpu_total
        yield gpu_used
        yield ledger
        loaded = GaugeMetricFamily("modelsched_models_loaded", "Models loaded per worker", labels=["worker"])
        for worker in status.workers:
            loaded.add_metric([worker.worker_id], len(worker.loaded_models))
        yield loaded
        pool = GaugeMetricFamily("modelsched_cpu_pool_workers", "CPU stage pool workers", labels=["state"])
        pool.add_metric(["running"], status.cpu_pool.running)
        pool.add_metric(["ready"], status.cpu_pool.ready)
        pool.add_metric(["max"], status.cpu_pool.max_workers)
        yield pool
        spent = CounterMetricFamily(
            "modelsched_cost_usd",
            "Dollars of worker time spent, by model and device class",
            labels=["model", "device"],
        )
        for (model, device), dollars in self.scheduler.costs.by_model_device.items():
            spent.add_metric([model, device], dollars)
        yield spent
        per_1000 = GaugeMetricFamily(
            "modelsched_cost_per_1000_jobs_usd", "Mean cost of 1,000 ended jobs since the start"
        )
        per_1000.add_metric([], status.costs.per_1000_jobs_usd or 0.0)
        yield per_1000
        journal = status.journal
        if journal is not None:
            for name, help_text, value in (
                ("size_bytes", "The journal's database and WAL on disk", journal.size_mb * MIB),
                (
                    "used_bytes",
                    "The journal's pages in use (what journal_max_mb bounds)",
                    journal.used_mb * MIB,
                ),
                ("max_bytes", "journal_max_mb (0: no bound)", journal.max_mb * MIB),
                (
                    "pruned_for_size",
                    "Ended jobs pruned since the start to stay under the bound",
                    journal.pruned_for_size,
                ),
                (
                    "available",
                    "1 while the journal takes jobs; 0 while its commits fail or it is full",
                    journal.problem is None,
                ),
            ):
                yield GaugeMetricFamily(f"modelsched_journal_{name}", help_text, value=float(value))


class Labelled:
    """A metric's children by label values, each looked up once: prometheus_client's `labels()`
    checks its arguments and takes a lock on every call, a cost paid per job on the hot path."""

    def __init__(self, metric: Counter | Histogram) -> None:
        self.metric = metric
        self.children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = self.metric.labels(*values)
        return child


class SchedulerMetrics:
    """The daemon's metrics registry; `render()` is the `/metrics` page."""

    def __init__(self, scheduler: Scheduler) -> None:
        disable_created_metrics()  # no `*_created` series beside each counter and histogram
        self.registry = CollectorRegistry()
        self.submitted = Counter(
            "modelsched_jobs_submitted", "Jobs accepted", ["model"], registry=self.registry
        )
        self.ended = Counter(
            "modelsched_jobs_ended", "Jobs ended", ["model", "status"], registry=self.registry
        )
        self.queue_wait = Histogram(
            "modelsched_job_queue_wait_seconds",
            "From submission to the start of its run",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.run_time = Histogram(
            "modelsched_job_run_seconds",
            "From the start of its run to its end",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "modelsched_batch_size",
            "Items per batch a worker ran",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_time = Histogram(
            "modelsched_batch_seconds",
            "Time a worker spent on one batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_time = Histogram(
            "modelsched_stage_seconds",
            "From a pipeline stage's start (its queue included) to its end",
            ["pipeline", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.submitted_for, self.ended_for = Labelled(self.submitted), Labelled(self.ended)
        self.queue_wait_for, self.run_time_for = Labelled(self.queue_wait), Labelled(self.run_time)
        self.batch_size_for, self.batch_time_for = Labelled(self.batch_size), Labelled(self.batch_time)
        self.registry.register(StatusCollector(scheduler))
        scheduler.on_job_end.append(self.job_ended)
        scheduler.on_batch.append(self.batch_ran)
        scheduler.pipelines.stage_observers.append(self.stage_ended)

    def job_submitted(self, model: str) -> None:
        self.submitted_for(model).inc()

    def stage_ended(self, pipeline: str, stage: str, seconds: float) -> None:
        self.stage_time.labels(pipeline, stage).observe(seconds)

    def job_ended(self, job: Job) -> None:
        if job.parent_id is not None:
            return  # a stage's or a CPU call's job: `modelsched_stage_seconds` and the batch metrics
        self.ended_for(job.model, job.status.value).inc()
        if job.started_at is not None:
            self.queue_wait_for(job.model).observe(max(0.0, job.started_at - job.created_at))
            if job.ended_at is not None:
                self.run_time_for(job.model).observe(max(0.0, job.ended_at - job.started_at))

    def batch_ran(self, worker_id: str, model: str, size: int, run_s: float) -> None:
        self.batch_size_for(model).observe(size)
        self.batch_time_for(model).observe(run_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
