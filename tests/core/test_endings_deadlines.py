"""Where jobs end (`JobEndings`), their deadlines (`Deadlines`) and their admission (`Admission`),
over real collaborators wired as `Scheduler` wires them, with a fake journal whose commits the
tests make, and fake worker channels: no process, no thread."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from scheduler.core.admission import Admission
from scheduler.core.deadlines import Deadlines
from scheduler.core.devices import Inventory
from scheduler.core.dispatch import Dispatcher
from scheduler.core.endings import JobEndings
from scheduler.core.jobs import Job, JobRequest, JobStatus
from scheduler.core.models import ModelRegistry, resolve_spec
from scheduler.core.ports import JobExecutor
from scheduler.core.table import JobTable
from scheduler.core.worker_events import WorkerEvents
from scheduler.core.workers import Worker
from scheduler.errors import (
    ErrorKind,
    InvalidInputError,
    JournalError,
    ModelNotFoundError,
    NoFitError,
    NotRunningError,
    QueueFullError,
    WorkerState,
)
from scheduler.pool.supervisor import ChildWatch
from workers.backoff import Backoff


class FakeChannel:
    def __init__(self, killable: bool = True) -> None:
        self.killable = killable
        self.sent: list[bytes] = []
        self.kills = 0

    @property
    def pid(self) -> int | None:
        return 4242

    @property
    def exit_code(self) -> int | None:
        return -9 if self.kills else None

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def alive(self) -> bool:
        return not self.kills

    def kill(self) -> None:
        self.kills += 1

    def join(self, timeout: float) -> None:
        pass

    def close(self) -> None:
        pass


class FakeJournal:
    """A `JobJournal`: `record_ended` hands out futures that `commit` resolves, then tells the
    endings (as the SQLite journal's commit callback does)."""

    def __init__(self) -> None:
        self.pending: dict[str, asyncio.Future[None]] = {}
        self.by_key: dict[str, Job] = {}
        self.closed = False

    def record_submitted_nowait(self, job: Job) -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()

    def record_ended(self, job: Job) -> asyncio.Future[None]:
        if self.closed:
            raise JournalError("the journal is closed")
        future = self.pending[job.id] = asyncio.get_running_loop().create_future()
        return future

    def record_attempts(self, job: Job) -> None:
        pass

    def lookup(self, job_id: str) -> Job | None:
        return None

    def find_by_key(self, idempotency_key: str) -> Job | None:
        return self.by_key.get(idempotency_key)

    def prune(self) -> None:
        pass

    def commit(self, endings: JobEndings) -> None:
        committed, self.pending = self.pending, {}
        for future in committed.values():
            future.set_result(None)
        endings.ends_committed(list(committed))


@dataclass
class Core:
    registry: ModelRegistry
    table: JobTable
    workers: dict[str, Worker]
    endings: JobEndings
    deadlines: Deadlines
    dispatcher: Dispatcher
    admission: Admission
    events: WorkerEvents
    admitted: list[int] = field(default_factory=list)

    def submit(self, model: str = "echo", inputs: Any = 1, **request: Any) -> Job:
        job, created = self.admission.admit(JobRequest(model=model, inputs=inputs, **request))
        assert created
        return job


def make_core(workers: tuple[Worker, ...] = (), journal: FakeJournal | None = None, max_queue: int = 100,
              default_timeout_s: float = 0.0) -> Core:
    registry = ModelRegistry()
    for config in ({"name": "echo", "adapter": "echo"}, {"name": "sleep", "adapter": "sleep"}):
        registry.register(*resolve_spec(config))
    table = JobTable()
    inventory = Inventory(reserve_mb=0)
    records = {worker.worker_id: worker for worker in workers}
    endings = JobEndings(table, journal)
    executors: dict[str, JobExecutor] = {}
    deadlines = Deadlines(table, endings, records)
    dispatcher = Dispatcher(registry, table, endings, records, inventory, executors, max_models_per_worker=4)
    admitted: list[int] = []
    admission = Admission(registry, table, endings, deadlines, journal, executors, lambda: admitted.append(1),
                          max_queue=max_queue, default_timeout_s=default_timeout_s)
    events = WorkerEvents(registry, table, endings, dispatcher, inventory, journal, max_attempts=3,
                          load_backoff=Backoff(first_s=5.0, cap_s=300.0))
    dispatcher.enabled = True  # `dispatch()` is called directly; `start(loop)` would only add the loop
    admission.accepting = True
    return Core(registry, table, records, endings, deadlines, dispatcher, admission, events, admitted)


def processing(core: Core, job: Job) -> Job:
    core.table.mark_processing(job, "cpu-w0", "cpu")
    return job


# ---- JobEndings ------------------------------------------------------------------------------


def test_without_a_journal_an_end_shows_at_once_and_wakes_the_waiter() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        core = make_core()
        job = processing(core, core.submit())
        waiter = core.endings.waiter(job, loop)
        assert waiter is not None and not waiter.done()
        assert core.endings.finish(job, JobStatus.COMPLETED, result="done") is None
        await asyncio.wait_for(waiter, 5.0)
        assert core.endings.settled(job)
        assert (core.endings.view(job)["status"], core.endings.view(job)["result"]) == ("completed", "done")
        assert core.endings.waiter(job, loop) is None  # settled: nothing to wait for

    asyncio.run(scenario())


def test_with_a_journal_an_end_shows_and_wakes_waiters_once_committed() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        journal = FakeJournal()
        core = make_core(journal=journal)
        job = processing(core, core.submit())
        waiter, forgotten = core.endings.waiter(job, loop), core.endings.waiter(job, loop)
        assert waiter is not None and forgotten is not None
        durable = core.endings.finish(job, JobStatus.ERROR, error="boom", error_kind=ErrorKind.MODEL)
        assert durable is journal.pending[job.id] and job.status is JobStatus.ERROR
        shown = core.endings.view(job)
        assert (shown["status"], shown["result"], shown["ended_at"], shown["error"]) == ("processing", None, None, None)
        assert not core.endings.settled(job) and core.endings.waiter(job, loop) is not None
        with pytest.raises(TimeoutError):  # not durable yet
            await asyncio.wait_for(asyncio.shield(waiter), 0.01)
        core.endings.forget_waiter(job.id, forgotten)  # its wait_for timed out
        journal.commit(core.endings)
        await asyncio.wait_for(waiter, 5.0)
        assert durable.done() and core.endings.settled(job) and not forgotten.done()
        shown = core.endings.view(job)
        assert (shown["status"], shown["error"]) == ("error", "boom") and shown["ended_at"] is not None
        assert core.endings.waiter(job, loop) is None

    asyncio.run(scenario())


def test_an_end_after_the_journal_closed_shows_at_once() -> None:
    async def scenario() -> None:
        journal = FakeJournal()
        core = make_core(journal=journal)
        job = core.submit()
        waiter = core.endings.waiter(job, asyncio.get_running_loop())
        journal.closed = True
        assert core.endings.finish(job, JobStatus.CANCELLED, error_kind=ErrorKind.CANCELLED) is None
        assert core.endings.settled(job) and core.endings.view(job)["status"] == "cancelled"
        assert waiter is not None and waiter.done()

    asyncio.run(scenario())


def test_release_all_wakes_every_waiter() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        journal = FakeJournal()
        core = make_core(journal=journal)
        never, unsettled = core.submit(), processing(core, core.submit())
        core.endings.finish(unsettled, JobStatus.COMPLETED, result=1)
        waiters = [core.endings.waiter(job, loop) for job in (never, unsettled)]
        assert all(waiter is not None and not waiter.done() for waiter in waiters)
        core.endings.release_all()
        assert all(waiter is not None and waiter.done() for waiter in waiters)
        assert core.endings.view(never)["status"] == "queued"
        assert core.endings.view(unsettled)["status"] == "completed"  # shown as it stands

    asyncio.run(scenario())


def test_observers_are_told_of_every_end() -> None:
    core = make_core()
    seen: list[tuple[str, JobStatus]] = []
    core.endings.observers.append(lambda job: seen.append((job.id, job.status)))
    first, second, third = processing(core, core.submit()), core.submit(), core.submit()
    core.endings.finish(first, JobStatus.COMPLETED)
    core.endings.fail([second, third], "no", ErrorKind.PLACEMENT)
    assert seen == [(first.id, JobStatus.COMPLETED), (second.id, JobStatus.ERROR), (third.id, JobStatus.ERROR)]
    assert third.error_kind == "placement"


# ---- Deadlines -------------------------------------------------------------------------------


def test_a_job_past_its_deadline_ends_as_a_timeout() -> None:
    core = make_core()
    job = core.submit(timeout_s=2.0)
    assert len(core.deadlines) == 1 and job.deadline is not None
    assert core.deadlines.expire(job.deadline - 0.001) == [] and job.status is JobStatus.QUEUED
    assert core.deadlines.expire(job.deadline) == [job]
    assert (job.status, job.error_kind) == (JobStatus.ERROR, "timeout")
    assert job.error == "timeout: the job did not end within 2.0s"
    assert len(core.deadlines) == 0


def test_an_entry_whose_job_ended_or_whose_deadline_changed_is_skipped() -> None:
    core = make_core()
    ended, moved = processing(core, core.submit()), core.submit()
    core.deadlines.watch(ended, 100.0)
    core.deadlines.watch(moved, 100.0)
    core.endings.finish(ended, JobStatus.COMPLETED, result="in time")
    core.deadlines.watch(moved, 200.0)  # set again: its first entry is stale
    assert core.deadlines.expire(150.0) == []
    assert (ended.status, ended.result) == (JobStatus.COMPLETED, "in time")
    assert moved.status is JobStatus.QUEUED and len(core.deadlines) == 1
    assert core.deadlines.expire(200.0) == [moved]


def test_a_running_job_past_its_deadline_restarts_its_worker_and_its_mates_go_back_without_a_try() -> None:
    worker = Worker("cpu-w0", None, "cpu", ChildWatch("cpu-w0", state=WorkerState.READY), channel=FakeChannel())
    core = make_core((worker,))
    late, mate = core.submit(timeout_s=1.0), core.submit()
    core.dispatcher.dispatch()
    assert late.worker_id == mate.worker_id == "cpu-w0"
    assert late.deadline is not None
    assert core.deadlines.expire(late.deadline) == [late]
    assert isinstance(worker.channel, FakeChannel) and worker.channel.kills == 1 and worker.no_penalty
    core.events.on_exit(worker)
    assert (late.status, late.error_kind) == (JobStatus.ERROR, "timeout")
    assert (mate.status, mate.attempts) == (JobStatus.QUEUED, 0) and core.table.waiting_suspects() == []


@pytest.mark.parametrize(("killable", "state"), [(False, WorkerState.READY), (True, WorkerState.STOPPING)])
def test_a_thread_or_a_stopping_worker_is_not_killed_for_a_timeout(killable: bool, state: WorkerState) -> None:
    channel = FakeChannel(killable=killable)
    worker = Worker("cpu-w0", None, "cpu", ChildWatch("cpu-w0", state=WorkerState.READY), channel=channel)
    core = make_core((worker,))
    job = core.submit(timeout_s=1.0)
    core.dispatcher.dispatch()
    worker.watch.state = state
    assert job.deadline is not None and core.deadlines.expire(job.deadline) == [job]
    assert job.error_kind == "timeout"
    assert channel.kills == 0 and not worker.no_penalty


# ---- Admission -------------------------------------------------------------------------------


def test_admission_refuses_when_not_accepting_or_the_model_is_unknown() -> None:
    core = make_core()
    with pytest.raises(ModelNotFoundError, match="nope"):
        core.submit("nope")
    core.admission.accepting = False
    with pytest.raises(NotRunningError):
        core.submit()
    assert core.table.jobs == {} and core.admitted == []


@pytest.mark.parametrize(("model", "inputs", "fields", "field_name"), [
    ("echo", 1, {"priority": "urgent"}, "priority"),
    ("echo", 1, {"timeout_s": 0.0}, "timeout_s"),
    ("echo", 1, {"timeout_s": -3.0}, "timeout_s"),
    ("echo", 1, {"timeout_s": math.nan}, "timeout_s"),
    ("echo", 1, {"timeout_s": math.inf}, "timeout_s"),
    ("sleep", "long", {}, "inputs"),  # the adapter's `validate`
])
def test_admission_names_the_invalid_field(model: str, inputs: Any, fields: dict[str, Any], field_name: str) -> None:
    core = make_core()
    with pytest.raises(InvalidInputError) as raised:
        core.submit(model, inputs, **fields)
    assert raised.value.field == field_name
    assert core.table.jobs == {} and core.admitted == []


def test_a_full_queue_refuses_until_a_job_leaves_it() -> None:
    core = make_core(max_queue=2)
    first, _ = core.submit(), core.submit()
    with pytest.raises(QueueFullError):
        core.submit()
    core.endings.finish(first, JobStatus.CANCELLED)
    assert core.submit().status is JobStatus.QUEUED
    assert len(core.admitted) == 3


def test_an_idempotency_key_answers_the_first_job_again() -> None:
    journal = FakeJournal()
    core = make_core(journal=journal)
    first = core.submit(idempotency_key="k1")
    again, created = core.admission.admit(JobRequest(model="echo", inputs=2, idempotency_key="k1"))
    assert again is first and not created
    assert len(core.table.jobs) == 1 and core.admitted == [1]
    forgotten = Job(id="old", model="echo", inputs=None, status=JobStatus.COMPLETED, idempotency_key="k0")
    journal.by_key["k0"] = forgotten  # ended, and no longer in memory
    assert core.admission.admit(JobRequest(model="echo", inputs=3, idempotency_key="k0")) == (forgotten, False)


def test_a_model_no_worker_can_run_is_refused() -> None:
    core = make_core()
    core.registry.get("echo").no_fit = "No GPU has enough memory for this model"
    with pytest.raises(NoFitError, match="No GPU has enough memory"):
        core.submit()
    assert core.table.jobs == {}


def test_a_job_of_a_model_in_load_back_off_ends_at_once() -> None:
    core = make_core()
    registered = core.registry.get("echo")
    registered.failed_error, registered.failed_until = "CUDA out of memory", math.inf
    job = core.submit(timeout_s=5.0)
    assert (job.status, job.error_kind) == (JobStatus.ERROR, "load")
    assert job.error == "model 'echo' failed to load: CUDA out of memory"
    assert core.admitted == [] and len(core.deadlines) == 0
    registered.failed_until = 0.0  # the back-off is over
    assert core.submit().status is JobStatus.QUEUED and core.admitted == [1]


def test_on_admitted_is_called_once_per_new_job_and_the_default_timeout_applies() -> None:
    core = make_core(default_timeout_s=30.0)
    jobs = [core.submit(), core.submit(timeout_s=2.0)]
    assert core.admitted == [1, 1]
    assert [job.timeout_s for job in jobs] == [30.0, 2.0] and len(core.deadlines) == 2
    assert make_core().submit().timeout_s is None  # 0: no timeout unless the job sets one
