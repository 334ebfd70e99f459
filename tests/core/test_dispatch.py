"""The dispatch pass (`Dispatcher`): which worker gets which queued jobs, in what order and how many,
suspects run alone, placement failures, evictions. Over real collaborators wired as `Scheduler` wires
them, with fake worker channels (`tests.support.fakes`): no process, no thread, the loop only as
`start` needs one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.base import BaseAdapter
from scheduler.core.devices import MIB, GpuInfo
from scheduler.core.dispatch import PIPELINE_BATCHES
from scheduler.core.jobs import JobStatus
from scheduler.core.placement import NEEDS_GPU_MESSAGE, NO_FIT_MESSAGE, LoadedModel, Reject
from scheduler.errors import WorkerState
from tests.support.fakes import ECHO, SLEEP, fake, make_core, make_worker, results
from workers import protocol as m


class ItemsAdapter(BaseAdapter):
    """A job is a list; each element is one item of the worker's batches."""

    name = "items"
    device = "cpu"
    max_batch_size = 4

    def items(self, inputs: Any) -> list[Any]:
        return list(inputs)


def test_queued_jobs_go_in_one_run_jobs_to_a_ready_worker_that_loads_the_model_lazily(
    loop: asyncio.AbstractEventLoop,
) -> None:
    worker = make_worker()
    core = make_core([worker], [ECHO], loop=loop)
    jobs = [core.submit("echo", {"n": n}) for n in range(3)]
    core.dispatcher.dispatch()
    assert fake(worker).messages() == [
        m.RunJobs("echo", [m.JobItem(job.id, {"n": n}) for n, job in enumerate(jobs)])
    ]
    for job in jobs:
        assert (job.status, job.attempts, job.worker_id, job.device) == (
            JobStatus.PROCESSING,
            1,
            "cpu-w0",
            "cpu",
        )
    assert worker.in_flight == {job.id: 1 for job in jobs}
    assert worker.outstanding_items == 3
    loaded = worker.models["echo"]
    assert loaded.loading and loaded.in_flight == 3  # no LoadModel: the first RunJobs loads it


def test_a_worker_holding_the_model_is_preferred_and_a_worker_not_ready_gets_nothing(
    loop: asyncio.AbstractEventLoop,
) -> None:
    empty, holder = make_worker("cpu-w0"), make_worker("cpu-w1")
    starting = make_worker("cpu-w2", state=WorkerState.STARTING)
    holder.models["echo"] = LoadedModel(0.0, loading=False)
    core = make_core([empty, holder, starting], [ECHO], loop=loop)
    job = core.submit("echo", 1)
    core.dispatcher.dispatch()
    assert fake(holder).run_ids() == [[job.id]]
    assert fake(empty).sent == [] and fake(starting).sent == []
    assert (
        not holder.models["echo"].loading and holder.models["echo"].in_flight == 1
    )  # kept, not loaded again


