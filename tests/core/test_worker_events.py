"""What workers say and what their deaths mean for jobs (`WorkerEvents`), over real collaborators
wired as `Scheduler` wires them, with fake worker channels and a fake journal: no process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from scheduler.core.admission import Admission
from scheduler.core.deadlines import Deadlines
from scheduler.core.devices import MIB, GpuInfo, Inventory
from scheduler.core.dispatch import Dispatcher
from scheduler.core.endings import JobEndings
from scheduler.core.jobs import Job, JobRequest, JobStatus
from scheduler.core.models import ModelRegistry, resolve_spec
from scheduler.core.ports import JobExecutor
from scheduler.core.table import JobTable
from scheduler.core.worker_events import WorkerEvents
from scheduler.core.workers import Worker
from scheduler.errors import ErrorKind, WorkerState
from scheduler.pool.supervisor import ChildWatch
from workers import protocol as m
from workers.backoff import Backoff

LOAD_BACKOFF_S = 5.0


class FakeChannel:
    """A `WorkerChannel` that records what is sent."""

    killable = True

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.kills = 0
        self.closed = False

    @property
    def pid(self) -> int | None:
        return 4242

    @property
    def exit_code(self) -> int | None:
        return -9

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def alive(self) -> bool:
        return False

    def kill(self) -> None:
        self.kills += 1

    def join(self, timeout: float) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def runs(self) -> list[list[str]]:
        decoded = [m.decode_to_worker(data) for data in self.sent]
        return [[item.job_id for item in msg.jobs] for msg in decoded if isinstance(msg, m.RunJobs)]


class FakeJournal:
    """A `JobJournal` whose commits never come unless a test makes them; it records the calls."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ended: list[str] = []
        self.attempts: list[tuple[str, int]] = []

    def record_submitted_nowait(self, job: Job) -> asyncio.Future[None]:
        return self.loop.create_future()

    def record_ended(self, job: Job) -> asyncio.Future[None]:
        self.ended.append(job.id)
        return self.loop.create_future()

    def record_attempts(self, job: Job) -> None:
        self.attempts.append((job.id, job.attempts))

    def lookup(self, job_id: str) -> Job | None:
        return None

    def find_by_key(self, idempotency_key: str) -> Job | None:
        return None

    def prune(self) -> None:
        pass


def make_worker(worker_id: str = "cpu-w0", gpu_index: int | None = None, label: str = "cpu",
                state: WorkerState = WorkerState.READY) -> Worker:
    return Worker(worker_id, gpu_index, label, ChildWatch(worker_id, state=state), channel=FakeChannel())


def fake(worker: Worker) -> FakeChannel:
    assert isinstance(worker.channel, FakeChannel)
    return worker.channel


@dataclass
class Core:
    loop: asyncio.AbstractEventLoop
    registry: ModelRegistry
    table: JobTable
    workers: dict[str, Worker]
    dispatcher: Dispatcher
    admission: Admission
    events: WorkerEvents
    endings: JobEndings
    batches: list[tuple[str, str, int, float]] = field(default_factory=list)

    def submit(self, model: str = "echo", inputs: Any = 1) -> Job:
        return self.admission.admit(JobRequest(model=model, inputs=inputs))[0]

    def turn(self) -> None:
        """One turn of the loop: the dispatch pass runs if something scheduled it."""
        self.loop.run_until_complete(asyncio.sleep(0))

    def say(self, worker: Worker, message: m.FromWorker) -> None:
        self.events.on_message(worker, m.encode(message))


