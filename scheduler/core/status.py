"""The system status as typed structs (what `GET /system/status` sends and its OpenAPI schema
describes), and `StatusBuilder`, which reads them off the scheduler's records."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from scheduler.core.costs import CostLedger, CostTotals
from scheduler.core.cpu_pool import CpuPool, PoolStatus
from scheduler.core.devices import MIB, Inventory
from scheduler.core.models import ModelRegistry
from scheduler.core.pipelines import Pipelines
from scheduler.core.ports import JobJournal, JournalStatus
from scheduler.core.readiness import Readiness
from scheduler.core.table import JobTable
from scheduler.core.workers import Worker
from scheduler.errors import WorkerState


class SchedulerInfo(msgspec.Struct):
    type: str
    preset: str
    accepting: bool
    started_at: float | None
    uptime_s: float


class GpuStatus(msgspec.Struct):
    """One card: memory as the card reports it (`memory_utilization`: used / total, 0 to 1), and
    what the VRAM ledger assigns to models. `id` is its index (the seed API's name): the daemon's
    number for it among the cards it uses."""

    id: int
    index: int
    name: str
    simulated: bool
    total_mb: float
    used_mb: float
    free_mb: float
    utilization_pct: float | None
    reserve_mb: int
    ledger_used_mb: float
    workers: list[str]
    memory_utilization: float
    uuid: str  # GPU-… or MIG-…: what its workers have as CUDA_VISIBLE_DEVICES
    nvml_index: (
        int | None
    )  # the GPU's index in nvidia-smi (the daemon's `index` counts only the cards it uses)


class LoadedModelStatus(msgspec.Struct):
    model: str
    ledger_mb: float
    measured_mb: float
    loading: bool
    jobs_in_flight: int
    idle_s: float


class WorkerStatus(msgspec.Struct):
    worker_id: str
    pid: int | None
    device: str
    gpu_index: int | None
    state: str
    alive: bool
    loaded_models: list[LoadedModelStatus]
    jobs_in_flight: int
    processing_jobs: list[str]
    jobs_done: int
    last_heartbeat: float | None
    heartbeat_age_s: float | None
    restarts: int
    rss_mb: float
    cuda_visible_devices: str | None


class QueueCounts(msgspec.Struct):
    queued: int
    processing: int
    completed: int
    error: int
    cancelled: int
    max_queue: int


class ModelInfo(msgspec.Struct):
    name: str
    adapter: str
    device: str
    vram_mb: int
    max_batch_size: int
    max_delay_ms: float
    batch_policy: str
    loaded_on: list[str]
    queued: int
    failed: str | None  # the message of its last failed load (cleared by a load that succeeds)
    state: str  # unloaded | loading | ready | failed (`scheduler.core.readiness`)
    preload: bool  # kept loaded from the start; `/readyz` waits for it
    ready_on: list[str]  # the workers that have it loaded (`loaded_on` counts loads under way too)


class StageInfo(msgspec.Struct):
    name: str
    model: str
    device: str
    timeout_s: float | None


class PipelineInfo(msgspec.Struct):
    name: str
    description: str
    stages: list[StageInfo]
    cost_usd: float  # what its ended jobs cost, in all


class HostStatus(msgspec.Struct):
    """One daemon of the cluster as its last heartbeat said (`scheduler.cluster`)."""

    host: str
    heartbeat_age_s: float
    live: bool
    models_loaded: list[str]
    models_fit: list[str]
    free_vram_mb: list[float]
    room: int
    workers: int


class QueueDepth(msgspec.Struct):
    """Jobs of one model and priority cluster-wide: waiting (not claimed) and held (claimed, running)."""

    model: str
    priority: str  # high | normal | low | requeued
    waiting: int
    held: int


class ClusterStatus(msgspec.Struct):
    """The cluster as this daemon sees it: its identity, every host, the queue per model and priority."""

    name: str
    host: str
    redis_up: bool
    hosts: list[HostStatus]
    queues: list[QueueDepth]


class SystemStatus(msgspec.Struct):
    """`GET /system/status`: the scheduler, each GPU, each worker, the render process, the queue,
    the models and pipelines, what jobs cost, the CPU stage pool, the journal."""

    scheduler: SchedulerInfo
    gpu: list[GpuStatus]
    workers: list[WorkerStatus]
    render: dict[str, Any] | None
    queue: QueueCounts
    models: list[ModelInfo]
    pipelines: list[PipelineInfo]
    costs: CostTotals
    cpu_pool: PoolStatus
    journal: JournalStatus | None = None  # None: no journal
    cluster: ClusterStatus | None = None  # None: one host (no `cluster_url`)


class StatusBuilder:
    """registry, table, workers, inventory: what it reads; scheduler_info: the scheduler's own line;
    render_status: the render process's section (None when rendering is off); max_queue: from the settings;
    readiness: each model's state; journal: the journal, when there is one."""

    def __init__(
        self,
        registry: ModelRegistry,
        table: JobTable,
        workers: Mapping[str, Worker],
        inventory: Inventory,
        scheduler_info: Callable[[], SchedulerInfo],
        render_status: Callable[[], dict[str, Any] | None],
        pipelines: Pipelines,
        costs: CostLedger,
        cpu_pool: CpuPool,
        *,
        max_queue: int,
        readiness: Readiness,
        journal: JobJournal | None = None,
    ) -> None:
        self.readiness = readiness
        self.pipelines = pipelines
        self.costs = costs
        self.cpu_pool = cpu_pool
        self.registry = registry
        self.table = table
        self.workers = workers
        self.inventory = inventory
        self.scheduler_info = scheduler_info
        self.render_status = render_status
        self.max_queue = max_queue
        self.journal = journal
        self.cluster: Callable[[], ClusterStatus] | None = None  # set in cluster mode

    def build(self) -> SystemStatus:
        now = time.monotonic()
        return SystemStatus(
            scheduler=self.scheduler_info(),
            gpu=self.gpus(),
            workers=[worker_status(worker, now) for worker in self.workers.values()],
            render=self.render_status(),
            queue=QueueCounts(**self.table.counts(), max_queue=self.max_queue),
            models=self.models(),
            pipelines=self.pipeline_infos(),
            costs=self.costs.totals(),
            cpu_pool=self.cpu_pool.status(),
            journal=self.journal.status() if self.journal is not None else None,
            cluster=self.cluster() if self.cluster is not None else None,
        )

    def gpus(self) -> list[GpuStatus]:
        ledger_by_gpu: dict[int, float] = {}
        for worker in self.workers.values():
            if worker.gpu_index is not None:
                ledger_by_gpu[worker.gpu_index] = ledger_by_gpu.get(worker.gpu_index, 0.0) + sum(
                    loaded.size_mb for loaded in worker.models.values()
                )
        return [
            GpuStatus(
                id=gpu.index,
                index=gpu.index,
                name=gpu.name,
                simulated=gpu.simulated,
                total_mb=round(gpu.total_bytes / MIB, 1),
                used_mb=round(gpu.used_bytes / MIB, 1),
                free_mb=round(gpu.free_bytes / MIB, 1),
                utilization_pct=gpu.utilization_pct,
                reserve_mb=self.inventory.reserve_mb,
                ledger_used_mb=round(ledger_by_gpu.get(gpu.index, 0.0), 1),
                workers=[w.worker_id for w in self.workers.values() if w.gpu_index == gpu.index],
                memory_utilization=round(gpu.used_bytes / gpu.total_bytes, 4) if gpu.total_bytes else 0.0,
                uuid=gpu.uuid,
                nvml_index=gpu.nvml_index,
            )
            for gpu in self.inventory.current()
        ]

    def pipeline_infos(self) -> list[PipelineInfo]:
        models = self.registry.models
        return [
            PipelineInfo(
                name=pipeline.name,
                description=pipeline.description,
                stages=[
                    StageInfo(
                        stage.name,
                        stage.model,
                        models[stage.model].spec.device if stage.model in models else "unregistered",
                        stage.timeout_s,
                    )
                    for stage in pipeline.stages
                ],
                cost_usd=self.costs.by_pipeline.get(pipeline.name, 0.0),
            )
            for pipeline in self.pipelines.pipelines.values()
        ]

    def models(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                name=name,
                adapter=model.spec.adapter,
                device=model.spec.device,
                vram_mb=model.spec.vram_mb,
                max_batch_size=model.spec.max_batch_size,
                max_delay_ms=model.spec.max_delay_ms,
                batch_policy=model.spec.batch_policy,
                loaded_on=[w.worker_id for w in self.workers.values() if name in w.models],
                queued=self.table.queued_count_by_model.get(name, 0),
                failed=model.failed_error,
                state=readiness.state.value,
                preload=readiness.preload,
                ready_on=readiness.ready_on,
            )
            for name, model in self.registry.models.items()
            for readiness in [self.readiness.state_of(model)]
        ]


