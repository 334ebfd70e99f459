"""The composition root of the main process: every collaborator built once, in dependency order,
each given what it needs in its constructor (`Scheduler` builds its `Parts` here and is the public
API over them). Reading `assemble` top to bottom is reading how the rooms connect."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Literal

from scheduler.cluster.backend import ClusterBackend
from scheduler.cluster.front import ClusterFront
from scheduler.cluster.hosts import Hosts, config_hash
from scheduler.cluster.journal import RedisJournal
from scheduler.cluster.node import Cluster
from scheduler.cluster.store import ClusterStore
from scheduler.cluster.submissions import ClusterSubmissions
from scheduler.core.admission import Admission
from scheduler.core.catalog import ModelCatalog
from scheduler.core.costs import CostLedger
from scheduler.core.cpu_calls import CpuCalls
from scheduler.core.cpu_pool import CpuPool
from scheduler.core.deadlines import Deadlines
from scheduler.core.devices import Inventory
from scheduler.core.dispatch import Dispatcher
from scheduler.core.endings import JobEndings
from scheduler.core.history import History
from scheduler.core.models import ModelRegistry
from scheduler.core.pipelines import Pipelines
from scheduler.core.ports import JobExecutor, JobJournal
from scheduler.core.readiness import Preloader, Readiness
from scheduler.core.table import JobTable
from scheduler.core.worker_events import WorkerEvents
from scheduler.core.workers import Launcher, Worker, WorkerSet
from scheduler.journal import SqliteJournal, journal_enabled
from scheduler.pool.supervisor import Timeouts
from scheduler.pool.workers import MULTIPROCESS, WorkerLauncher
from scheduler.render.executor import RenderExecutor
from scheduler.render.model import RENDER_MODEL
from scheduler.settings import Settings
from scheduler.submissions import Submissions
from scheduler.supervision import Supervision
from scheduler.webhooks import Webhooks
from workers.backoff import Backoff

REDUCED_VRAM_SCALE = 0.5  # what `reduce_vram_requirements` counts a declared `vram_mb` as
MAX_LOAD_BACKOFF_S = 300.0
FROM_SETTINGS: Literal["settings"] = "settings"


@dataclass
class Parts:
    """What the main process is made of:
    registry      the models (`ModelRegistry`)
    table         every job in memory (`JobTable`)
    journal       the SQLite journal, opened at start (None when `journal_path` is "")
    inventory     the GPUs, found at start
    workers       one `Worker` record per worker (process, or thread for the ASYNC type), by id
    endings       the one place a job ends, and what a client sees of a job (its `events`: the live
                  events of the jobs somebody listens to)
    executors     models whose jobs run outside the workers (`render`), by model
    render        the render process's executor (None unless `render_enabled`)
    deadlines     jobs with a timeout
    dispatcher    the dispatch pass: placement, then jobs to workers
    admission     whether a submitted job is queued
    worker_events what workers say, and what their deaths mean for their jobs
    worker_set    the workers' lives: start, supervision, stop; the CPU pool's slots
    catalog       registering models, which can run here at all, explicit loads and unloads
    costs         what jobs cost, and the totals
    pipelines     pipeline definitions, and their jobs moved from stage to stage
    cpu_calls     `run_cpu`/`map_cpu` on the CPU workers, `run_in_thread`/`map_threads`
    cpu_pool      the elastic CPU stage pool, and idle models unloaded
    preloader     keeps the models with `preload` loaded
    readiness     whether the daemon is ready for traffic, and each model's state
    supervision   the one supervision tick (it samples `history`)
    history       the last 15 minutes, sampled every 2 s, for the dashboard's charts
    webhooks      the callbacks of jobs with a `callback_url`, once their ends are durable
    submissions   how jobs come in: one, many in one journal group, or submitted and waited for
    cluster       this daemon's part in a cluster on Redis (None without `cluster_url`): its
                  journal is then the `RedisJournal`, its submissions the `ClusterSubmissions`
    """

    registry: ModelRegistry
    table: JobTable
    journal: JobJournal | None
    inventory: Inventory
    workers: dict[str, Worker]
    endings: JobEndings
    executors: dict[str, JobExecutor]
    render: RenderExecutor | None
    deadlines: Deadlines
    dispatcher: Dispatcher
    admission: Admission
    worker_events: WorkerEvents
    worker_set: WorkerSet
    catalog: ModelCatalog
    costs: CostLedger
    pipelines: Pipelines
    cpu_calls: CpuCalls
    cpu_pool: CpuPool
    preloader: Preloader
    readiness: Readiness
    supervision: Supervision
    webhooks: Webhooks
    submissions: Submissions
    history: History
    cluster: Cluster | None = None


def assemble(
    settings: Settings,
    scheduler_type: str = MULTIPROCESS,
    *,
    journal: JobJournal | None | Literal["settings"] = FROM_SETTINGS,
    launcher: Launcher | None = None,
) -> Parts:
    """The parts for `settings`. `journal` and `launcher` stand in for the ones the settings make (the
    SQLite journal at `journal_path`; a launcher of worker processes or threads): the core's unit
    tests give fakes, so they test the very wiring the daemon runs."""
    registry = ModelRegistry()
    table = JobTable(settings.max_finished_in_memory)
    store = ClusterStore(settings.cluster_url, settings.cluster_name) if settings.cluster_url else None
    if store is not None and journal == FROM_SETTINGS:
        journal = RedisJournal(
            store, host_identity(settings), settings.result_retention_s, settings.max_attempts
        )
    if journal == FROM_SETTINGS:
        journal = journal_from(settings)
    inventory = Inventory(settings.gpu_reserve_mb, settings.gpus)
    workers: dict[str, Worker] = {}
    endings = JobEndings(table, journal)
    costs = CostLedger(settings.costs)
    endings.tallies.append(costs.count_ends)
    history = History(table, workers, inventory, costs)
    endings.tallies.append(history.on_jobs_end)
    render = RenderExecutor(table, endings, settings) if settings.render_enabled else None
    executors: dict[str, JobExecutor] = {RENDER_MODEL: render} if render is not None else {}
    deadlines = Deadlines(table, endings, workers)
    dispatcher = Dispatcher(
        registry,
        table,
        endings,
        workers,
        inventory,
        executors,
        max_models_per_worker=settings.max_models_per_worker,
    )
    pipelines = Pipelines(registry, table, endings, deadlines, journal, dispatcher.schedule)
    dispatcher.on_stage_started = pipelines.stage_started
    cpu_calls = CpuCalls(
        registry, table, endings, deadlines, dispatcher.schedule, max_threads=settings.max_threads
    )
    admission = Admission(
        registry,
        table,
        endings,
        deadlines,
        journal,
        executors,
        pipelines,
        dispatcher.schedule,
        max_queue=settings.max_queue,
        default_timeout_s=settings.default_timeout_s,
    )
    load_backoff = Backoff(
        settings.model_load_backoff_s, max(MAX_LOAD_BACKOFF_S, settings.model_load_backoff_s)
    )
    worker_events = WorkerEvents(
        registry,
        table,
        endings,
        dispatcher,
        inventory,
        journal,
        max_attempts=settings.max_attempts,
        load_backoff=load_backoff,
        costs=costs,
    )
    if launcher is None:
        launcher = WorkerLauncher(
            scheduler_type,
            settings.heartbeat_interval_s,
            settings.torch_threads,
            settings.log_level,
            settings.model_load_timeout_s,
            settings.log_format,
            inventory.pin_of,
        )
    timeouts = Timeouts(settings.worker_start_timeout_s, settings.heartbeat_timeout_s)
    worker_set = WorkerSet(
        workers, launcher, registry.specs, worker_events.on_message, worker_events.on_exit, timeouts
    )
    vram_scale = REDUCED_VRAM_SCALE if settings.reduce_vram_requirements else 1.0
    catalog = ModelCatalog(registry, workers, dispatcher, inventory, executors, vram_scale, settings.preload)
    cpu_calls.register = catalog.register
    cpu_pool = CpuPool(
        worker_set,
        registry,
        table,
        dispatcher,
        settings.cpu_pool_bounds,
        settings.cpu_idle_timeout_s,
        settings.model_idle_unload_s,
        lambda: bool(inventory.gpus),
    )
    preloader = Preloader(registry, workers, dispatcher, lambda: dispatcher.enabled)
    readiness = Readiness(
        lambda: admission.accepting,
        # a cluster's pure front (no worker) has none to wait for
        lambda: worker_set.any_ready() or (store is not None and not workers),
        journal.problem if journal is not None else lambda: None,
        registry,
        workers,
        executors,
    )
    webhooks = Webhooks(settings, endings.view)
    endings.settle_observers.append(webhooks.on_settled)
    submissions = Submissions(admission, endings, journal, executors, webhooks)
    cluster = None
    if store is not None and isinstance(journal, RedisJournal):
        hosts = Hosts(settings.cluster_heartbeat_s)
        backend = ClusterBackend(
            store,
            journal.host,
            hosts,
            registry,
            table,
            workers,
            inventory,
            dispatcher,
            deadlines,
            endings,
            cold_claim_delay_ms=settings.cold_claim_delay_ms,
            max_models_per_worker=settings.max_models_per_worker,
        )
        front = ClusterFront(
            store,
            admission,
            hosts,
            journal.host,
            settings.result_retention_s,
            lambda model: (
                f"model {model!r} runs on one host: not in cluster mode" if model in executors else None
            ),
            endings.events,
        )
        front.runs_here = backend
        front.holds = journal
        journal.on_released = backend.take_released
        submissions = ClusterSubmissions(front, admission, endings, journal, executors, webhooks)
        cluster = Cluster(
            settings.cluster_name,
            store,
            journal,
            hosts,
            backend,
            front,
            config=config_hash(settings),
            reclaim_idle_s=settings.reclaim_idle_s,
            max_attempts=settings.max_attempts,
            retention_s=settings.result_retention_s,
        )
    return Parts(
        registry,
        table,
        journal,
        inventory,
        workers,
        endings,
        executors,
        render,
        deadlines,
        dispatcher,
        admission,
        worker_events,
        worker_set,
        catalog,
        costs,
        pipelines,
        cpu_calls,
        cpu_pool,
        preloader,
        readiness,
        Supervision(
            worker_set,
            cpu_pool,
            preloader,
            render.service if render is not None else None,
            deadlines,
            table,
            journal,
            settings.result_retention_s,
            history,
        ),
        webhooks,
        submissions,
        history,
        cluster,
    )


def host_identity(settings: Settings) -> str:
    """This daemon's name in the cluster: `cluster_host`, or hostname:port (stable across restarts,
    so a restarted daemon reclaims the jobs it held at once)."""
    return settings.cluster_host or f"{socket.gethostname()}:{settings.port}"


def journal_from(settings: Settings) -> SqliteJournal | None:
    """The SQLite journal at `journal_path` (made closed; the scheduler opens it at start), or none."""
    if not journal_enabled(settings.journal_path):
        return None
    return SqliteJournal(
        settings.journal_path,
        settings.journal_synchronous,
        settings.result_retention_s,
        settings.journal_max_mb * 2**20,
    )
