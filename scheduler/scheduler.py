"""`Scheduler`: the public Python API, and the event-loop core that owns the job table.

Everything that changes a job runs on the main process's event loop: submissions, worker messages
(read from each worker's pipe with `add_reader`), the dispatch pass (placement, then one `RunJobs`
message per worker with as many jobs as its pipeline has room for) and the supervision tick
(dead or silent workers, timeouts, retention: `scheduler.supervision`). With a journal
(`scheduler.journal.sqlite`, wired in by `scheduler.durability`) a submission is acknowledged once it is
committed, and a job's end is shown once its end record is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import os
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

from workers import protocol as m
from scheduler.core.devices import MIB, GpuInfo, discover_gpus, refresh_usage
from scheduler.durability import Durability
from scheduler.errors import (
    InvalidInputError,
    JobNotFoundError,
    NotRunningError,
    QueueFullError,
    SchedulerError,
)
from scheduler.core.jobs import ENDED, Job, JobRequest, JobStatus, Priority
from scheduler.journal.sqlite import Journal, JournalError, journal_enabled
from scheduler.core.models import ModelRegistry, resolve_spec
from scheduler.core.placement import (
    Assign,
    GpuCapacity,
    LoadedModel,
    ModelDemand,
    Reject,
    place,
)
from scheduler.pool.workers import ASYNC, MULTIPROCESS, ProcessWorker, WorkerHandle
from scheduler.render.executor import RenderJobs
from scheduler.settings import ModelConfig, Settings
from scheduler.supervision import TICK_S, Supervision
from scheduler.pool.supervisor import (
    FAILED_LOAD_BACKOFF_S,
    load_backoff,
    worker_plan,
)
from scheduler.core.table import JobTable

log = logging.getLogger("modelsched.scheduler")

__all__ = ["ASYNC", "MULTIPROCESS", "TICK_S", "JobEndedError", "Scheduler"]
PIPELINE_BATCHES = 2  # batches of work a worker may hold beyond the one it runs


_id_random = random.Random(secrets.token_bytes(32))  # seeded from the OS once: no system call per job


def new_job_id() -> str:
    """32 hex digits: creation time in milliseconds (12), then 80 random bits. Ids sort by creation, so
    the journal's id index grows at its right edge instead of at random places. Ids name jobs; they are
    not secrets (the bearer token guards the API)."""
    return f"{time.time_ns() // 1_000_000:012x}{_id_random.getrandbits(80):020x}"


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


class JobEndedError(SchedulerError):
    """The job already ended; it cannot be cancelled (REST: 409)."""


class Scheduler(Supervision, Durability, RenderJobs):
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        scheduler_type: str = MULTIPROCESS,
        environ: dict[str, str] | None = None,
        vram_scale: float = 1.0,
    ) -> None:
        self.settings = settings or Settings()
        self.scheduler_type = scheduler_type
        self.environ = dict(os.environ if environ is None else environ)
        self.vram_scale = vram_scale
        self.registry = ModelRegistry()
        self.table = JobTable(self.settings.max_finished_in_memory)
        self.workers: dict[str, WorkerHandle] = {}
        for model_config in self.settings.models:
            self.register_model(model_config)
        self._render_setup()
        self.respawn_at: dict[str, float] = {}
        self.boot_failures: dict[str, int] = {}
        self.gpus: list[GpuInfo] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.running = False
        self.accepting = False
        self.started_at: float | None = None
        self._dispatch_scheduled = False
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._deadlines: list[tuple[float, int, str]] = []
        self._tick_task: asyncio.Task[None] | None = None
        self._last_retention = 0.0
        # observers: the REST layer's metrics subscribe here
        self.on_job_end: list[Callable[[Job], None]] = []
        self.on_batch: list[Callable[[str, str, int, float], None]] = []
        self.journal: Journal | None = None
        # jobs that ended but whose end record is not committed yet -> the status shown meanwhile
        self._unsettled: dict[str, JobStatus] = {}
        self.load_failures: dict[str, int] = {}  # model -> consecutive failed loads
        self.load_backoff_base_s = FAILED_LOAD_BACKOFF_S

    # ---- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.running:
            return
        self.loop = asyncio.get_running_loop()
        self.gpus = discover_gpus(self.environ) if self.scheduler_type == MULTIPROCESS else []
        if self.journal is None and journal_enabled(self.settings.journal_path):
            await self._open_journal()
        self.running = True
        self.accepting = True
        self.started_at = time.time()
        plan = worker_plan(
            [gpu.index for gpu in self.gpus], self.settings.max_workers_per_gpu, self.settings.cpu_workers,
            needs_cpu_workers=self._needs_cpu_workers(),
        )
        for worker_id, gpu_index in plan:
            self._spawn(worker_id, gpu_index, restarts=0)
        self._render_start()
        log.info(
            "scheduler started: %d GPU(s)%s, %d worker(s), models: %s",
            len(self.gpus), " (simulated)" if any(gpu.simulated for gpu in self.gpus) else "",
            len(plan), ", ".join(self.registry.models) or "none",
        )
        self._tick_task = asyncio.create_task(self._tick_forever(), name="modelsched-supervisor")

    def _needs_cpu_workers(self) -> bool:
        return not self.gpus or any(model.spec.device == "cpu" for model in self.registry.models.values())

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Until every worker has reported ready (or `timeout`, then TimeoutError)."""
        deadline = time.monotonic() + timeout
        while not self.workers or any(worker.state != "ready" for worker in self.workers.values()):
            if time.monotonic() > deadline:
                states = {wid: worker.state for wid, worker in self.workers.items()}
                raise TimeoutError(f"workers not ready after {timeout}s: {states}")
            await asyncio.sleep(0.02)

    @property
    def ready(self) -> bool:
        return self.accepting and any(worker.state == "ready" for worker in self.workers.values())

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting jobs, let workers finish within the grace period, then end every worker."""
        if not self.running:
            return
        self.accepting = False
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        deadline = time.monotonic() + grace
        while self.table.count_by_status[JobStatus.PROCESSING] and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.running = False
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
        for worker in self.workers.values():
            if worker.state == "dead":
                continue
            worker.state = "stopping"
            worker.no_penalty = True  # stopping is not the jobs' fault
            if worker.in_flight and isinstance(worker, ProcessWorker):
                # Past the grace: what it still holds stays queued (in the journal too) for the next start.
                log.warning("worker %s still holds %d job(s) after the grace period; killing pid %s",
                            worker.worker_id, len(worker.in_flight), worker.pid)
                worker.kill()
                continue
            with contextlib.suppress(OSError, ValueError):
                worker.send(m.Shutdown())
        stop_deadline = time.monotonic() + 5.0
        while any(worker.alive() for worker in self.workers.values()) and time.monotonic() < stop_deadline:
            await asyncio.sleep(0.02)
        for worker in self.workers.values():
            if worker.alive():
                log.warning("worker %s did not stop in time; killing pid %s", worker.worker_id, worker.pid)
                worker.kill()
        for worker in self.workers.values():
            if isinstance(worker, ProcessWorker) and worker.process is not None:
                worker.process.join(timeout=5)
            worker.close()
        await self._render_stop()
        # Jobs still queued or in flight stay queued (the journal keeps them for the next start).
        for job in list(self.table.jobs.values()):
            if job.status is JobStatus.PROCESSING:
                self.table.requeue(job, penalize=False)
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_result(None)
        self._waiters.clear()
        if self.journal is not None:
            await self.journal.close()
            self.journal = None
        self._unsettled.clear()
        log.info("scheduler stopped")

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ---- models --------------------------------------------------------------------------------

    def register_model(self, config: ModelConfig | dict[str, Any]) -> m.ModelSpec:
        spec, adapter = resolve_spec(config, self.vram_scale)
        replacing = spec.name in self.registry
        self.registry.register(spec, adapter)
        for worker in self.workers.values():
            if worker.state in ("starting", "ready"):
                worker.send(m.RegisterModel(spec))
                if replacing and spec.name in worker.models:
                    self._unload_from(worker, spec.name)
        return spec

    async def load_model(self, name: str) -> list[str]:
        """Load `name` now, where placement would put its first job; returns the worker ids."""
        registered = self.registry.get(name)
        holders = [wid for wid, worker in self.workers.items() if name in worker.models]
        if holders:
            return holders
        decision = place(
            ModelDemand(name, registered.spec.vram_mb, registered.spec.device), list(self.workers.values()),
            self._capacities(), max_models_per_worker=self.settings.max_models_per_worker, pipeline_items=1,
        )
        if isinstance(decision, Reject):
            raise SchedulerError(decision.message)
        if not isinstance(decision, Assign):
            raise SchedulerError(f"cannot load {name} now: {decision.reason}")
        worker = self.workers[decision.worker_id]
        for evict_worker_id, evict_model in decision.evict:
            self._unload_from(self.workers[evict_worker_id], evict_model)
        worker.models[name] = LoadedModel(registered.spec.vram_mb, time.monotonic())
        worker.send(m.LoadModel(name))
        return [worker.worker_id]

    async def unload_model(self, name: str) -> list[str]:
        self.registry.get(name)
        unloaded = []
        for worker in self.workers.values():
            loaded = worker.models.get(name)
            if loaded is not None and loaded.in_flight == 0:
                self._unload_from(worker, name)
                unloaded.append(worker.worker_id)
        return unloaded

    def _unload_from(self, worker: WorkerHandle, model: str) -> None:
        worker.models.pop(model, None)
        worker.measured_bytes.pop(model, None)
        worker.send(m.UnloadModel(model))
        log.info("unloading %s from %s", model, worker.worker_id)

    # ---- jobs ----------------------------------------------------------------------------------

    async def schedule_job(self, request: JobRequest) -> str:
        """Validate, record (and journal) the job; returns its id once it is safe."""
        job, created = self._admit(request)
        if created and self.journal is not None:
            await self.journal.record_submitted(job)
        return job.id

    def submit(self, request: JobRequest) -> str:
        """`schedule_job` without waiting for the journal: for callers on the loop that batch their own."""
        job, created = self._admit(request)
        if created and self.journal is not None:
            self.journal.record_submitted_nowait(job)
        return job.id

    def _admit(self, request: JobRequest) -> tuple[Job, bool]:
        if not self.accepting:
            raise NotRunningError("the scheduler is not accepting jobs (not started, or shutting down)")
        if request.idempotency_key:
            existing_id = self.table.by_idempotency_key.get(request.idempotency_key)
            if existing_id is not None:
                return self.table.jobs[existing_id], False
            if self.journal is not None:  # ended and no longer in memory (or before a restart)
                ended = self.journal.find_by_key(request.idempotency_key)
                if ended is not None:
                    return ended, False
        model_name = request.model_name
        registered = self.registry.validate(model_name, request.inputs)
        self._render_admission_check(model_name)
        try:
            priority = Priority.parse(request.priority)
        except ValueError as exc:
            raise InvalidInputError(str(exc), field="priority") from None
        timeout_s = request.timeout_s if request.timeout_s is not None else (self.settings.default_timeout_s or None)
        if timeout_s is not None and (not math.isfinite(timeout_s) or timeout_s <= 0):
            raise InvalidInputError("timeout_s must be a positive number of seconds", field="timeout_s")
        if self.table.count_by_status[JobStatus.QUEUED] >= self.settings.max_queue:
            raise QueueFullError(f"the queue is full ({self.settings.max_queue} jobs waiting); retry later")
        job = Job(
            id=new_job_id(), model=model_name, inputs=request.inputs, priority=priority,
            timeout_s=timeout_s, idempotency_key=request.idempotency_key,
        )
        self.table.add(job)
        now = time.monotonic()
        if registered.failed_error is not None and now < registered.failed_until:
            self._finish(job, JobStatus.ERROR, error=f"model {model_name!r} failed to load: {registered.failed_error}",
                         error_kind="load")
            return job, True
        if timeout_s is not None:
            job.deadline = now + timeout_s
            heapq.heappush(self._deadlines, (job.deadline, job.seq, job.id))
        self._schedule_dispatch()
        return job, True

    def get_job(self, job_id: str) -> Job:
        job = self.table.get(job_id)
        if job is None and self.journal is not None:
            job = self.journal.lookup(job_id)  # ended, and no longer in memory (or before a restart)
        if job is None:
            raise JobNotFoundError(f"no job with id {job_id!r}")
        return job

    def get_job_status(self, job_id: str) -> dict[str, Any]:
        return self._view(self.get_job(job_id))

    async def wait_for(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The job's status once it has ended, or as it stands when `timeout` seconds have passed."""
        job = self.get_job(job_id)
        if not self._settled(job):
            assert self.loop is not None
            future: asyncio.Future[None] = self.loop.create_future()
            self._waiters.setdefault(job_id, []).append(future)
            try:
                await asyncio.wait_for(future, timeout)
            except TimeoutError:
                pass
            finally:
                waiters = self._waiters.get(job_id)
                if waiters and future in waiters:
                    waiters.remove(future)
                    if not waiters:
                        del self._waiters[job_id]
        return self._view(job)

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        job = self.get_job(job_id)
        if job.status in ENDED:
            raise JobEndedError(f"job {job_id} already ended ({job.status.value})")
        # A running job's result, if it comes, is dropped: its worker keeps the slot until then.
        durable = self._finish(job, JobStatus.CANCELLED, error="cancelled by request", error_kind="cancelled")
        if durable is not None:  # answer once the cancellation is committed: a restart will not run it
            with contextlib.suppress(JournalError):
                await durable
        return self._view(job)

    def list_jobs(self, status: str | None = None, model: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return [self._view(job) for job in self.table.recent(status, model, limit)]

    def _finish(self, job: Job, status: JobStatus, result: Any = None, error: str | None = None,
                error_kind: str | None = None) -> asyncio.Future[None] | None:
        """End the job; with a journal, returns the future of the commit that makes the end durable."""
        before = job.status
        self.table.finish(job, status, result, error, error_kind)
        for observer in self.on_job_end:
            observer(job)
        if self.journal is not None:
            try:
                future = self.journal.record_ended(job)
            except JournalError as exc:  # closed under a late end (stop() is under way): nothing to wait for
                log.warning("job %s ended after the journal closed; its end is not recorded: %s", job.id, exc)
            else:
                # Waiters wake when the end record is committed (`_on_ends_committed`).
                self._unsettled[job.id] = before
                return future
        self._wake(job.id)
        return None

    # ---- dispatch ------------------------------------------------------------------------------

    def _schedule_dispatch(self) -> None:
        if not self._dispatch_scheduled and self.loop is not None and self.running:
            self._dispatch_scheduled = True
            self.loop.call_soon(self._dispatch)

    def _capacities(self) -> list[GpuCapacity]:
        return [GpuCapacity(gpu.index, gpu.total_bytes / MIB, self.settings.gpu_reserve_mb) for gpu in self.gpus]

    def _dispatch(self) -> None:
        """Send queued jobs to workers, as placement decides, until placement says wait. Suspects
        (jobs that were on a worker that died) go first, each alone. Nothing is sent once `stop()` began."""
        self._dispatch_scheduled = False
        if not self.running or not self.accepting:
            return
        capacities = self._capacities()
        # Dead workers stay in the view (not ready, nothing loaded): one awaiting its respawn means
        # "wait", not "this daemon has no worker for the model".
        workers = list(self.workers.values())
        self._render_dispatch()
        if self.table.suspects:
            self._dispatch_suspects(workers, capacities)
        for model in self.table.queued_models():
            registered = self.registry.models.get(model)
            if registered is None:
                for job in self.table.pop_queued(model, self.table.queued_count_by_model.get(model, 0)):
                    self._finish(job, JobStatus.ERROR, error=f"model {model!r} is no longer registered")
                continue
            spec = registered.spec
            demand = ModelDemand(model, spec.vram_mb, spec.device)
            pipeline_items = spec.max_batch_size * PIPELINE_BATCHES
            while self.table.peek(model) is not None:
                decision = place(
                    demand, workers, capacities,
                    max_models_per_worker=self.settings.max_models_per_worker, pipeline_items=pipeline_items,
                )
                if isinstance(decision, Reject):
                    for job in self.table.pop_queued(model, self.table.queued_count_by_model[model]):
                        self._finish(job, JobStatus.ERROR, error=decision.message, error_kind="placement")
                    break
                if not isinstance(decision, Assign):
                    break
                worker = self.workers[decision.worker_id]
                for evict_worker_id, evict_model in decision.evict:
                    self._unload_from(self.workers[evict_worker_id], evict_model)
                if decision.load:
                    worker.models[model] = LoadedModel(spec.vram_mb, time.monotonic())
                room = max(1, pipeline_items - worker.outstanding_items)
                self._send_jobs(worker, model, self._take_items(model, room, registered.adapter))

    def _take_items(self, model: str, room: int, adapter: Any) -> list[Job]:
        """Queued jobs worth up to `room` items (at least one job); a job is one item unless its
        adapter splits it (`items`), like a request of many sentences."""
        split = getattr(adapter, "items", None)
        if split is None:
            return self.table.pop_queued(model, room)
        taken: list[Job] = []
        while room > 0:
            jobs = self.table.pop_queued(model, 1)
            if not jobs:
                break
            taken += jobs
            room -= job_items(adapter, jobs[0], self.registry.models[model].spec.max_batch_size)
        return taken

    def _send_jobs(self, worker: WorkerHandle, model: str, jobs: list[Job]) -> None:
        if not jobs:
            return
        loaded = worker.models[model]
        loaded.in_flight += len(jobs)
        loaded.last_used = time.monotonic()
        device = worker.device_label
        registered = self.registry.models[model]
        for job in jobs:
            self.table.mark_processing(job, worker.worker_id, device)
            items = job_items(registered.adapter, job, registered.spec.max_batch_size)
            worker.in_flight[job.id] = items
            worker.outstanding_items += items
        worker.send(m.RunJobs(model, [m.JobItem(job.id, job.inputs) for job in jobs]))

    # ---- worker messages -----------------------------------------------------------------------

    def _on_worker_message(self, worker: WorkerHandle, data: bytes) -> None:
        message = m.decode_from_worker(data)
        if isinstance(message, m.JobResults):
            self._on_results(worker, message)
        elif isinstance(message, m.Heartbeat):
            worker.last_heartbeat = time.monotonic()
            worker.last_heartbeat_wall = message.sent_at
            worker.rss_bytes = message.rss_bytes
        elif isinstance(message, m.Ready):
            worker.state = "ready" if worker.state == "starting" else worker.state
            worker.last_heartbeat = time.monotonic()
            worker.cuda_visible_devices = message.cuda_visible_devices
            log.info("worker %s ready (pid %s, %s)", worker.worker_id, message.pid, worker.device_label)
            self._schedule_dispatch()
        elif isinstance(message, m.ModelLoaded):
            self._on_model_loaded(worker, message)
        elif isinstance(message, m.ModelLoadFailed):
            self._on_model_load_failed(worker, message)
        elif isinstance(message, m.ModelUnloaded):
            self._schedule_dispatch()

    def _on_results(self, worker: WorkerHandle, message: m.JobResults) -> None:
        loaded = worker.models.get(message.model)
        now = time.monotonic()
        for outcome in message.outcomes:
            items = worker.in_flight.pop(outcome.job_id, None)
            if items is None:
                continue
            worker.outstanding_items -= items
            worker.jobs_done += 1
            if loaded is not None:
                loaded.in_flight -= 1
                loaded.last_used = now
            job = self.table.get(outcome.job_id)
            if job is None or job.status is not JobStatus.PROCESSING or job.worker_id != worker.worker_id:
                continue  # cancelled or timed out meanwhile: the result is dropped
            if outcome.error is None:
                self._finish(job, JobStatus.COMPLETED, result=outcome.output)
            else:
                self._finish(job, JobStatus.ERROR, error=outcome.error, error_kind=outcome.error_kind)
        worker.release_solo_if_done()
        for observer in self.on_batch:
            observer(worker.worker_id, message.model, message.batch_size, message.run_s)
        self._schedule_dispatch()

    def _on_model_loaded(self, worker: WorkerHandle, message: m.ModelLoaded) -> None:
        loaded = worker.models.get(message.model)
        worker.measured_bytes[message.model] = message.memory_bytes
        if loaded is not None:
            loaded.loading = False
            gpu = next((gpu for gpu in self.gpus if gpu.index == worker.gpu_index), None)
            if gpu is not None and not gpu.simulated and message.memory_bytes > 0:
                loaded.size_mb = message.memory_bytes / MIB  # measured replaces declared on a real card
        registered = self.registry.models.get(message.model)
        if registered is not None:
            registered.failed_error = None
        self.load_failures.pop(message.model, None)

    def _on_model_load_failed(self, worker: WorkerHandle, message: m.ModelLoadFailed) -> None:
        worker.models.pop(message.model, None)
        failures = self.load_failures[message.model] = self.load_failures.get(message.model, 0) + 1
        backoff_s = load_backoff(failures, self.load_backoff_base_s)
        registered = self.registry.models.get(message.model)
        if registered is not None:
            registered.failed_error = message.error
            registered.failed_until = time.monotonic() + backoff_s
        log.error("model %s failed to load on %s (%d time(s) in a row); its jobs fail for %.1fs: %s",
                  message.model, worker.worker_id, failures, backoff_s, message.error)
        error = f"model {message.model!r} failed to load: {message.error}"
        for job_id in message.job_ids:
            items = worker.in_flight.pop(job_id, None)
            if items is not None:
                worker.outstanding_items -= items
            job = self.table.get(job_id)
            if job is not None and job.status is JobStatus.PROCESSING and job.worker_id == worker.worker_id:
                self._finish(job, JobStatus.ERROR, error=error, error_kind="load")
        worker.release_solo_if_done()
        # Jobs of this model still waiting fail with the same error until the back-off ends.
        for job in self.table.pop_queued(message.model, self.table.queued_count_by_model.get(message.model, 0)):
            self._finish(job, JobStatus.ERROR, error=error, error_kind="load")
        self._schedule_dispatch()

    # ---- status --------------------------------------------------------------------------------

    def get_system_status(self) -> dict[str, Any]:
        now = time.monotonic()
        gpus = refresh_usage(self.gpus)
        ledger_by_gpu: dict[int, float] = {}
        for worker in self.workers.values():
            if worker.gpu_index is not None:
                ledger_by_gpu[worker.gpu_index] = ledger_by_gpu.get(worker.gpu_index, 0.0) + sum(
                    loaded.size_mb for loaded in worker.models.values()
                )
        return {
            "scheduler": {
                "type": self.scheduler_type, "preset": self.settings.preset, "accepting": self.accepting,
                "started_at": self.started_at,
                "uptime_s": (time.time() - self.started_at) if self.started_at else 0.0,
            },
            "gpu": [
                {
                    "index": gpu.index, "name": gpu.name, "simulated": gpu.simulated,
                    "total_mb": round(gpu.total_bytes / MIB, 1), "used_mb": round(gpu.used_bytes / MIB, 1),
                    "free_mb": round(gpu.free_bytes / MIB, 1), "utilization_pct": gpu.utilization_pct,
                    "reserve_mb": self.settings.gpu_reserve_mb,
                    "ledger_used_mb": round(ledger_by_gpu.get(gpu.index, 0.0), 1),
                    "workers": [w.worker_id for w in self.workers.values() if w.gpu_index == gpu.index],
                }
                for gpu in gpus
            ],
            "workers": [self._worker_status(worker, now) for worker in self.workers.values()],
            "render": self._render_status(),
            "queue": {**self.table.counts(), "max_queue": self.settings.max_queue},
            "models": [
                {
                    "name": name, "adapter": model.spec.adapter, "device": model.spec.device,
                    "vram_mb": model.spec.vram_mb, "max_batch_size": model.spec.max_batch_size,
                    "max_delay_ms": model.spec.max_delay_ms,
                    "loaded_on": [w.worker_id for w in self.workers.values() if name in w.models],
                    "queued": self.table.queued_count_by_model.get(name, 0),
                    "failed": model.failed_error,
                }
                for name, model in self.registry.models.items()
            ],
        }

    def _worker_status(self, worker: WorkerHandle, now: float) -> dict[str, Any]:
        return {
            "worker_id": worker.worker_id, "pid": worker.pid, "device": worker.device_label,
            "gpu_index": worker.gpu_index, "state": worker.state,
            "alive": worker.state != "dead" and worker.alive(),
            "loaded_models": [
                {
                    "model": name, "ledger_mb": round(loaded.size_mb, 1),
                    "measured_mb": round(worker.measured_bytes.get(name, 0) / MIB, 1),
                    "loading": loaded.loading, "jobs_in_flight": loaded.in_flight,
                    "idle_s": round(now - loaded.last_used, 3),
                }
                for name, loaded in worker.models.items()
            ],
            "jobs_in_flight": len(worker.in_flight),
            "jobs_done": worker.jobs_done,
            "last_heartbeat": worker.last_heartbeat_wall,
            "heartbeat_age_s": round(now - worker.last_heartbeat, 3) if worker.last_heartbeat else None,
            "restarts": worker.restarts,
            "rss_mb": round(worker.rss_bytes / MIB, 1),
            "cuda_visible_devices": worker.cuda_visible_devices,
        }
