"""The dispatch pass (`Dispatcher`) over real collaborators, wired as `Scheduler` wires them, with
fake worker channels: no process, no thread, the loop only as `start` needs one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.base import BaseAdapter
from scheduler.core.admission import Admission
from scheduler.core.deadlines import Deadlines
from scheduler.core.devices import MIB, GpuInfo, Inventory
from scheduler.core.dispatch import PIPELINE_BATCHES, Dispatcher
from scheduler.core.endings import JobEndings
from scheduler.core.jobs import Job, JobRequest, JobStatus
from scheduler.core.models import ModelRegistry, resolve_spec
from scheduler.core.placement import NEEDS_GPU_MESSAGE, NO_FIT_MESSAGE, LoadedModel, Reject
from scheduler.core.ports import JobExecutor
from scheduler.core.table import JobTable
from scheduler.core.worker_events import WorkerEvents
from scheduler.core.workers import Worker
from scheduler.errors import WorkerState
from scheduler.pool.supervisor import ChildWatch
from workers import protocol as m
from workers.backoff import Backoff


class ItemsAdapter(BaseAdapter):
    """A job is a list; each element is one item of the worker's batches."""

    name = "items"
    device = "cpu"
    max_batch_size = 4

    def items(self, inputs: Any) -> list[Any]:
        return list(inputs)


class FakeChannel:
    """A `WorkerChannel` that records what is sent (decoded with `decode_to_worker`)."""

    def __init__(self, killable: bool = True) -> None:
        self.killable = killable
        self.sent: list[bytes] = []
        self.kills = 0
        self.closed = False
        self._alive = True

    @property
    def pid(self) -> int | None:
        return 4242

    @property
    def exit_code(self) -> int | None:
        return None if self._alive else -9

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def alive(self) -> bool:
        return self._alive

    def kill(self) -> None:
        self.kills += 1
        self._alive = False

    def join(self, timeout: float) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def messages(self) -> list[m.ToWorker]:
        return [m.decode_to_worker(data) for data in self.sent]

    def runs(self) -> list[m.RunJobs]:
        return [message for message in self.messages() if isinstance(message, m.RunJobs)]


def make_worker(worker_id: str = "cpu-w0", gpu_index: int | None = None, label: str = "cpu",
                state: WorkerState = WorkerState.READY) -> Worker:
    return Worker(worker_id, gpu_index, label, ChildWatch(worker_id, state=state), channel=FakeChannel())


def fake(worker: Worker) -> FakeChannel:
    assert isinstance(worker.channel, FakeChannel)
    return worker.channel


def run_ids(run: m.RunJobs) -> list[str]:
    return [item.job_id for item in run.jobs]


@dataclass
class Core:
    registry: ModelRegistry
    table: JobTable
    inventory: Inventory
    workers: dict[str, Worker]
    endings: JobEndings
    dispatcher: Dispatcher
    admission: Admission
    events: WorkerEvents

    def submit(self, model: str, inputs: Any = None, priority: str = "normal") -> Job:
        job, created = self.admission.admit(JobRequest(model=model, inputs=inputs, priority=priority))
        assert created
        return job

    def suspect(self, model: str, job_id: str, attempts: int = 1) -> Job:
        """A job that was on a worker that died (as the journal's recovery queues it again)."""
        job = Job(id=job_id, model=model, inputs=job_id, attempts=attempts)
        self.table.add(job)
        return job


def make_core(loop: asyncio.AbstractEventLoop, models: list[dict[str, Any]], workers: list[Worker],
              gpus: tuple[GpuInfo, ...] = ()) -> Core:
    registry = ModelRegistry()
    for config in models:
        registry.register(*resolve_spec(config))
    table = JobTable()
    inventory = Inventory(reserve_mb=0)
    inventory.gpus = list(gpus)
    records = {worker.worker_id: worker for worker in workers}
    endings = JobEndings(table, None)
    executors: dict[str, JobExecutor] = {}
    deadlines = Deadlines(table, endings, records)
    dispatcher = Dispatcher(registry, table, endings, records, inventory, executors, max_models_per_worker=4)
    admission = Admission(registry, table, endings, deadlines, None, executors, dispatcher.schedule,
                          max_queue=1000, default_timeout_s=0.0)
    events = WorkerEvents(registry, table, endings, dispatcher, inventory, None, max_attempts=3,
                          load_backoff=Backoff(first_s=5.0, cap_s=300.0))
    dispatcher.start(loop)
    admission.accepting = True
    return Core(registry, table, inventory, records, endings, dispatcher, admission, events)


