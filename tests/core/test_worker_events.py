"""What workers say and what their deaths mean for jobs (`WorkerEvents`): results, loads and failed
loads with their back-off, ready and heartbeats, deaths that requeue jobs as suspects or poison them.
Over real collaborators wired as `Scheduler` wires them, with fake worker channels and a fake journal
(`tests.support.fakes`): no process."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from scheduler.core.devices import MIB, GpuInfo
from scheduler.core.jobs import Job, JobStatus
from scheduler.core.workers import Worker
from scheduler.errors import ErrorKind, WorkerState
from tests.support.fakes import (
    ECHO,
    LOAD_BACKOFF_S,
    Core,
    FakeJournal,
    fake,
    make_core,
    make_journaled_core,
    make_worker,
)
from workers import protocol as m


def jobs_on_one_worker(
    loop: asyncio.AbstractEventLoop, count: int, max_batch_size: int, **options: Any
) -> tuple[Worker, Core, list[Job]]:
    """One ready worker, `echo` at `max_batch_size` items a batch, `count` jobs submitted and the
    dispatch pass they scheduled run: the worker holds what its pipeline has room for."""
    worker = make_worker()
    core = make_core([worker], [{**ECHO, "max_batch_size": max_batch_size}], loop=loop, **options)
    jobs = [core.submit(inputs=n) for n in range(count)]
    core.turn()
    return worker, core, jobs


def test_results_end_jobs_completed_or_with_their_error_kind_and_free_pipeline_room(
    loop: asyncio.AbstractEventLoop,
) -> None:
    worker, core, jobs = jobs_on_one_worker(loop, 5, max_batch_size=2)
    assert fake(worker).run_ids() == [[job.id for job in jobs[:4]]]
    core.say(
        worker,
        m.JobResults(
            "echo",
            2,
            0.25,
            [
                m.JobOutcome(jobs[0].id, output={"echo": 0}),
                m.JobOutcome(jobs[1].id, error="ValueError: bad", error_kind=ErrorKind.MODEL),
            ],
        ),
    )
    assert (jobs[0].status, jobs[0].result) == (JobStatus.COMPLETED, {"echo": 0})
    assert (jobs[1].status, jobs[1].error, jobs[1].error_kind) == (
        JobStatus.ERROR,
        "ValueError: bad",
        "model",
    )
    assert set(worker.in_flight) == {jobs[2].id, jobs[3].id} and worker.outstanding_items == 2
    assert worker.models["echo"].in_flight == 2 and worker.jobs_done == 2
    assert core.batches == [("cpu-w0", "echo", 2, 0.25)]
    core.turn()  # the results scheduled a dispatch pass: the freed room takes the last job
    assert fake(worker).run_ids()[1:] == [[jobs[4].id]]


def test_results_for_a_job_cancelled_meanwhile_are_dropped(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    core = make_core([worker], loop=loop)
    job, other = core.submit(), core.submit()
    core.turn()
    core.endings.finish(
        job, JobStatus.CANCELLED, error="cancelled by request", error_kind=ErrorKind.CANCELLED
    )
    core.say(
        worker,
        m.JobResults(
            "echo", 2, 0.01, [m.JobOutcome(job.id, output="late"), m.JobOutcome("never-sent", output="?")]
        ),
    )
    assert (job.status, job.result, job.error_kind) == (JobStatus.CANCELLED, None, "cancelled")
    assert set(worker.in_flight) == {other.id} and worker.outstanding_items == 1 and worker.jobs_done == 1


def test_a_failed_load_fails_its_jobs_and_backs_off_doubling_per_failure(
    loop: asyncio.AbstractEventLoop,
) -> None:
    worker, core, jobs = jobs_on_one_worker(loop, 4, max_batch_size=1)
    assert fake(worker).run_ids() == [[jobs[0].id, jobs[1].id]]
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


@pytest.mark.parametrize(
    ("on_gpu", "card", "measured_mb", "ledger_mb"),
    [
        (True, REAL_CARD, 3000, 3000.0),  # measured replaces declared
        (True, REAL_CARD, 0, 1000.0),  # nothing measured: declared stays
        (True, SIMULATED_CARD, 3000, 1000.0),
        (False, REAL_CARD, 3000, 1000.0),  # the CPU
    ],
)
def test_model_loaded_puts_the_measured_size_in_the_ledger_only_on_a_real_card(
    loop: asyncio.AbstractEventLoop, on_gpu: bool, card: GpuInfo, measured_mb: int, ledger_mb: float
) -> None:
    worker = make_worker("gpu0-w0", 0, "cuda:0") if on_gpu else make_worker()
    net = {"name": "net", "adapter": "echo", "device": "auto", "vram_mb": 1000}
    core = make_core([worker], [net], loop=loop, gpus=(card,))
    core.submit("net")
    core.turn()
    loaded = worker.models["net"]
    assert loaded.loading and loaded.size_mb == 1000.0
    core.say(worker, m.ModelLoaded("net", measured_mb * MIB, 1.5))
    assert not loaded.loading and loaded.size_mb == ledger_mb
    assert worker.measured_bytes["net"] == measured_mb * MIB


def test_ready_and_heartbeat_feed_supervision_and_ready_schedules_a_dispatch(
    loop: asyncio.AbstractEventLoop,
) -> None:
    worker = make_worker(state=WorkerState.STARTING)
    core = make_core([worker], loop=loop)
    job = core.submit()
    core.turn()
    assert fake(worker).run_ids() == []
    core.say(worker, m.Ready("cpu-w0", 4242, "cpu", "0"))
    assert worker.state is WorkerState.READY and worker.cuda_visible_devices == "0"
    core.turn()
    assert fake(worker).run_ids() == [[job.id]]
    core.say(worker, m.Heartbeat(worker_id="cpu-w0", sent_at=123.0, rss_bytes=5 * MIB))
    assert (worker.last_heartbeat_wall, worker.rss_bytes) == (123.0, 5 * MIB)
    assert worker.watch.last_heartbeat > 0


def test_a_worker_death_requeues_its_jobs_as_suspects_with_their_try_counted(
    loop: asyncio.AbstractEventLoop,
) -> None:
    dying, spare = make_worker("cpu-w0"), make_worker("cpu-w1", state=WorkerState.STARTING)
    journal, core = make_journaled_core([dying, spare], loop=loop)
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
    assert fake(spare).run_ids() == [[jobs[0].id]]  # alone
    assert spare.solo_job_id == jobs[0].id and jobs[0].attempts == 2


def test_a_job_whose_attempts_reach_max_attempts_fails_as_poison(loop: asyncio.AbstractEventLoop) -> None:
    first, second = make_worker("cpu-w0"), make_worker("cpu-w1")
    journal, core = make_journaled_core([first, second], loop=loop, max_attempts=2)
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
def test_a_worker_restarted_on_purpose_gives_its_jobs_back_without_a_try(
    loop: asyncio.AbstractEventLoop, how: str
) -> None:
    journal = FakeJournal(loop)
    worker, core, jobs = jobs_on_one_worker(loop, 3, max_batch_size=1, journal=journal)
    assert fake(worker).run_ids() == [[jobs[0].id, jobs[1].id]]
    restarted_on_purpose(worker, how)
    core.events.on_exit(worker)
    assert worker.state is WorkerState.DEAD
    for job in jobs:
        assert (job.status, job.attempts, job.worker_id) == (JobStatus.QUEUED, 0, None)
    assert core.table.waiting_suspects() == [] and journal.attempts == []
    again = core.table.pop_queued("echo", 3)
    assert again == jobs  # at the head, in their order


def test_jobs_given_back_keep_their_first_in_first_out_order(loop: asyncio.AbstractEventLoop) -> None:
    worker, core, jobs = jobs_on_one_worker(loop, 3, max_batch_size=1)
    worker.no_penalty = True
    core.events.on_exit(worker)
    assert core.table.pop_queued("echo", 3) == jobs


def test_a_failed_load_also_fails_the_waiting_suspects_of_that_model(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    core = make_core([worker], loop=loop)
    job = core.submit()
    core.dispatcher.dispatch()
    suspect = core.suspect("echo", "suspect-1")
    core.dispatcher.dispatch()
    assert worker.reserved_for == suspect.id  # it waits for the only worker to drain
    core.say(worker, m.ModelLoadFailed("echo", "CUDA out of memory", [job.id]))
    core.turn()
    assert (job.status, job.error_kind) == (JobStatus.ERROR, "load")
    assert fake(worker).run_ids() == [[job.id]]  # not sent to load the model again during its back-off
    assert (suspect.status, suspect.error_kind) == (JobStatus.ERROR, "load")
