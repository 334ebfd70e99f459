"""The fakes and builders the core tests share: `FakeChannel` (a `WorkerChannel` that records what is
sent), `FakeJournal` (a `JobJournal` whose commits the tests make), `make_worker` and `fake` (a
worker record over a fake channel), `results` (a `JobResults` message), and `make_core` (with
`make_journaled_core`), which builds the core's real collaborators the way `scheduler.assembly`
wires them into a `Core` with a few helpers: no process, no thread."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from scheduler.assembly import assemble
from scheduler.core.admission import Admission
from scheduler.core.deadlines import Deadlines
from scheduler.core.devices import GpuInfo, Inventory
from scheduler.core.dispatch import Dispatcher
from scheduler.core.endings import JobEndings
from scheduler.core.jobs import Job, JobRequest
from scheduler.core.models import ModelRegistry, resolve_spec
from scheduler.core.ports import JournalStatus
from scheduler.core.table import JobTable
from scheduler.core.worker_events import WorkerEvents
from scheduler.core.workers import Worker
from scheduler.errors import JournalError, WorkerState
from scheduler.pool.supervisor import ChildWatch
from scheduler.settings import Settings
from workers import protocol as m

ECHO: dict[str, Any] = {"name": "echo", "adapter": "echo"}
SLEEP: dict[str, Any] = {"name": "sleep", "adapter": "sleep"}
LOAD_BACKOFF_S = 5.0  # the first back-off after a failed load


class FakeChannel:
    """A `WorkerChannel` that records what is sent (`messages()` decodes it). It is alive until it
    is killed or sent a `Shutdown`; `join` and `close` are recorded."""

    def __init__(self, killable: bool = True) -> None:
        self.killable = killable
        self.sent: list[bytes] = []
        self.kills = 0
        self.joined = self.closed = False
        self._alive = True

    @property
    def pid(self) -> int | None:
        return 4242

    @property
    def exit_code(self) -> int | None:
        return None if self._alive else -9

    def send(self, data: bytes) -> None:
        self.sent.append(data)
        if isinstance(m.decode_to_worker(data), m.Shutdown):
            self._alive = False

    def alive(self) -> bool:
        return self._alive

    def kill(self) -> None:
        self.kills += 1
        self._alive = False

    def join(self, timeout: float) -> None:
        self.joined = True

    def close(self) -> None:
        self.closed = True

    def messages(self) -> list[m.ToWorker]:
        return [m.decode_to_worker(data) for data in self.sent]

    def runs(self) -> list[m.RunJobs]:
        return [message for message in self.messages() if isinstance(message, m.RunJobs)]

    def run_ids(self) -> list[list[str]]:
        """The job ids of each `RunJobs` sent, in order."""
        return [[item.job_id for item in run.jobs] for run in self.runs()]


class FakeJournal:
    """A `JobJournal` that records the calls. `record_ended` hands out futures that only `commit`
    resolves, then tells the endings (as the SQLite journal's commit callback does); once `closed`
    it raises. Its futures belong to `loop`, or to the running loop where none is given."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop
        self.pending: dict[str, asyncio.Future[None]] = {}
        self.ended: list[str] = []
        self.attempts: list[tuple[str, int]] = []
        self.by_key: dict[str, Job] = {}
        self.closed = False
        self.refusing: str | None = None  # what `problem` says (None: it takes jobs)

    def _future(self) -> asyncio.Future[None]:
        return (self.loop if self.loop is not None else asyncio.get_running_loop()).create_future()

    def record_submitted_nowait(self, job: Job) -> asyncio.Future[None]:
        return self._future()

    def record_submitted_held(self, job: Job) -> None:
        pass

    def record_ended(self, job: Job) -> asyncio.Future[None]:
        if self.closed:
            raise JournalError("the journal is closed")
        self.ended.append(job.id)
        future = self.pending[job.id] = self._future()
        return future

    def record_attempts(self, job: Job) -> None:
        self.attempts.append((job.id, job.attempts))

    def lookup(self, job_id: str) -> Job | None:
        return None

    def find_by_key(self, idempotency_key: str) -> Job | None:
        return self.by_key.get(idempotency_key)

    def prune(self) -> None:
        pass

    def problem(self) -> str | None:
        return self.refusing

    def check_room(self) -> None:
        if self.refusing is not None:
            raise JournalError(self.refusing)

    def status(self) -> JournalStatus:
        return JournalStatus("fake", 0.0, 0.0, 0.0, 0, None, 0, False, self.refusing, 0)

    def commit(self, endings: JobEndings) -> None:
        committed, self.pending = self.pending, {}
        for future in committed.values():
            future.set_result(None)
        endings.ends_committed(list(committed))


def make_worker(
    worker_id: str = "cpu-w0",
    gpu_index: int | None = None,
    label: str = "cpu",
    state: WorkerState = WorkerState.READY,
    killable: bool = True,
) -> Worker:
    channel = FakeChannel(killable=killable)
    return Worker(worker_id, gpu_index, label, ChildWatch(worker_id, state=state), channel=channel)


def fake(worker: Worker) -> FakeChannel:
    assert isinstance(worker.channel, FakeChannel)
    return worker.channel


def results(model: str, *job_ids: str) -> m.JobResults:
    """A batch of `model` in which every job completed, its output its id."""
    outcomes = [m.JobOutcome(job_id, output=job_id) for job_id in job_ids]
    return m.JobResults(model, len(outcomes), 0.01, outcomes)


@dataclass
class Core:
    """The core's collaborators; `admitted` counts the calls of admission's `on_admitted`, `batches`
    what the batch observers were told."""

    loop: asyncio.AbstractEventLoop | None
    registry: ModelRegistry
    table: JobTable
    inventory: Inventory
    workers: dict[str, Worker]
    endings: JobEndings
    deadlines: Deadlines
    dispatcher: Dispatcher
    admission: Admission
    events: WorkerEvents
    admitted: list[int] = field(default_factory=list)
    batches: list[tuple[str, str, int, float]] = field(default_factory=list)

    def submit(self, model: str = "echo", inputs: Any = 1, **request: Any) -> Job:
        job, created = self.admission.admit(JobRequest(model=model, inputs=inputs, **request))
        assert created
        return job

    def suspect(self, model: str, job_id: str, attempts: int = 1) -> Job:
        """A job that was on a worker that died (as the journal's recovery queues it again)."""
        job = Job(id=job_id, model=model, inputs=job_id, attempts=attempts)
        self.table.add(job)
        return job

    def turn(self) -> None:
        """One turn of the loop: the dispatch pass runs if something scheduled it."""
        assert self.loop is not None
        self.loop.run_until_complete(asyncio.sleep(0))

    def say(self, worker: Worker, message: m.FromWorker) -> None:
        self.events.on_message(worker, m.encode(message))


def make_core(
    workers: Iterable[Worker] = (),
    models: Iterable[dict[str, Any]] = (ECHO,),
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    gpus: tuple[GpuInfo, ...] = (),
    journal: FakeJournal | None = None,
    max_attempts: int = 3,
    max_queue: int = 1000,
    default_timeout_s: float = 0.0,
) -> Core:
    """The core's collaborators as `scheduler.assembly.assemble` wires them for the daemon (with no
    journal but `journal`, and the given worker records). With a `loop` the dispatcher is started on
    it (admission schedules a pass there); without one it is only enabled, and passes run when a
    test calls `dispatch()`."""
    settings = Settings(
        journal_path="",
        max_attempts=max_attempts,
        max_queue=max_queue,
        default_timeout_s=default_timeout_s,
        max_models_per_worker=4,
        model_load_backoff_s=LOAD_BACKOFF_S,
        gpu_reserve_mb=0,
    )
    parts = assemble(settings, journal=journal)
    for config in models:
        parts.registry.register(*resolve_spec(config))
    parts.inventory.gpus = list(gpus)
    parts.workers.update({worker.worker_id: worker for worker in workers})
    admitted: list[int] = []
    schedule = parts.admission.on_admitted

    def on_admitted() -> None:
        admitted.append(1)
        schedule()

    parts.admission.on_admitted = on_admitted
    if loop is not None:
        parts.dispatcher.start(loop)
    else:
        parts.dispatcher.enabled = True
    parts.admission.open()
    core = Core(
        loop,
        parts.registry,
        parts.table,
        parts.inventory,
        parts.workers,
        parts.endings,
        parts.deadlines,
        parts.dispatcher,
        parts.admission,
        parts.worker_events,
        admitted,
    )
    parts.worker_events.batch_observers.append(lambda *batch: core.batches.append(batch))
    return core


def make_journaled_core(*args: Any, **options: Any) -> tuple[FakeJournal, Core]:
    """`make_core(*args, **options)` with a `FakeJournal` (its futures on `loop` where one is given)."""
    journal = FakeJournal(options.get("loop"))
    return journal, make_core(*args, journal=journal, **options)
