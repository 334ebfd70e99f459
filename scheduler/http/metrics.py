"""Prometheus metrics for `/metrics`, in a registry of their own.

Counters and histograms are fed by the scheduler's observers as things happen: admission (a new
client job, counted once: an idempotent replay is not a new job), job ends, batches, model loads,
jobs a gone worker gave back, pipeline stages, and every HTTP answer (`RequestMetrics`). Gauges and
the counters the scheduler's parts keep themselves are read at scrape time (`metrics_scrape`);
`process_*` is prometheus_client's collector for the main process.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from scheduler.core.jobs import STATUS_VALUES, Job
from scheduler.http.metrics_scrape import StatusCollector
from scheduler.http.request_tally import LATENCY_BUCKETS, RequestCollector, RequestTally, TallySnapshot
from scheduler.http.tally import CounterTally, HistogramTally, TallyCollector
from scheduler.render.model import RENDER_MODEL
from scheduler.scheduler import Scheduler

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
ATTEMPT_BUCKETS = (0, 1, 2, 3, 5, 10)
LOAD_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class SchedulerMetrics:
    """The daemon's metrics registry; `render()` is the `/metrics` page."""

    def __init__(self, scheduler: Scheduler) -> None:
        disable_created_metrics()  # no `*_created` series beside each counter and histogram
        self.registry = registry = CollectorRegistry()
        # counted per job or per batch: tallies (plain dicts), shown by `TallyCollector`
        self.submitted = CounterTally("modelsched_jobs_submitted", "Jobs accepted", ("model",))
        self.ended = CounterTally("modelsched_jobs_ended", "Jobs ended", ("model", "status"))
        self.queue_wait = HistogramTally(
            "modelsched_job_queue_wait_seconds",
            "From submission to the start of its run",
            ("model",),
            LATENCY_BUCKETS,
        )
        self.run_time = HistogramTally(
            "modelsched_job_run_seconds", "From the start of its run to its end", ("model",), LATENCY_BUCKETS
        )
        self.attempts = HistogramTally(
            "modelsched_job_attempts",
            "Tries an ended job took (a try is counted when it goes to a worker)",
            ("model",),
            ATTEMPT_BUCKETS,
        )
        self.batch_size = HistogramTally(
            "modelsched_batch_size", "Items per batch a worker ran", ("model",), BATCH_BUCKETS
        )
        self.batch_time = HistogramTally(
            "modelsched_batch_seconds", "Time a worker spent on one batch", ("model",), LATENCY_BUCKETS
        )
        registry.register(
            TallyCollector(
                [
                    self.submitted,
                    self.ended,
                    self.queue_wait,
                    self.run_time,
                    self.attempts,
                    self.batch_size,
                    self.batch_time,
                ]
            )
        )
        self.requeued = Counter(
            "modelsched_jobs_requeued",
            "Jobs queued again because their worker went away (`worker_died`: a try counted; "
            "`worker_stopped`: restarted or stopped on purpose, no try counted)",
            ["model", "reason"],
            registry=registry,
        )
        self.stage_time = Histogram(
            "modelsched_stage_seconds",
            "From a pipeline stage's start (its queue included) to its end",
            ["pipeline", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.load_time = Histogram(
            "modelsched_model_load_seconds",
            "Time a worker took to load a model",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self.load_failures = Counter(
            "modelsched_model_load_failures", "Model loads that failed", ["model"], registry=registry
        )
        self.render_jobs = Counter(
            "modelsched_render_jobs_ended",
            "Render jobs ended, by outcome: `completed`, `cancelled`, or the error's kind",
            ["outcome"],
            registry=registry,
        )
        self.requests = RequestTally()  # answered here; the fronts' come from `request_sources`
        self.request_sources: list[Callable[[], Iterable[TallySnapshot]]] = []
        registry.register(RequestCollector(self.requests, self.front_requests))
        ProcessCollector(registry=registry)  # process_* of the main process
        registry.register(StatusCollector(scheduler))
        self.admitted_by_model = scheduler.admission.admitted_by_model  # counted there, read at scrape
        scheduler.endings.tallies.append(self.jobs_ended)
        self.tally_ends = scheduler.endings.tally
        scheduler.on_batch.append(self.batch_ran)
        scheduler.worker_events.load_observers.append(self.model_loaded)
        scheduler.worker_events.requeue_observers.append(self.job_requeued)
        scheduler.pipelines.stage_observers.append(self.stage_ended)

    def stage_ended(self, pipeline: str, stage: str, seconds: float) -> None:
        self.stage_time.labels(pipeline, stage).observe(seconds)

    def jobs_ended(self, jobs: list[Job]) -> None:
        """Ended jobs (a `JobEndings` tally: in bulk, once a loop turn). A stage's or a CPU call's job
        is not counted here: `modelsched_stage_seconds` and the batch metrics count them."""
        ended = self.ended.counts
        attempt_bounds, wait_bounds, run_bounds = (
            self.attempts.buckets,
            self.queue_wait.buckets,
            self.run_time.buckets,
        )
        model: str | None = None  # whose bins these are (none yet: the first job looks its model's up)
        attempts: list[float] = []
        queue_wait: list[float] = []
        run_time: list[float] = []
        for job in jobs:
            if job.parent_id is not None:
                continue
            if job.model != model:  # the bins of a model's series, looked up once for a run of its jobs
                model = job.model
                labels = (model,)
                attempts = self.attempts.bins_of(labels)
                queue_wait = self.queue_wait.bins_of(labels)
                run_time = self.run_time.bins_of(labels)
            key = (model, STATUS_VALUES[job.status])
            ended[key] = ended.get(key, 0) + 1
            tried = job.attempts
            attempts[bisect_left(attempt_bounds, tried)] += 1
            attempts[-1] += tried
            started = job.started_at
            if started is not None:
                waited = started - job.created_at
                waited = waited if waited > 0.0 else 0.0
                queue_wait[bisect_left(wait_bounds, waited)] += 1
                queue_wait[-1] += waited
                if job.ended_at is not None:
                    ran = job.ended_at - started
                    ran = ran if ran > 0.0 else 0.0
                    run_time[bisect_left(run_bounds, ran)] += 1
                    run_time[-1] += ran
            if model == RENDER_MODEL and job.pipeline is None:
                outcome = job.status.value if job.status.value != "error" else (job.error_kind or "error")
                self.render_jobs.labels(outcome).inc()

    def job_requeued(self, job: Job, worker_died: bool) -> None:
        self.requeued.labels(job.model, "worker_died" if worker_died else "worker_stopped").inc()

    def model_loaded(self, model: str, worker_id: str, seconds: float | None) -> None:
        if seconds is None:
            self.load_failures.labels(model).inc()
        else:
            self.load_time.labels(model).observe(seconds)

    def batch_ran(self, worker_id: str, model: str, size: int, run_s: float) -> None:
        self.batch_size.observe((model,), size)
        self.batch_time.observe((model,), run_s)

    def request_answered(self, route: str, method: str, code: int, seconds: float) -> None:
        """One request answered by this process (the fronts tally their own)."""
        self.requests.observe(route, method, code, seconds)

    def front_requests(self) -> list[TallySnapshot]:
        return [snapshot for source in self.request_sources for snapshot in source()]

    def render(self) -> bytes:
        self.tally_ends()  # the ends of this loop turn counted too
        self.submitted.counts = {(model,): float(n) for model, n in self.admitted_by_model.items()}
        return generate_latest(self.registry)