def test_no_ready_worker_means_the_jobs_wait_queued(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker(state=WorkerState.STARTING)
    core = make_core([worker], [ECHO], loop=loop)
    job = core.submit("echo", 1)
    core.dispatcher.dispatch()
    assert job.status is JobStatus.QUEUED and fake(worker).sent == []
    worker.watch.ready(0.0)
    core.dispatcher.dispatch()
    assert fake(worker).run_ids() == [[job.id]]


def test_each_worker_gets_one_run_jobs_capped_by_its_pipeline_room(loop: asyncio.AbstractEventLoop) -> None:
    first, second = make_worker("cpu-w0"), make_worker("cpu-w1")
    core = make_core([first, second], [{**ECHO, "max_batch_size": 2}], loop=loop)
    room = 2 * PIPELINE_BATCHES
    jobs = [core.submit("echo", n) for n in range(2 * room + 2)]
    core.dispatcher.dispatch()
    assert fake(first).run_ids() == [[job.id for job in jobs[:room]]]
    assert fake(second).run_ids() == [[job.id for job in jobs[room : 2 * room]]]
    assert first.outstanding_items == second.outstanding_items == room
    assert [job.status for job in jobs[2 * room :]] == [JobStatus.QUEUED] * 2
    core.dispatcher.dispatch()  # full pipelines: nothing more until results come
    assert len(fake(first).runs()) == len(fake(second).runs()) == 1
    core.say(first, results("echo", jobs[0].id))
    core.dispatcher.dispatch()  # one item of room on the first worker
    assert fake(first).run_ids()[1:] == [[jobs[2 * room].id]]
    assert first.outstanding_items == first.models["echo"].in_flight == room


def test_high_priority_jobs_are_sent_before_normal_ones(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    core = make_core([worker], [SLEEP], loop=loop)  # max_batch_size 1: room for 2
    normal = [core.submit("sleep", 0) for _ in range(2)]
    low = core.submit("sleep", 0, priority="low")
    high = core.submit("sleep", 0, priority="high")
    core.dispatcher.dispatch()
    assert fake(worker).run_ids() == [[high.id, normal[0].id]]
    assert (normal[1].status, low.status) == (JobStatus.QUEUED, JobStatus.QUEUED)


def test_the_model_whose_head_job_comes_first_by_priority_is_dispatched_first(
    loop: asyncio.AbstractEventLoop,
) -> None:
    worker = make_worker()
    core = make_core([worker], [ECHO, SLEEP], loop=loop)
    core.submit("echo", 1)
    core.submit("sleep", 0, priority="high")
    core.dispatcher.dispatch()
    assert [run.model for run in fake(worker).runs()] == ["sleep", "echo"]


def test_nothing_is_dispatched_once_the_dispatcher_is_stopped(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    core = make_core([worker], [ECHO], loop=loop)
    job = core.submit("echo", 1)
    core.dispatcher.stop()
    core.dispatcher.dispatch()
    assert fake(worker).sent == [] and job.status is JobStatus.QUEUED and worker.models == {}


@pytest.mark.parametrize(
    ("on_gpu", "net_vram_mb", "message"),
    [
        (False, 0, NEEDS_GPU_MESSAGE),  # a GPU model and only a CPU worker
        (True, 4096, NO_FIT_MESSAGE),  # larger than the only card
    ],
)
def test_a_model_no_worker_can_ever_run_fails_its_queued_jobs_as_placement(
    loop: asyncio.AbstractEventLoop, on_gpu: bool, net_vram_mb: int, message: str
) -> None:
    worker = make_worker("gpu0-w0", 0, "cuda:0") if on_gpu else make_worker()
    gpus = (GpuInfo(index=0, name="small", total_bytes=1024 * MIB),) if on_gpu else ()
    net = {"name": "net", "adapter": "echo", "device": "gpu", "vram_mb": net_vram_mb}
    core = make_core([worker], [net, {**ECHO, "device": "auto"}], loop=loop, gpus=gpus)
    doomed = [core.submit("net", n) for n in range(3)]
    fine = core.submit("echo", 1)
    core.dispatcher.dispatch()
    for job in doomed:
        assert (job.status, job.error_kind, job.error) == (JobStatus.ERROR, "placement", message)
    assert fine.status is JobStatus.PROCESSING
    assert core.table.queued_count_by_model["net"] == 0


def test_the_queued_jobs_of_a_model_no_longer_registered_fail(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    core = make_core([worker], [ECHO], loop=loop)
    jobs = [core.submit("echo", n) for n in range(2)]
    del core.registry.models["echo"]
    core.dispatcher.dispatch()
    for job in jobs:
        assert (job.status, job.error_kind) == (JobStatus.ERROR, "model")
        assert "no longer registered" in (job.error or "")
    assert fake(worker).sent == []


def test_a_suspect_runs_alone_on_an_idle_worker_that_takes_nothing_else_until_it_ends(
    loop: asyncio.AbstractEventLoop,
) -> None:
    first, second = make_worker("cpu-w0"), make_worker("cpu-w1")
    core = make_core([first, second], [ECHO], loop=loop)
    suspect = core.suspect("echo", "suspect-1")
    others = [core.submit("echo", n) for n in range(3)]
    core.dispatcher.dispatch()
    assert fake(first).run_ids() == [[suspect.id]]
    assert (suspect.attempts, suspect.status) == (2, JobStatus.PROCESSING)
    assert first.solo_job_id == suspect.id and not first.ready
    assert fake(second).run_ids() == [[job.id for job in others]]
    later = core.submit("echo", 9)
    core.say(second, results("echo", *(job.id for job in others)))
    core.dispatcher.dispatch()
    assert len(fake(first).runs()) == 1 and later.worker_id == "cpu-w1"
    core.say(first, results("echo", suspect.id))
    assert suspect.status is JobStatus.COMPLETED
    assert first.solo_job_id is None and first.ready


def test_a_suspect_alone_on_the_only_worker_holds_back_the_other_jobs(
    loop: asyncio.AbstractEventLoop,
) -> None:
    worker = make_worker()
    core = make_core([worker], [ECHO], loop=loop)
    suspect = core.suspect("echo", "suspect-1")
    core.dispatcher.dispatch()
    waiting = core.submit("echo", 1)
    core.dispatcher.dispatch()
    assert fake(worker).run_ids() == [[suspect.id]]
    assert waiting.status is JobStatus.QUEUED
    core.say(worker, results("echo", suspect.id))
    core.dispatcher.dispatch()
    assert fake(worker).run_ids()[1:] == [[waiting.id]]


def test_without_an_idle_worker_the_least_busy_one_is_reserved_for_the_suspect(
    loop: asyncio.AbstractEventLoop,
) -> None:
    busy, less_busy = make_worker("cpu-w0"), make_worker("cpu-w1")
    core = make_core([busy, less_busy], [{**ECHO, "max_batch_size": 2}], loop=loop)
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
    core.say(less_busy, results("echo", jobs[4].id))
    core.dispatcher.dispatch()
    assert fake(less_busy).run_ids()[1:] == [[suspect.id]]
    assert less_busy.solo_job_id == suspect.id and less_busy.reserved_for is None
    assert blocked.status is JobStatus.QUEUED  # the first worker is still full, the second runs the suspect


def test_an_adapter_with_items_counts_items_not_jobs(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    adapter = f"{__name__}:ItemsAdapter"
    split = {"name": "split", "adapter": adapter}  # 4 per batch: room for 8 items
    core = make_core([worker], [split], loop=loop)
    jobs = [core.submit("split", ["a", "b", "c"]) for _ in range(3)] + [core.submit("split", ["z"])]
    core.dispatcher.dispatch()
    assert fake(worker).run_ids() == [[job.id for job in jobs[:3]]]  # 3 + 3 + 3 >= 8
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
    new = {"name": "new", "adapter": "echo", "device": "gpu", "vram_mb": 8000}
    core = make_core([worker], [new], loop=loop, gpus=(card,))
    job = core.submit("new", 1)
    core.dispatcher.dispatch()
    assert fake(worker).messages() == [m.UnloadModel("old"), m.RunJobs("new", [m.JobItem(job.id, 1)])]
    assert set(worker.models) == {"new"}


def test_place_load_sends_load_model_or_says_why_not(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker(state=WorkerState.STARTING)
    core = make_core([worker], [ECHO, {"name": "net", "adapter": "echo", "device": "gpu"}], loop=loop)
    assert isinstance(core.dispatcher.place_load(core.registry.get("echo")), str)  # no worker ready yet
    assert isinstance(core.dispatcher.place_load(core.registry.get("net")), Reject)
    worker.watch.ready(0.0)
    assert core.dispatcher.place_load(core.registry.get("echo")) is worker
    assert fake(worker).messages() == [m.LoadModel("echo")]
    assert worker.models["echo"].loading and worker.models["echo"].in_flight == 0