def results(worker: Worker, model: str, *job_ids: str) -> bytes:
    outcomes = [m.JobOutcome(job_id, output=job_id) for job_id in job_ids]
    return m.encode(m.JobResults(model, len(outcomes), 0.01, outcomes))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


ECHO = {"name": "echo", "adapter": "echo"}


def test_queued_jobs_go_in_one_run_jobs_to_a_ready_worker_that_loads_the_model_lazily(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    core = make_core(loop, [ECHO], [worker])
    jobs = [core.submit("echo", {"n": n}) for n in range(3)]
    core.dispatcher.dispatch()
    assert fake(worker).messages() == [m.RunJobs("echo", [m.JobItem(job.id, {"n": n}) for n, job in enumerate(jobs)])]
    for job in jobs:
        assert (job.status, job.attempts, job.worker_id, job.device) == (JobStatus.PROCESSING, 1, "cpu-w0", "cpu")
    assert worker.in_flight == {job.id: 1 for job in jobs}
    assert worker.outstanding_items == 3
    loaded = worker.models["echo"]
    assert loaded.loading and loaded.in_flight == 3  # no LoadModel: the first RunJobs loads it


def test_a_worker_holding_the_model_is_preferred_and_a_worker_not_ready_gets_nothing(loop: asyncio.AbstractEventLoop) -> None:
    empty, holder = make_worker("cpu-w0"), make_worker("cpu-w1")
    starting = make_worker("cpu-w2", state=WorkerState.STARTING)
    holder.models["echo"] = LoadedModel(0.0, loading=False)
    core = make_core(loop, [ECHO], [empty, holder, starting])
    job = core.submit("echo", 1)
    core.dispatcher.dispatch()
    assert [run_ids(run) for run in fake(holder).runs()] == [[job.id]]
    assert fake(empty).sent == [] and fake(starting).sent == []
    assert not holder.models["echo"].loading and holder.models["echo"].in_flight == 1  # kept, not loaded again


def test_no_ready_worker_means_the_jobs_wait_queued(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker(state=WorkerState.STARTING)
    core = make_core(loop, [ECHO], [worker])
    job = core.submit("echo", 1)
    core.dispatcher.dispatch()
    assert job.status is JobStatus.QUEUED and fake(worker).sent == []
    worker.watch.ready(0.0)
    core.dispatcher.dispatch()
    assert [run_ids(run) for run in fake(worker).runs()] == [[job.id]]


def test_each_worker_gets_one_run_jobs_capped_by_its_pipeline_room(loop: asyncio.AbstractEventLoop) -> None:
    first, second = make_worker("cpu-w0"), make_worker("cpu-w1")
    core = make_core(loop, [{**ECHO, "max_batch_size": 2}], [first, second])
    room = 2 * PIPELINE_BATCHES
    jobs = [core.submit("echo", n) for n in range(2 * room + 2)]
    core.dispatcher.dispatch()
    assert [run_ids(run) for run in fake(first).runs()] == [[job.id for job in jobs[:room]]]
    assert [run_ids(run) for run in fake(second).runs()] == [[job.id for job in jobs[room:2 * room]]]
    assert first.outstanding_items == second.outstanding_items == room
    assert [job.status for job in jobs[2 * room:]] == [JobStatus.QUEUED] * 2
    core.dispatcher.dispatch()  # full pipelines: nothing more until results come
    assert len(fake(first).runs()) == len(fake(second).runs()) == 1
    core.events.on_message(first, results(first, "echo", jobs[0].id))
    core.dispatcher.dispatch()  # one item of room on the first worker
    assert [run_ids(run) for run in fake(first).runs()][1:] == [[jobs[2 * room].id]]
    assert first.outstanding_items == first.models["echo"].in_flight == room


def test_high_priority_jobs_are_sent_before_normal_ones(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    core = make_core(loop, [{"name": "sleep", "adapter": "sleep"}], [worker])  # max_batch_size 1: room for 2
    normal = [core.submit("sleep", 0) for _ in range(2)]
    low = core.submit("sleep", 0, priority="low")
    high = core.submit("sleep", 0, priority="high")
    core.dispatcher.dispatch()
    assert [run_ids(run) for run in fake(worker).runs()] == [[high.id, normal[0].id]]
    assert (normal[1].status, low.status) == (JobStatus.QUEUED, JobStatus.QUEUED)


def test_the_model_whose_head_job_comes_first_by_priority_is_dispatched_first(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    core = make_core(loop, [ECHO, {"name": "sleep", "adapter": "sleep"}], [worker])
    core.submit("echo", 1)
    core.submit("sleep", 0, priority="high")
    core.dispatcher.dispatch()
    assert [run.model for run in fake(worker).runs()] == ["sleep", "echo"]


def test_nothing_is_dispatched_once_the_dispatcher_is_stopped(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    core = make_core(loop, [ECHO], [worker])
    job = core.submit("echo", 1)
    core.dispatcher.stop()
    core.dispatcher.dispatch()
    assert fake(worker).sent == [] and job.status is JobStatus.QUEUED and worker.models == {}


@pytest.mark.parametrize(("on_gpu", "net_vram_mb", "message"), [
    (False, 0, NEEDS_GPU_MESSAGE),  # a GPU model and only a CPU worker
    (True, 4096, NO_FIT_MESSAGE),  # larger than the only card
])
def test_a_model_no_worker_can_ever_run_fails_its_queued_jobs_as_placement(
        loop: asyncio.AbstractEventLoop, on_gpu: bool, net_vram_mb: int, message: str) -> None:
    worker = make_worker("gpu0-w0", 0, "cuda:0") if on_gpu else make_worker()
    gpus = (GpuInfo(index=0, name="small", total_bytes=1024 * MIB),) if on_gpu else ()
    net = {"name": "net", "adapter": "echo", "device": "gpu", "vram_mb": net_vram_mb}
    core = make_core(loop, [net, {**ECHO, "device": "auto"}], [worker], gpus)
    doomed = [core.submit("net", n) for n in range(3)]
    fine = core.submit("echo", 1)
    core.dispatcher.dispatch()
    for job in doomed:
        assert (job.status, job.error_kind, job.error) == (JobStatus.ERROR, "placement", message)
    assert fine.status is JobStatus.PROCESSING
    assert core.table.queued_count_by_model["net"] == 0


def test_the_queued_jobs_of_a_model_no_longer_registered_fail(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    core = make_core(loop, [ECHO], [worker])
    jobs = [core.submit("echo", n) for n in range(2)]
    del core.registry.models["echo"]
    core.dispatcher.dispatch()
    for job in jobs:
        assert (job.status, job.error_kind) == (JobStatus.ERROR, "model")
        assert "no longer registered" in (job.error or "")
    assert fake(worker).sent == []


def test_a_suspect_runs_alone_on_an_idle_worker_that_takes_nothing_else_until_it_ends(loop: asyncio.AbstractEventLoop) -> None:
    first, second = make_worker("cpu-w0"), make_worker("cpu-w1")
    core = make_core(loop, [ECHO], [first, second])
    suspect = core.suspect("echo", "suspect-1")
    others = [core.submit("echo", n) for n in range(3)]
    core.dispatcher.dispatch()
    assert [run_ids(run) for run in fake(first).runs()] == [[suspect.id]]
    assert (suspect.attempts, suspect.status) == (2, JobStatus.PROCESSING)
    assert first.solo_job_id == suspect.id and not first.ready
    assert [run_ids(run) for run in fake(second).runs()] == [[job.id for job in others]]
    later = core.submit("echo", 9)
    core.events.on_message(second, results(second, "echo", *(job.id for job in others)))
    core.dispatcher.dispatch()
    assert len(fake(first).runs()) == 1 and later.worker_id == "cpu-w1"
    core.events.on_message(first, results(first, "echo", suspect.id))
    assert suspect.status is JobStatus.COMPLETED
    assert first.solo_job_id is None and first.ready


def test_a_suspect_alone_on_the_only_worker_holds_back_the_other_jobs(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    core = make_core(loop, [ECHO], [worker])
    suspect = core.suspect("echo", "suspect-1")
    core.dispatcher.dispatch()
    waiting = core.submit("echo", 1)
    core.dispatcher.dispatch()
    assert [run_ids(run) for run in fake(worker).runs()] == [[suspect.id]]
    assert waiting.status is JobStatus.QUEUED
    core.events.on_message(worker, results(worker, "echo", suspect.id))
    core.dispatcher.dispatch()
    assert [run_ids(run) for run in fake(worker).runs()][1:] == [[waiting.id]]


def test_without_an_idle_worker_the_least_busy_one_is_reserved_for_the_suspect(loop: asyncio.AbstractEventLoop) -> None:
    busy, less_busy = make_worker("cpu-w0"), make_worker("cpu-w1")
    core = make_core(loop, [{**ECHO, "max_batch_size": 2}], [busy, less_busy])
    jobs = [core.submit("echo", n) for n in range(5)]
    core.dispatcher.dispatch()  # 4 to the first worker (its pipeline), the 5th to a copy on the second
    assert (busy.outstanding_items, less_busy.outstanding_items) == (4, 1)
    suspect = core.suspect("echo", "suspect-1")
    core.dispatcher.dispatch()
    assert less_busy.reserved_for == suspect.id and not less_busy.ready
    assert busy.reserved_for is None and suspect.status is JobStatus.QUEUED
    blocked = core.submit("echo", 9)
    core.dispatcher.dispatch()
    assert len(fake(less_busy).runs()) == 1 and blocked.status is JobStatus.QUEUED  # it drains
    core.events.on_message(less_busy, results(less_busy, "echo", jobs[4].id))
    core.dispatcher.dispatch()
    assert [run_ids(run) for run in fake(less_busy).runs()][1:] == [[suspect.id]]
    assert less_busy.solo_job_id == suspect.id and less_busy.reserved_for is None
    assert blocked.status is JobStatus.QUEUED  # the first worker is still full, the second runs the suspect


def test_an_adapter_with_items_counts_items_not_jobs(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    adapter = f"{__name__}:ItemsAdapter"
    core = make_core(loop, [{"name": "split", "adapter": adapter}], [worker])  # 4 per batch: room for 8 items
    jobs = [core.submit("split", ["a", "b", "c"]) for _ in range(3)] + [core.submit("split", ["z"])]
    core.dispatcher.dispatch()
    assert [run_ids(run) for run in fake(worker).runs()] == [[job.id for job in jobs[:3]]]  # 3 + 3 + 3 >= 8
    assert worker.in_flight == {job.id: 3 for job in jobs[:3]}
    assert worker.outstanding_items == 9 and jobs[3].status is JobStatus.QUEUED
    other = make_worker("cpu-w1")
    core.workers[other.worker_id] = other
    large = core.submit("split", list(range(10)))
    core.dispatcher.dispatch()
    assert other.in_flight == {jobs[3].id: 1, large.id: 4}  # a job counts at most one batch


def test_an_eviction_unloads_the_idle_model_before_the_new_one_runs(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker("gpu0-w0", 0, "cuda:0")
    worker.models["old"] = LoadedModel(20_000.0, last_used=1.0, loading=False)
    card = GpuInfo(index=0, name="card", total_bytes=24 * 1024 * MIB)
    core = make_core(loop, [{"name": "new", "adapter": "echo", "device": "gpu", "vram_mb": 8000}], [worker], (card,))
    job = core.submit("new", 1)
    core.dispatcher.dispatch()
    assert fake(worker).messages() == [m.UnloadModel("old"), m.RunJobs("new", [m.JobItem(job.id, 1)])]
    assert set(worker.models) == {"new"}


def test_place_load_sends_load_model_or_says_why_not(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker(state=WorkerState.STARTING)
    core = make_core(loop, [ECHO, {"name": "net", "adapter": "echo", "device": "gpu"}], [worker])
    assert isinstance(core.dispatcher.place_load(core.registry.get("echo")), str)  # no worker ready yet
    assert isinstance(core.dispatcher.place_load(core.registry.get("net")), Reject)
    worker.watch.ready(0.0)
    assert core.dispatcher.place_load(core.registry.get("echo")) is worker
    assert fake(worker).messages() == [m.LoadModel("echo")]
    assert worker.models["echo"].loading and worker.models["echo"].in_flight == 0