def worker_status(worker: Worker, now: float) -> WorkerStatus:
    last_heartbeat = worker.watch.last_heartbeat
    return WorkerStatus(
        worker_id=worker.worker_id,
        pid=worker.pid,
        device=worker.device_label,
        gpu_index=worker.gpu_index,
        state=worker.state.value,
        alive=worker.state is not WorkerState.DEAD and worker.alive(),
        loaded_models=[
            LoadedModelStatus(
                model=name,
                ledger_mb=round(loaded.size_mb, 1),
                measured_mb=round(worker.measured_bytes.get(name, 0) / MIB, 1),
                loading=loaded.loading,
                jobs_in_flight=loaded.in_flight,
                idle_s=round(now - loaded.last_used, 3),
            )
            for name, loaded in worker.models.items()
        ],
        jobs_in_flight=len(worker.in_flight),
        processing_jobs=list(worker.in_flight),
        jobs_done=worker.jobs_done,
        last_heartbeat=worker.last_heartbeat_wall,
        heartbeat_age_s=round(now - last_heartbeat, 3) if last_heartbeat else None,
        restarts=worker.restarts,
        rss_mb=round(worker.rss_bytes / MIB, 1),
        cuda_visible_devices=worker.cuda_visible_devices,
    )


def keyed_by_worker(status: dict[str, Any]) -> dict[str, Any]:
    """The system status as plain values with `workers` keyed by worker id (what the seed API's
    `await scheduler.get_system_status()` gives); each worker keeps its `worker_id` too."""
    return {**status, "workers": {worker["worker_id"]: worker for worker in status["workers"]}}
