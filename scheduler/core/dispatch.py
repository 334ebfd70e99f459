"""`Dispatcher`: the dispatch pass, which sends queued jobs to workers as placement decides.

The pass runs at most once per event-loop turn (`schedule` coalesces the requests for it). Jobs of
a model run outside the workers go to their executor. Suspects (jobs that were on a worker that
died) go first, each alone, to a worker with nothing else in flight; where none is idle, the least
busy one that could run it is reserved so that it drains. Then, model by model (the one whose head
job should run first first), placement picks a worker and the pass sends as many jobs as that
worker's pipeline has room for (`PIPELINE_BATCHES` batches of items in all) in one
`RunJobs`, until placement says wait. A job is one item unless its adapter splits it (`items`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from scheduler.core.devices import Inventory
from scheduler.core.endings import JobEndings
from scheduler.core.jobs import Job, JobStatus
from scheduler.core.models import ModelRegistry, RegisteredModel
from scheduler.core.placement import (
    Assign,
    GpuCapacity,
    LoadedModel,
    ModelDemand,
    Reject,
    Slot,
    eligible_workers,
    place,
)
from scheduler.core.ports import JobExecutor
from scheduler.core.table import JobTable
from scheduler.core.workers import Worker
from scheduler.errors import ErrorKind
from workers import protocol as m
from workers.logs import about_job

log = logging.getLogger("modelsched.scheduler")

PIPELINE_BATCHES = 2  # a worker holds at most this many batches of items: the one it runs, the next ready


def job_items(adapter: Any, job: Job, cap: int) -> int:
    """How much of a worker's pipeline a job takes: 1 item, or as many as its adapter's `items`
    splits it into, counted up to one batch (`cap`): the worker splits a larger job across batches
    and runs the small jobs sent after it in between, so they must not wait in the queue behind it."""
    split = getattr(adapter, "items", None)
    if split is None:
        return 1
    try:
        return min(cap, max(1, len(split(job.inputs))))
    except Exception:  # the worker reports the error; for the pipeline it counts as one
        return 1


def demand_of(registered: RegisteredModel) -> ModelDemand:
    spec = registered.spec
    return ModelDemand(spec.name, spec.vram_mb, spec.device)


class Dispatcher:
    """registry, table: models and jobs; endings: fails jobs placement rejects; workers: the live
    worker records by id; inventory: the cards; executors: models run outside the workers;
    max_models_per_worker: from the settings."""

    def __init__(
        self,
        registry: ModelRegistry,
        table: JobTable,
        endings: JobEndings,
        workers: Mapping[str, Worker],
        inventory: Inventory,
        executors: Mapping[str, JobExecutor],
        *,
        max_models_per_worker: int,
    ) -> None:
        self.registry = registry
        self.table = table
        self.endings = endings
        self.workers = workers
        self.inventory = inventory
        self.executors = executors
        self.max_models_per_worker = max_models_per_worker
        self.on_stage_started: Callable[[Job], None] | None = None  # a pipeline stage's job was sent
        self.loop: asyncio.AbstractEventLoop | None = None
        self.enabled = False
        self._scheduled = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.enabled = True

    def stop(self) -> None:
        """Nothing more is sent to a worker from now on (the shutdown has begun)."""
        self.enabled = False

    def schedule(self) -> None:
        """Run the pass soon (once, however often this is called in one loop turn)."""
        if not self._scheduled and self.enabled and self.loop is not None:
            self._scheduled = True
            self.loop.call_soon(self.dispatch)

    def dispatch(self) -> None:
        self._scheduled = False
        if not self.enabled:
            return
        for executor in self.executors.values():
            executor.dispatch()
        # Dead workers stay in the view (not ready, nothing loaded): one awaiting its respawn means
        # "wait", not "this daemon has no worker for the model".
        workers = list(self.workers.values())
        capacities = self.inventory.capacities()
        if self.table.suspects:
            self._dispatch_suspects(workers, capacities)
        for model in self.table.queued_models():
            registered = self.registry.models.get(model)
            if registered is None:
                self._fail_queued(model, f"model {model!r} is no longer registered", ErrorKind.MODEL)
                continue
            self._dispatch_model(registered, workers, capacities)
        self.endings.events.changed()  # listeners of queued and started jobs (nothing when none listens)

    def _dispatch_model(
        self, registered: RegisteredModel, workers: list[Worker], capacities: list[GpuCapacity]
    ) -> None:
        spec = registered.spec
        demand = demand_of(registered)
        pipeline_items = spec.max_batch_size * PIPELINE_BATCHES
        while self.table.peek(spec.name) is not None:
            decision = place(
                demand,
                workers,
                capacities,
                max_models_per_worker=self.max_models_per_worker,
                pipeline_items=pipeline_items,
            )
            if isinstance(decision, Reject):
                self._fail_queued(spec.name, decision.message, ErrorKind.PLACEMENT)
                return
            if not isinstance(decision, Assign):
                return
            worker = self._prepare(decision, registered)
            room = max(1, pipeline_items - worker.outstanding_items)
            self.send_jobs(worker, spec.name, self._take_items(registered, room))

    def _prepare(self, decision: Assign, registered: RegisteredModel) -> Worker:
        """Evict what the decision evicts; count the model as loading on the chosen worker."""
        worker = self.workers[decision.worker_id]
        for evict_worker_id, evict_model in decision.evict:
            self.unload_from(self.workers[evict_worker_id], evict_model)
        if decision.load:
            worker.models[registered.spec.name] = LoadedModel(registered.spec.vram_mb, time.monotonic())
        return worker

    def _fail_queued(self, model: str, error: str, kind: ErrorKind) -> None:
        jobs = self.table.pop_queued(model, self.table.queued_count_by_model.get(model, 0))
        self.endings.fail(jobs, error, kind)

    def _take_items(self, registered: RegisteredModel, room: int) -> list[Job]:
        """Queued jobs worth up to `room` items (at least one job)."""
        model = registered.spec.name
        split = getattr(registered.adapter, "items", None)
        if split is None:
            return self.table.pop_queued(model, room)
        taken: list[Job] = []
        while room > 0:
            jobs = self.table.pop_queued(model, 1)
            if not jobs:
                break
            taken += jobs
            room -= job_items(registered.adapter, jobs[0], registered.spec.max_batch_size)
        return taken

    def send_jobs(self, worker: Worker, model: str, jobs: list[Job]) -> None:
        if not jobs:
            return
        loaded = worker.models[model]
        loaded.in_flight += len(jobs)
        loaded.last_used = worker.last_active = time.monotonic()
        device, worker_id, in_flight = worker.device_label, worker.worker_id, worker.in_flight
        registered = self.registry.models[model]
        counted = getattr(registered.adapter, "items", None) is not None  # else 1 item a job
        mark_processing, on_stage_started = self.table.mark_processing, self.on_stage_started
        for job in jobs:
            mark_processing(job, worker_id, device)
            items = job_items(registered.adapter, job, registered.spec.max_batch_size) if counted else 1
            in_flight[job.id] = items
            worker.outstanding_items += items
            if job.parent_id is not None and on_stage_started is not None:
                on_stage_started(job)
        worker.send(m.RunJobs(model, [m.JobItem(job.id, job.inputs) for job in jobs]))

    def unload_from(self, worker: Worker, model: str) -> None:
        worker.models.pop(model, None)
        worker.measured_bytes.pop(model, None)
        worker.send(m.UnloadModel(model))
        log.info("unloading %s from %s", model, worker.worker_id)

    # ---- suspects run alone --------------------------------------------------------------------

    def _dispatch_suspects(self, workers: list[Worker], capacities: list[GpuCapacity]) -> None:
        """Send each suspect alone to an idle worker; where none is idle, reserve the least busy one
        that could run it, so that it drains (it is not `ready` for other jobs meanwhile)."""
        for worker in workers:
            worker.reserved_for = None
        for job in self.table.waiting_suspects():
            registered = self.registry.models.get(job.model)
            if registered is None:
                self.endings.finish(
                    job,
                    JobStatus.ERROR,
                    error=f"model {job.model!r} is no longer registered",
                    error_kind=ErrorKind.MODEL,
                )
                continue
            demand = demand_of(registered)
            decision = place(
                demand,
                workers,
                capacities,
                max_models_per_worker=self.max_models_per_worker,
                pipeline_items=1,
            )
            if isinstance(decision, Reject):
                self.endings.finish(
                    job, JobStatus.ERROR, error=decision.message, error_kind=ErrorKind.PLACEMENT
                )
                continue
            target = self.workers[decision.worker_id] if isinstance(decision, Assign) else None
            if isinstance(decision, Assign) and target is not None and target.outstanding_items == 0:
                self._prepare(decision, registered)
                self.send_jobs(target, job.model, [job])
                target.solo_job_id = job.id
                log.info(
                    "job (attempts %d) runs alone on %s",
                    job.attempts,
                    target.worker_id,
                    extra=about_job(job.id),
                )
                continue
            if target is None:
                candidates = eligible_workers(demand, [worker for worker in workers if worker.ready])
                if isinstance(candidates, Reject) or not candidates:
                    continue
                target = self.workers[min(candidates, key=_busyness).worker_id]
            target.reserved_for = job.id

    # ---- explicit loads ------------------------------------------------------------------------

    def place_load(self, registered: RegisteredModel) -> Worker | str | Reject:
        """Where `load_model` loads a model now: the worker (the load is counted and sent), the reason
        to wait, or why it can never load."""
        decision = place(
            demand_of(registered),
            list(self.workers.values()),
            self.inventory.capacities(),
            max_models_per_worker=self.max_models_per_worker,
            pipeline_items=1,
        )
        if isinstance(decision, Reject):
            return decision
        if not isinstance(decision, Assign):
            return decision.reason
        worker = self._prepare(decision, registered)  # counts the model as loading there
        worker.models.setdefault(registered.spec.name, LoadedModel(registered.spec.vram_mb, time.monotonic()))
        worker.send(m.LoadModel(registered.spec.name))
        return worker


def _busyness(worker: Slot) -> tuple[int, str]:
    return (worker.outstanding_items, worker.worker_id)
