"""The metrics read from the scheduler's state when Prometheus scrapes (`StatusCollector`): queue
depth (by state, and per model), workers ready and their restarts, GPU memory and utilization, models
loaded, the CPU stage pool, costs, the journal, the render process, and `modelsched_build_info`."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from importlib import metadata

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from scheduler.core.devices import MIB
from scheduler.core.status import SystemStatus
from scheduler.scheduler import Scheduler

Family = GaugeMetricFamily | CounterMetricFamily


def package_version() -> str:
    try:
        return metadata.version("modelsched")
    except metadata.PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown"


class StatusCollector(Collector):
    """Gauges (and counters kept by the scheduler's parts) read from its status at scrape time."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.version = package_version()

    def collect(self) -> Iterator[Family]:
        status = self.scheduler.status()
        build = GaugeMetricFamily(
            "modelsched_build_info", "The daemon's version (always 1)", labels=["version", "python"]
        )
        build.add_metric([self.version, platform.python_version()], 1)
        yield build
        queue = GaugeMetricFamily("modelsched_queue_jobs", "Jobs by state now", labels=["state"])
        queue.add_metric(["queued"], status.queue.queued)
        queue.add_metric(["processing"], status.queue.processing)
        yield queue
        per_model = GaugeMetricFamily(
            "modelsched_model_queue_jobs", "Jobs of a model waiting for a worker", labels=["model"]
        )
        for model in status.models:
            per_model.add_metric([model.name], model.queued)
        yield per_model
        yield from self._workers(status)
        yield from self._gpus(status)
        yield from self._costs_and_pool(status)
        yield from self._journal(status)
        yield from self._render(status)

    def _workers(self, status: SystemStatus) -> Iterator[Family]:
        ready = GaugeMetricFamily(
            "modelsched_workers_ready", "Worker processes alive and ready for jobs", labels=["device"]
        )
        ready_by_device: dict[str, int] = {}
        restarts = CounterMetricFamily(
            "modelsched_worker_restarts",
            "Times a worker slot's process was started again (after a death, a kill or a timeout)",
            labels=["worker", "device"],
        )
        loaded = GaugeMetricFamily("modelsched_models_loaded", "Models loaded per worker", labels=["worker"])
        for worker in status.workers:
            device = "cpu" if worker.gpu_index is None else f"gpu{worker.gpu_index}"
            is_ready = worker.alive and worker.state == "ready"
            ready_by_device[device] = ready_by_device.get(device, 0) + int(is_ready)
            restarts.add_metric([worker.worker_id, device], worker.restarts)
            loaded.add_metric([worker.worker_id], len(worker.loaded_models))
        for device, count in ready_by_device.items():
            ready.add_metric([device], count)
        yield ready
        yield restarts
        yield loaded

    def _gpus(self, status: SystemStatus) -> Iterator[Family]:
        gpu_total = GaugeMetricFamily("modelsched_gpu_memory_total_bytes", "GPU memory", labels=["gpu"])
        gpu_used = GaugeMetricFamily("modelsched_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"])
        ledger = GaugeMetricFamily(
            "modelsched_gpu_ledger_bytes", "GPU memory the ledger assigns to models", labels=["gpu"]
        )
        utilization = GaugeMetricFamily(
            "modelsched_gpu_utilization_ratio",
            "Share of the last sample period the GPU was busy (NVML; absent on simulated cards)",
            labels=["gpu"],
        )
        for gpu in status.gpu:
            label = [str(gpu.index)]
            gpu_total.add_metric(label, gpu.total_mb * MIB)
            gpu_used.add_metric(label, gpu.used_mb * MIB)
            ledger.add_metric(label, gpu.ledger_used_mb * MIB)
            if gpu.utilization_pct is not None:
                utilization.add_metric(label, gpu.utilization_pct / 100)
        yield gpu_total
        yield gpu_used
        yield ledger
        yield utilization

    def _costs_and_pool(self, status: SystemStatus) -> Iterator[Family]:
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

    def _journal(self, status: SystemStatus) -> Iterator[Family]:
        journal = status.journal
        if journal is None:
            return
        for name, help_text, value in (
            ("size_bytes", "The journal's database and WAL on disk", journal.size_mb * MIB),
            ("used_bytes", "The journal's pages in use (what journal_max_mb bounds)", journal.used_mb * MIB),
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

    def _render(self, status: SystemStatus) -> Iterator[Family]:
        render = status.render
        if render is None:
            return
        renders = CounterMetricFamily(
            "modelsched_render_renders",
            "Pages the render process finished, by outcome (`ok`, `failed`), since the daemon started",
            labels=["outcome"],
        )
        renders.add_metric(["ok"], render.get("renders_ok", 0))
        renders.add_metric(["failed"], render.get("renders_failed", 0))
        yield renders
        for name, help_text, key in (
            ("fallbacks", "Pages fetched over plain HTTP after the browser failed", "fallbacks"),
            ("restarts", "Times the render process was started again", "restarts"),
        ):
            yield CounterMetricFamily(f"modelsched_render_{name}", help_text, value=render.get(key, 0))
        yield GaugeMetricFamily(
            "modelsched_render_pages_active",
            "Pages open in the browser now",
            value=render.get("pages_active", 0),
        )
