"""`Scheduler`: the main process's public Python API over the parts that `scheduler.assembly` builds.

It starts and stops the workers and the render process, and runs the one supervision tick. What a request goes through,
room by room: `admission` (validated, recorded, journaled) -> the `dispatcher` (placement, then
`RunJobs` to a worker) -> `worker_events` (results) -> `endings` (the job ends, durably) -> the
waiter wakes. See `docs/architecture.md`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import msgspec

from scheduler.assembly import assemble
from scheduler.core.jobs import Job, JobRequest, JobStatus
from scheduler.core.pipelines import Pipeline
from scheduler.core.reads import JobReads, LocalReads
from scheduler.core.status import SchedulerInfo, StatusBuilder, SystemStatus, keyed_by_worker
from scheduler.core.worker_events import BatchObserver
from scheduler.core.workers import Worker
from scheduler.errors import SchedulerError
from scheduler.journal.recovery import queue_again
from scheduler.pool.supervisor import worker_plan
from scheduler.pool.workers import ASYNC, MULTIPROCESS
from scheduler.render.model import render_model_config
from scheduler.render.service import RenderService
from scheduler.settings import ModelConfig, PipelineConfig, Settings
from scheduler.supervision import TICK_S
from workers import protocol as m

log = logging.getLogger("modelsched.scheduler")

__all__ = ["ASYNC", "MULTIPROCESS", "TICK_S", "Scheduler"]

T = TypeVar("T")


class Scheduler:
    """Schedules model-inference jobs onto the workers of this machine; every method runs on the
    event loop it was started on. Its parts (`scheduler.assembly.Parts` lists each one's job) are its attributes: `registry`,
    `table`, `journal`, `inventory`, `workers`, `endings`, `deadlines`, `catalog`, `admission`,
    `dispatcher`, `worker_events`, `worker_set`, `costs`, `pipelines`, `cpu_calls`, `cpu_pool`,
    `submissions`, `readiness`; `supervision` runs the tick; `render` is the render process (None unless `render_enabled`).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        scheduler_type: str = MULTIPROCESS,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings = settings or Settings()
        self.scheduler_type = scheduler_type
        self.environ = dict(os.environ if environ is None else environ)
        parts = assemble(settings, scheduler_type)
        self.registry = parts.registry
        self.table = parts.table
        self.journal = parts.journal
        self.inventory = parts.inventory
        self.endings = parts.endings
        self.deadlines = parts.deadlines
        self.catalog = parts.catalog
        self.admission = parts.admission
        self.dispatcher = parts.dispatcher
        self.worker_events = parts.worker_events
        self.worker_set = parts.worker_set
        self._workers = parts.workers
        self._executors = parts.executors
        self._render_executor = parts.render
        self.costs = parts.costs
        self.pipelines = parts.pipelines
        self.cpu_calls = parts.cpu_calls
        self.cpu_pool = parts.cpu_pool
        self.submissions = parts.submissions  # and its `webhooks`
        self.readiness = parts.readiness  # ready for traffic? each model's state (preload)
        self.cluster = parts.cluster  # None: one host
        self.reads: JobReads = (
            parts.cluster.front
            if parts.cluster is not None
            else LocalReads(self.table, self.journal, self.endings, lambda: self.running)
        )
        self.cpu_calls.accepting = lambda: self.accepting
        self._status = StatusBuilder(
            self.registry,
            self.table,
            self._workers,
            self.inventory,
            self._scheduler_info,
            self._render_status,
            self.pipelines,
            self.costs,
            self.cpu_pool,
            max_queue=settings.max_queue,
            readiness=parts.readiness,
            journal=self.journal,
        )
        self._status.cluster = self.cluster.status if self.cluster is not None else None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.running = False
        self.started_at: float | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self.supervision = parts.supervision
        self._grace_cut = False
        self._drain_task: asyncio.Future[None] | None = None
        for model_config in settings.models:
            self.register_model(model_config)
        if settings.render_enabled:
            self.register_model(render_model_config(settings.render_allow_hosts))
        for pipeline_config in settings.pipelines:
            self.register_pipeline(pipeline_config)

    # ---- what others read ----------------------------------------------------------------------

    @property
    def workers(self) -> Mapping[str, Worker]:
        return self._workers

    @property
    def render(self) -> RenderService | None:
        return self._render_executor.service if self._render_executor is not None else None

    @property
    def on_job_end(self) -> list[Callable[[Job], None]]:
        """Observers told of every job's end as it happens (what only counts ends is an `endings.tallies`)."""
        return self.endings.observers

    @property
    def on_batch(self) -> list[BatchObserver]:
        """Observers told of every batch a worker ran: (worker id, model, batch size, seconds)."""
        return self.worker_events.batch_observers

    @property
    def accepting(self) -> bool:
        return self.admission.accepting

    @property
    def ready(self) -> bool:
        """Ready for traffic; else `readiness.problem()` says why (`scheduler.core.readiness.Unready`)."""
        return self.readiness.problem() is None

    # ---- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.running:
            return
        self.loop = asyncio.get_running_loop()
        if self.scheduler_type == MULTIPROCESS:
            self.inventory.discover(self.environ)
        if self.journal is not None:
            queue_again(await self.journal.open(self.endings.ends_committed), self.table, self.deadlines)
            self.journal.prune()
            self.pipelines.resume()
        self.running = True
        self._grace_cut = False
        self._drain_task = None
        self.started_at = time.time()
        self.dispatcher.start(self.loop)
        self.endings.events.reopen()
        plan, parked = worker_plan(
            [gpu.index for gpu in self.inventory.gpus],
            self.settings.max_workers_per_gpu,
            self.settings.cpu_pool_bounds,
            needs_cpu_workers=self.catalog.needs_cpu_workers(bool(self.inventory.gpus))
            and (self.cluster is None or self.settings.cpu_workers > 0),  # else a cluster's pure front
        )
        self.worker_set.start(self.loop, plan, self.inventory.simulated, parked)
        self.catalog.refresh_fit()
        if self.render is not None:
            self.render.start(self.loop)
        if self.cluster is not None:
            await self.cluster.start(self.loop)  # ConfigError: another model configuration
        self.admission.open()
        log.info(
            "scheduler started: %d GPU(s)%s, %d worker(s), models: %s",
            len(self.inventory.gpus),
            " (simulated)" if self.inventory.simulated else "",
            len(plan),
            ", ".join(self.registry.models) or "none",
        )
        self._tick_task = asyncio.create_task(
            self.supervision.run(lambda: self.running), name="modelsched-supervisor"
        )
        self.dispatcher.schedule()  # jobs recovered from the journal
        self.loop.call_soon(self.pipelines.settle_orphans)  # after pipelines registered right after start

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Until every worker has reported ready (or `timeout`, then TimeoutError)."""
        await self.worker_set.wait_ready(timeout)

    def begin_shutdown(self) -> None:
        """Stop accepting jobs and sending them to workers, at once (readiness and submissions answer
        503 from now on); running jobs go on. `drain()` finishes the shutdown."""
        if self.admission.accepting:
            log.info(
                "shutting down: not accepting jobs; %d running job(s)",
                self.table.count_by_status[JobStatus.PROCESSING],
            )
        self.admission.close()
        self.dispatcher.stop()
        # Nothing is sent to a child from now on: one that dies (a signal sent to the whole process
        # group, as systemd's stop sends) is not started again only to be stopped.
        self.worker_set.respawning = False
        if self.render is not None:
            self.render.respawning = False

    def cut_grace_short(self) -> None:
        """End the drain's grace period now (a second signal)."""
        self._grace_cut = True

    async def drain(self, grace_s: float | None = None) -> None:
        """Let running jobs finish within the grace period (`shutdown_grace_s` by default, or until
        `cut_grace_short()`), then stop: workers still holding jobs are killed, their jobs stay queued
        (in the journal too) for the next start, every waiter is released. Every caller returns once
        that is done: a second call (a second signal, the app's lifespan) waits for the first drain."""
        self.begin_shutdown()
        if self._drain_task is None:
            if not self.running:
                return
            self._drain_task = asyncio.ensure_future(self._drain(grace_s))
        await asyncio.shield(self._drain_task)

    async def _drain(self, grace_s: float | None) -> None:
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        deadline = time.monotonic() + grace
        while self._work_under_way() and time.monotonic() < deadline and not self._grace_cut:
            await asyncio.sleep(0.02)
        self.running = False
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
        await self.worker_set.stop()
        if self.render is not None:
            await self.render.stop()
        # What had not ended stays queued for the next start.
        self.table.requeue_all(
            [job for job in self.table.jobs.values() if job.status is JobStatus.PROCESSING], penalize=False
        )
        if self.cluster is not None:
            await self.cluster.stop()  # what this host holds goes back to the cluster
        if self.journal is not None:
            await self.journal.close()
        self.endings.release_all()
        self.cpu_calls.release_all()
        await self.submissions.webhooks.aclose(5.0)  # callbacks under way get 5 s more
        log.info("scheduler stopped")

    def _work_under_way(self) -> bool:
        """Jobs on a worker or the render process (not a pipeline job between stages: it waits)."""
        running = self.table.count_by_status[JobStatus.PROCESSING] - self.pipelines.processing()
        return running > 0 or any(worker.in_flight for worker in self._workers.values())

    async def stop(self, grace_s: float | None = None) -> None:
        """`begin_shutdown()` then `drain(grace_s)`."""
        self.begin_shutdown()
        await self.drain(grace_s)

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ---- models --------------------------------------------------------------------------------

    def register_model(self, config: ModelConfig | dict[str, Any]) -> m.ModelSpec:
        """Register (or replace) a model; live workers learn of it at once, and unload the old one."""
        return self.catalog.register(config)

    async def load_model(self, name: str) -> list[str]:
        """Load `name` now, where placement would put its first job; returns the worker ids."""
        return self.catalog.load(name)

    async def unload_model(self, name: str) -> list[str]:
        """Unload `name` from every worker where it is idle; returns those workers' ids."""
        return self.catalog.unload(name)

    # ---- pipelines and the CPU executors -------------------------------------------------------

    def register_pipeline(self, config: PipelineConfig | dict[str, Any]) -> Pipeline:
        """Register (or replace) a pipeline: `{"name": ..., "stages": ["model", {"model": ..., "name":
        ..., "timeout_s": ...}]}`; its stages' models must be registered first."""
        pipeline = self.pipelines.register(config)
        if self.workers:
            self.catalog.refresh_fit()
        return pipeline

    async def run_cpu(
        self, function: Callable[..., Any], *args: Any, timeout_s: float | None = None, **kwargs: Any
    ) -> Any:
        """`function(*args, **kwargs)` on the CPU stage pool; raises JobFailedError when it raises.
        `function` must be importable by the worker (a module-level function); arguments and the
        result travel as msgpack values."""
        return await self.cpu_calls.run(function, args, kwargs, timeout_s)

    async def map_cpu(
        self,
        function: Callable[[Any], Any],
        items: Iterable[Any],
        chunk: int = 16,
        timeout_s: float | None = None,
    ) -> list[Any]:
        """`[function(item) for item in items]` on the CPU stage pool, `chunk` items per job."""
        return await self.cpu_calls.map(function, items, chunk, timeout_s)

    async def run_in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` on the main process's thread pool (`max_threads`)."""
        return await self.cpu_calls.run_in_thread(function, *args)

    async def map_threads(self, function: Callable[[Any], T], items: Iterable[Any]) -> list[T]:
        """`[function(item) for item in items]` on the main process's thread pool."""
        return await self.cpu_calls.map_threads(function, items)

    # ---- jobs ----------------------------------------------------------------------------------

    async def schedule_job(self, request: JobRequest, *, waited: bool = False) -> str:
        """Validate, record and journal the job; returns its id once it is durable (`waited`: the
        caller answers only once the job's end is durable; its id comes at once, `Submissions.schedule`)."""
        return await self.submissions.schedule(request, waited=waited)

    async def schedule_jobs(self, requests: list[JobRequest]) -> list[str | SchedulerError]:
        """Each admitted or refused alone (its error in its place); ids once committed in one group."""
        return await self.submissions.schedule_many(requests)

    def submit(self, request: JobRequest) -> str:
        """`schedule_job` without waiting for the journal, for callers that batch their own (`Submissions`)."""
        return self.submissions.submit(request)

    async def infer(self, model: str, inputs: Any, **options: Any) -> Any:
        """Submit and wait: the result, or JobFailedError, JobCancelledError, TimeoutError (`timeout=` s)."""
        return await self.submissions.infer(model, inputs, **options)

    async def infer_many(self, model: str, inputs: Iterable[Any], **options: Any) -> list[Any]:
        """`infer` of each input, submitted in one group: the results in order (the first failure raises)."""
        return await self.submissions.infer_many(model, inputs, **options)

    def get_job(self, job_id: str) -> Job:
        return self.reads.cached(job_id)  # in a cluster: as this daemon last read it

    def job_status(self, job_id: str) -> dict[str, Any]:
        """The job as a client sees it (`GET /jobs/{id}`); `await get_job_status(id)` reads it afresh in a cluster."""
        return self.reads.cached_view(job_id)

    async def get_job_status(self, job_id: str) -> dict[str, Any]:
        return await self.reads.read(job_id)

    async def wait_for(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The job's status once it has ended, or as it stands when `timeout` seconds have passed."""
        return await self.reads.wait(job_id, timeout)

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job (JobEndedError once it has ended); answered once the
        cancellation is durable, so a restart will not run it. A running job's worker keeps its slot
        until its batch ends; the result is dropped. In a cluster its host hears of it by pub/sub."""
        return await self.reads.cancel(job_id)

    def list_jobs(
        self, status: str | None = None, model: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        return self.endings.views(self.table.recent(status, model, limit))

    # ---- status --------------------------------------------------------------------------------

    def status(self) -> SystemStatus:
        """The system status, typed: the scheduler, each GPU, each worker, the render process, the queue, the models."""
        return self._status.build()

    def system_status(self) -> dict[str, Any]:
        """`status()` as plain dicts and lists (what `GET /system/status` sends)."""
        return dict(msgspec.to_builtins(self._status.build()))

    async def get_system_status(self) -> dict[str, Any]:
        """The seed API's system status: `system_status()` with `workers` keyed by worker id."""
        return keyed_by_worker(self.system_status())

    def _scheduler_info(self) -> SchedulerInfo:
        return SchedulerInfo(
            type=self.scheduler_type,
            preset=self.settings.preset,
            accepting=self.accepting,
            started_at=self.started_at,
            uptime_s=(time.time() - self.started_at) if self.started_at else 0.0,
        )

    def _render_status(self) -> dict[str, Any] | None:
        return self.render.status() if self.render is not None else None
