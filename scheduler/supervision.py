"""Supervision of the worker pool: the part of `Scheduler` (a mixin) that keeps workers alive and
accounts for every job a dead worker held.

Each tick converges the pool toward the wanted state (gunicorn's arbiter): a worker that missed its
start deadline or its heartbeats is killed, a dead one is respawned (with a back-off while it keeps
failing to boot), jobs past their deadline end as `timeout`. A dead worker is noticed within a
second by the loop watching its process sentinel; the jobs it held go back to the queue.

Poison jobs. Every job in flight on a worker that dies has `attempts` raised, and becomes a suspect:
a suspect is dispatched alone, to a worker with nothing else in flight, and that worker takes no
other job until the suspect ends. So a job that shared a worker with a poison job is blamed once at
most; after that only a worker death while it runs alone counts against it, and only a job that
really kills workers reaches `max_attempts` and fails as a poison job.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from scheduler.core.jobs import ENDED, Job, JobStatus
from scheduler.core.placement import Assign, GpuCapacity, LoadedModel, ModelDemand, Reject, eligible_workers, place
from scheduler.pool.workers import ASYNC, ProcessWorker, ThreadWorker, WorkerHandle
from scheduler.pool.supervisor import respawn_delay
from workers.process import EXIT_BOOT_FAILED, WorkerConfig

if TYPE_CHECKING:
    from scheduler.core.devices import GpuInfo
    from scheduler.core.models import ModelRegistry
    from scheduler.settings import Settings
    from scheduler.core.table import JobTable

log = logging.getLogger("modelsched.scheduler")

TICK_S = 0.1
RETENTION_EVERY_S = 60.0


class Supervision:
    """Worker supervision for `Scheduler`; uses the scheduler's table, workers and settings."""

    settings: Settings
    scheduler_type: str
    registry: ModelRegistry
    table: JobTable
    workers: dict[str, WorkerHandle]
    gpus: list[GpuInfo]
    respawn_at: dict[str, float]
    boot_failures: dict[str, int]
    loop: asyncio.AbstractEventLoop | None
    running: bool
    journal: Any
    _deadlines: list[tuple[float, int, str]]
    _last_retention: float

    if TYPE_CHECKING:  # provided by Scheduler

        def _finish(self, job: Job, status: JobStatus, result: Any = None, error: str | None = None,
                    error_kind: str | None = None) -> asyncio.Future[None] | None: ...

        def _schedule_dispatch(self) -> None: ...

        def _send_jobs(self, worker: WorkerHandle, model: str, jobs: list[Job]) -> None: ...

        def _unload_from(self, worker: WorkerHandle, model: str) -> None: ...

        def _on_worker_message(self, worker: WorkerHandle, data: bytes) -> None: ...

    # ---- workers coming and going --------------------------------------------------------------

    def _spawn(self, worker_id: str, gpu_index: int | None, restarts: int) -> WorkerHandle:
        assert self.loop is not None
        simulated = gpu_index is not None and any(gpu.simulated for gpu in self.gpus)
        if self.scheduler_type == ASYNC:
            worker: WorkerHandle = ThreadWorker(worker_id, None, "cpu (in process)", restarts=restarts)
            worker.start_thread(
                self.registry.specs(), self.settings.heartbeat_interval_s, self.loop,
                self._on_worker_message, self._on_worker_exit, "adaptive",
            )
        else:
            label = "cpu" if gpu_index is None else (f"sim-gpu{gpu_index}" if simulated else f"cuda:{gpu_index}")
            process_worker = ProcessWorker(worker_id, gpu_index, label, restarts=restarts)
            config = WorkerConfig(
                worker_id=worker_id, parent_pid=os.getpid(), gpu_index=gpu_index, simulated_gpu=simulated,
                heartbeat_interval_s=self.settings.heartbeat_interval_s,
                torch_threads=self.settings.torch_threads, log_level=self.settings.log_level.upper(),
                specs=list(self.registry.specs()),
            )
            process_worker.start(config, self.loop, self._on_worker_message, self._on_worker_exit)
            worker = process_worker
        self.workers[worker_id] = worker
        return worker

    def _on_worker_exit(self, worker: WorkerHandle) -> None:
        if worker.state == "dead":
            return
        was = worker.state
        worker.state = "dead"
        if isinstance(worker, ProcessWorker):
            worker.reap()
        if self.running and was != "stopping":
            log.warning(
                "worker %s (pid %s) exited (%s) while %s; %d job(s) in flight%s",
                worker.worker_id, worker.pid,
                "exit code not known yet" if worker.exit_code is None else f"exit code {worker.exit_code}",
                was, len(worker.in_flight),
                f" (job {worker.solo_job_id} alone)" if worker.solo_job_id else "",
            )
        self._requeue_in_flight(worker, penalize=not worker.no_penalty and was != "stopping")
        worker.close()
        if self.running:
            booted = was not in ("starting",) and worker.exit_code != EXIT_BOOT_FAILED
            self.boot_failures[worker.worker_id] = 0 if booted else self.boot_failures.get(worker.worker_id, 0) + 1
            self.respawn_at[worker.worker_id] = time.monotonic() + respawn_delay(
                self.boot_failures[worker.worker_id]
            )
        self._schedule_dispatch()

    def _requeue_in_flight(self, worker: WorkerHandle, penalize: bool) -> None:
        """The worker is gone: its jobs go back to the queue (as suspects when `penalize`)."""
        for job_id in list(worker.in_flight):
            job = self.table.get(job_id)
            if job is None or job.status is not JobStatus.PROCESSING or job.worker_id != worker.worker_id:
                continue
            if penalize and job.attempts >= self.settings.max_attempts:
                self._finish(
                    job, JobStatus.ERROR, error_kind="poison",
                    error=f"poison job: {job.attempts} worker process(es) died while running it, the last "
                          f"time with no other job on the worker (max_attempts {self.settings.max_attempts})",
                )
                continue
            self.table.requeue(job, penalize=penalize)
            if penalize and self.journal is not None:
                self.journal.record_attempts(job)
        worker.in_flight.clear()
        worker.outstanding_items = 0
        worker.models.clear()
        worker.solo_job_id = None
        worker.reserved_for = None

    # ---- suspects run alone --------------------------------------------------------------------

    def _dispatch_suspects(self, workers: list[WorkerHandle], capacities: list[GpuCapacity]) -> None:
        """Send each suspect alone to an idle worker; where none is idle, reserve the least busy one
        that could run it, so that it drains (it is not `ready` for other jobs meanwhile)."""
        for worker in workers:
            worker.reserved_for = None
        for job in self.table.waiting_suspects():
            registered = self.registry.models.get(job.model)
            if registered is None:
                self._finish(job, JobStatus.ERROR, error=f"model {job.model!r} is no longer registered",
                             error_kind="model")
                continue
            spec = registered.spec
            demand = ModelDemand(job.model, spec.vram_mb, spec.device)
            decision = place(demand, workers, capacities, max_models_per_worker=self.settings.max_models_per_worker,
                             pipeline_items=1)
            if isinstance(decision, Reject):
                self._finish(job, JobStatus.ERROR, error=decision.message, error_kind="placement")
                continue
            target = self.workers[decision.worker_id] if isinstance(decision, Assign) else None
            if isinstance(decision, Assign) and target is not None and target.outstanding_items == 0:
                for evict_worker_id, evict_model in decision.evict:
                    self._unload_from(self.workers[evict_worker_id], evict_model)
                if decision.load:
                    target.models[job.model] = LoadedModel(spec.vram_mb, time.monotonic())
                self._send_jobs(target, job.model, [job])
                target.solo_job_id = job.id
                log.info("job %s (attempts %d) runs alone on %s", job.id, job.attempts, target.worker_id)
                continue
            if target is None:
                candidates = eligible_workers(demand, [worker for worker in workers if worker.ready])
                if isinstance(candidates, Reject) or not candidates:
                    continue
                target = min(candidates, key=lambda worker: (worker.outstanding_items, worker.worker_id))
            target.reserved_for = job.id

    # ---- the tick ------------------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        while self.running:
            try:
                self._tick()
            except Exception:
                log.exception("supervision tick failed")
            await asyncio.sleep(TICK_S)

    def _tick(self) -> None:
        now = time.monotonic()
        for worker_id, worker in list(self.workers.items()):
            if worker.state == "starting" and now - worker.started_at > self.settings.worker_start_timeout_s:
                log.error("worker %s did not report ready within %ss; killing it", worker_id,
                          self.settings.worker_start_timeout_s)
                worker.kill()
            elif worker.state == "ready" and now - worker.last_heartbeat > self.settings.heartbeat_timeout_s:
                log.error("worker %s sent no heartbeat for %.1fs; killing pid %s as hung", worker_id,
                          now - worker.last_heartbeat, worker.pid)
                worker.kill()
            elif worker.state == "dead" and now >= self.respawn_at.get(worker_id, 0.0):
                self._spawn(worker_id, worker.gpu_index, worker.restarts + 1)
        self._expire_deadlines(now)
        if now - self._last_retention > RETENTION_EVERY_S:
            self._last_retention = now
            self.table.forget_older_than(time.time() - self.settings.result_retention_s)
            if self.journal is not None:
                self.journal.prune()

    def _expire_deadlines(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, _, job_id = heapq.heappop(self._deadlines)
            job = self.table.get(job_id)
            if job is None or job.status in ENDED or job.deadline != deadline:
                continue
            worker = self.workers.get(job.worker_id or "") if job.status is JobStatus.PROCESSING else None
            self._finish(job, JobStatus.ERROR, error=f"timeout: the job did not end within {job.timeout_s}s",
                         error_kind="timeout")
            if worker is not None and worker.state == "ready" and isinstance(worker, ProcessWorker):
                # Its batch may never return: restart the worker, batch-mates go back without penalty.
                log.warning("job %s timed out on %s; restarting that worker", job_id, worker.worker_id)
                worker.no_penalty = True
                worker.kill()
