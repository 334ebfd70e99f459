"""The composition root of the main process: every collaborator built once, in dependency order,
each given what it needs in its constructor (`Scheduler` builds its `Parts` here and is the public
API over them). Reading `assemble` top to bottom is reading how the rooms connect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from scheduler.core.admission import Admission
from scheduler.core.catalog import ModelCatalog
from scheduler.core.deadlines import Deadlines
from scheduler.core.devices import Inventory
from scheduler.core.dispatch import Dispatcher
from scheduler.core.endings import JobEndings
from scheduler.core.models import ModelRegistry
from scheduler.core.ports import JobExecutor, JobJournal
from scheduler.core.table import JobTable
from scheduler.core.worker_events import WorkerEvents
from scheduler.core.workers import Launcher, Worker, WorkerSet
from scheduler.journal import SqliteJournal, journal_enabled
from scheduler.pool.supervisor import Timeouts
from scheduler.pool.workers import MULTIPROCESS, WorkerLauncher
from scheduler.render.executor import RenderExecutor
from scheduler.render.model import RENDER_MODEL
from scheduler.settings import Settings
from workers.backoff import Backoff

REDUCED_VRAM_SCALE = 0.5  # what `reduce_vram_requirements` counts a declared `vram_mb` as
MAX_LOAD_BACKOFF_S = 300.0
FROM_SETTINGS: Literal["settings"] = "settings"


@dataclass
class Parts:
    """What the main process is made of (see `Scheduler`'s docstring for each part's job)."""

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
    if journal == FROM_SETTINGS:
        journal = journal_from(settings)
    inventory = Inventory(settings.gpu_reserve_mb)
    workers: dict[str, Worker] = {}
    endings = JobEndings(table, journal)
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
    admission = Admission(
        registry,
        table,
        endings,
        deadlines,
        journal,
        executors,
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
    )
    if launcher is None:
        launcher = WorkerLauncher(
            scheduler_type, settings.heartbeat_interval_s, settings.torch_threads, settings.log_level
        )
    timeouts = Timeouts(settings.worker_start_timeout_s, settings.heartbeat_timeout_s)
    worker_set = WorkerSet(
        workers, launcher, registry.specs, worker_events.on_message, worker_events.on_exit, timeouts
    )
    vram_scale = REDUCED_VRAM_SCALE if settings.reduce_vram_requirements else 1.0
    catalog = ModelCatalog(registry, workers, dispatcher, inventory, executors, vram_scale)
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
    )


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