def make_core(loop: asyncio.AbstractEventLoop, workers: list[Worker], models: list[dict[str, Any]] | None = None,
              gpus: tuple[GpuInfo, ...] = (), journal: FakeJournal | None = None, max_attempts: int = 3) -> Core:
    registry = ModelRegistry()
    for config in models or [{"name": "echo", "adapter": "echo"}]:
        registry.register(*resolve_spec(config))
    table = JobTable()
    inventory = Inventory(reserve_mb=0)
    inventory.gpus = list(gpus)
    records = {worker.worker_id: worker for worker in workers}
    endings = JobEndings(table, journal)
    executors: dict[str, JobExecutor] = {}
    deadlines = Deadlines(table, endings, records)
    dispatcher = Dispatcher(registry, table, endings, records, inventory, executors, max_models_per_worker=4)
    admission = Admission(registry, table, endings, deadlines, journal, executors, dispatcher.schedule,
                          max_queue=1000, default_timeout_s=0.0)
    events = WorkerEvents(registry, table, endings, dispatcher, inventory, journal, max_attempts=max_attempts,
                          load_backoff=Backoff(first_s=LOAD_BACKOFF_S, cap_s=300.0))
    dispatcher.start(loop)
    admission.accepting = True
    core = Core(loop, registry, table, records, dispatcher, admission, events, endings)
    events.batch_observers.append(lambda *batch: core.batches.append(batch))
    return core


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_results_end_jobs_completed_or_with_their_error_kind_and_free_pipeline_room(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    core = make_core(loop, [worker], [{"name": "echo", "adapter": "echo", "max_batch_size": 2}])
    jobs = [core.submit(inputs=n) for n in range(5)]
    core.turn()
    assert fake(worker).runs() == [[job.id for job in jobs[:4]]]
    core.say(worker, m.JobResults("echo", 2, 0.25, [
        m.JobOutcome(jobs[0].id, output={"echo": 0}),
        m.JobOutcome(jobs[1].id, error="ValueError: bad", error_kind=ErrorKind.MODEL),
    ]))
    assert (jobs[0].status, jobs[0].result) == (JobStatus.COMPLETED, {"echo": 0})
    assert (jobs[1].status, jobs[1].error, jobs[1].error_kind) == (JobStatus.ERROR, "ValueError: bad", "model")
    assert set(worker.in_flight) == {jobs[2].id, jobs[3].id} and worker.outstanding_items == 2
    assert worker.models["echo"].in_flight == 2 and worker.jobs_done == 2
    assert core.batches == [("cpu-w0", "echo", 2, 0.25)]
    core.turn()  # the results scheduled a dispatch pass: the freed room takes the last job
    assert fake(worker).runs()[1:] == [[jobs[4].id]]


def test_results_for_a_job_cancelled_meanwhile_are_dropped(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    core = make_core(loop, [worker])
    job, other = core.submit(), core.submit()
    core.turn()
    core.endings.finish(job, JobStatus.CANCELLED, error="cancelled by request", error_kind=ErrorKind.CANCELLED)
    core.say(worker, m.JobResults("echo", 2, 0.01, [m.JobOutcome(job.id, output="late"),
                                                    m.JobOutcome("never-sent", output="?")]))
    assert (job.status, job.result, job.error_kind) == (JobStatus.CANCELLED, None, "cancelled")
    assert set(worker.in_flight) == {other.id} and worker.outstanding_items == 1 and worker.jobs_done == 1


def test_a_failed_load_fails_its_jobs_and_backs_off_doubling_per_failure(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    core = make_core(loop, [worker], [{"name": "echo", "adapter": "echo", "max_batch_size": 1}])
    jobs = [core.submit(inputs=n) for n in range(4)]
    core.turn()
    assert fake(worker).runs() == [[jobs[0].id, jobs[1].id]]
    registered = core.registry.get("echo")
    for failures in (1, 2, 3):
        before = time.monotonic()
        in_flight = [job.id for job in jobs[:2]] if failures == 1 else []
        core.say(worker, m.ModelLoadFailed("echo", "CUDA out of memory", in_flight))
        after = time.monotonic()
        delay = LOAD_BACKOFF_S * 2 ** (failures - 1)
        assert before + delay <= registered.failed_until <= after + delay
        assert registered.failed_error == "CUDA out of memory"
    for job in jobs:  # in flight and still queued alike
        assert (job.status, job.error_kind) == (JobStatus.ERROR, "load")
        assert job.error == "model 'echo' failed to load: CUDA out of memory"
    assert "echo" not in worker.models and worker.in_flight == {} and worker.outstanding_items == 0
    core.say(worker, m.ModelLoaded("echo", 0, 0.1))  # a success resets the count
    assert registered.failed_error is None
    core.say(worker, m.ModelLoadFailed("echo", "again", []))
    assert LOAD_BACKOFF_S - 1 < registered.failed_until - time.monotonic() <= LOAD_BACKOFF_S


REAL_CARD = GpuInfo(index=0, name="real", total_bytes=24 * 1024 * MIB)
SIMULATED_CARD = GpuInfo(index=0, name="sim", total_bytes=24 * 1024 * MIB, simulated=True)


@pytest.mark.parametrize(("on_gpu", "card", "measured_mb", "ledger_mb"), [
    (True, REAL_CARD, 3000, 3000.0),  # measured replaces declared
    (True, REAL_CARD, 0, 1000.0),  # nothing measured: declared stays
    (True, SIMULATED_CARD, 3000, 1000.0),
    (False, REAL_CARD, 3000, 1000.0),  # the CPU
])
def test_model_loaded_puts_the_measured_size_in_the_ledger_only_on_a_real_card(
        loop: asyncio.AbstractEventLoop, on_gpu: bool, card: GpuInfo, measured_mb: int, ledger_mb: float) -> None:
    worker = make_worker("gpu0-w0", 0, "cuda:0") if on_gpu else make_worker()
    core = make_core(loop, [worker], [{"name": "net", "adapter": "echo", "device": "auto", "vram_mb": 1000}],
                     gpus=(card,))
    core.submit("net")
    core.turn()
    loaded = worker.models["net"]
    assert loaded.loading and loaded.size_mb == 1000.0
    core.say(worker, m.ModelLoaded("net", measured_mb * MIB, 1.5))
    assert not loaded.loading and loaded.size_mb == ledger_mb
    assert worker.measured_bytes["net"] == measured_mb * MIB


def test_ready_and_heartbeat_feed_supervision_and_ready_schedules_a_dispatch(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker(state=WorkerState.STARTING)
    core = make_core(loop, [worker])
    job = core.submit()
    core.turn()
    assert fake(worker).runs() == []
    core.say(worker, m.Ready("cpu-w0", 4242, "cpu", "0"))
    assert worker.state is WorkerState.READY and worker.cuda_visible_devices == "0"
    core.turn()
    assert fake(worker).runs() == [[job.id]]
    core.say(worker, m.Heartbeat(worker_id="cpu-w0", sent_at=123.0, rss_bytes=5 * MIB))
    assert (worker.last_heartbeat_wall, worker.rss_bytes) == (123.0, 5 * MIB)
    assert worker.watch.last_heartbeat > 0


def test_a_worker_death_requeues_its_jobs_as_suspects_with_their_try_counted(loop: asyncio.AbstractEventLoop) -> None:
    dying, spare = make_worker("cpu-w0"), make_worker("cpu-w1", state=WorkerState.STARTING)
    journal = FakeJournal(loop)
    core = make_core(loop, [dying, spare], journal=journal)
    jobs = [core.submit(inputs=n) for n in range(2)]
    core.turn()
    assert [job.attempts for job in jobs] == [1, 1]  # raised before the run
    core.events.on_exit(dying)
    assert dying.state is WorkerState.DEAD and fake(dying).closed
    assert dying.in_flight == {} and dying.models == {} and dying.outstanding_items == 0
    for job in jobs:
        assert (job.status, job.attempts, job.worker_id) == (JobStatus.QUEUED, 1, None)
    assert core.table.waiting_suspects() == jobs
    assert journal.attempts == [(job.id, 1) for job in jobs]
    core.events.on_exit(dying)  # told twice: nothing more happens
    assert journal.attempts == [(job.id, 1) for job in jobs]
    spare.watch.ready(time.monotonic())
    core.dispatcher.dispatch()
    assert fake(spare).runs() == [[jobs[0].id]]  # alone
    assert spare.solo_job_id == jobs[0].id and jobs[0].attempts == 2


def test_a_job_whose_attempts_reach_max_attempts_fails_as_poison(loop: asyncio.AbstractEventLoop) -> None:
    first, second = make_worker("cpu-w0"), make_worker("cpu-w1")
    journal = FakeJournal(loop)
    core = make_core(loop, [first, second], journal=journal, max_attempts=2)
    job = core.submit()
    core.dispatcher.dispatch()
    assert job.worker_id == "cpu-w0"
    core.events.on_exit(first)
    assert job.status is JobStatus.QUEUED
    core.dispatcher.dispatch()
    assert job.worker_id == "cpu-w1" and second.solo_job_id == job.id and job.attempts == 2
    core.events.on_exit(second)
    assert (job.status, job.error_kind) == (JobStatus.ERROR, "poison")
    assert (job.error or "").startswith("poison job: 2 worker process(es) died")
    assert journal.attempts == [(job.id, 1)] and journal.ended == [job.id]


def restarted_on_purpose(worker: Worker, how: str) -> None:
    if how == "no_penalty":
        worker.no_penalty = True  # a timeout restarted it
    else:
        worker.watch.state = WorkerState.STOPPING


@pytest.mark.parametrize("how", ["no_penalty", "stopping"])
def test_a_worker_restarted_on_purpose_gives_its_jobs_back_without_a_try(loop: asyncio.AbstractEventLoop, how: str) -> None:
    worker = make_worker()
    journal = FakeJournal(loop)
    core = make_core(loop, [worker], [{"name": "echo", "adapter": "echo", "max_batch_size": 1}], journal=journal)
    jobs = [core.submit(inputs=n) for n in range(3)]
    core.dispatcher.dispatch()
    assert fake(worker).runs() == [[jobs[0].id, jobs[1].id]]
    restarted_on_purpose(worker, how)
    core.events.on_exit(worker)
    assert worker.state is WorkerState.DEAD
    for job in jobs:
        assert (job.status, job.attempts, job.worker_id) == (JobStatus.QUEUED, 0, None)
    assert core.table.waiting_suspects() == [] and journal.attempts == []
    again = core.table.pop_queued("echo", 3)
    assert again == jobs  # at the head, in their order


def test_jobs_given_back_keep_their_first_in_first_out_order(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    core = make_core(loop, [worker], [{"name": "echo", "adapter": "echo", "max_batch_size": 1}])
    jobs = [core.submit(inputs=n) for n in range(3)]
    core.dispatcher.dispatch()
    worker.no_penalty = True
    core.events.on_exit(worker)
    assert core.table.pop_queued("echo", 3) == jobs


def test_a_failed_load_also_fails_the_waiting_suspects_of_that_model(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    core = make_core(loop, [worker])
    job = core.submit()
    core.dispatcher.dispatch()
    suspect = Job(id="suspect-1", model="echo", inputs=1, attempts=1)  # as the journal's recovery queues it
    core.table.add(suspect)
    core.dispatcher.dispatch()
    assert worker.reserved_for == suspect.id  # it waits for the only worker to drain
    core.say(worker, m.ModelLoadFailed("echo", "CUDA out of memory", [job.id]))
    core.turn()
    assert (job.status, job.error_kind) == (JobStatus.ERROR, "load")
    assert fake(worker).runs() == [[job.id]]  # not sent to load the model again during its back-off
    assert (suspect.status, suspect.error_kind) == (JobStatus.ERROR, "load")
