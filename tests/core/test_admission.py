"""Admission (`Admission`): what a submission is refused for (not accepting, an unknown model, an
invalid field, a full queue, a model no worker can run), idempotency keys, a model in its load
back-off, the default timeout and `on_admitted`. Over real collaborators wired as `Scheduler` wires
them, with a fake journal (`tests.support.fakes`): no process, no thread."""

from __future__ import annotations

import math
from typing import Any

import pytest

from scheduler.core.catalog import ModelCatalog
from scheduler.core.jobs import Job, JobRequest, JobStatus
from scheduler.errors import (
    InvalidInputError,
    ModelNotFoundError,
    NoFitError,
    NotRunningError,
    QueueFullError,
    SchedulerError,
)
from tests.support.fakes import ECHO, SLEEP, make_core, make_journaled_core, make_worker


def test_admission_refuses_when_not_accepting_or_the_model_is_unknown() -> None:
    core = make_core()
    with pytest.raises(ModelNotFoundError, match="nope"):
        core.submit("nope")
    core.admission.close()
    with pytest.raises(NotRunningError):
        core.submit()
    assert core.table.jobs == {} and core.admitted == []


@pytest.mark.parametrize(
    ("model", "inputs", "fields", "field_name"),
    [
        ("echo", 1, {"priority": "urgent"}, "priority"),
        ("echo", 1, {"timeout_s": 0.0}, "timeout_s"),
        ("echo", 1, {"timeout_s": -3.0}, "timeout_s"),
        ("echo", 1, {"timeout_s": math.nan}, "timeout_s"),
        ("echo", 1, {"timeout_s": math.inf}, "timeout_s"),
        ("sleep", "long", {}, "inputs"),  # the adapter's `validate`
    ],
)
def test_admission_names_the_invalid_field(
    model: str, inputs: Any, fields: dict[str, Any], field_name: str
) -> None:
    core = make_core(models=(ECHO, SLEEP))
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
    journal, core = make_journaled_core()
    first = core.submit(idempotency_key="k1")
    again, created = core.admission.admit(JobRequest(model="echo", inputs=2, idempotency_key="k1"))
    assert again is first and not created
    assert len(core.table.jobs) == 1 and core.admitted == [1]
    forgotten = Job(id="old", model="echo", inputs=None, status=JobStatus.COMPLETED, idempotency_key="k0")
    journal.by_key["k0"] = forgotten  # ended, and no longer in memory
    assert core.admission.admit(JobRequest(model="echo", inputs=3, idempotency_key="k0")) == (
        forgotten,
        False,
    )


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


def test_a_model_run_outside_the_workers_is_never_refused_nor_loaded_on_them() -> None:
    on_gpu = {"adapter": "echo", "device": "gpu"}  # and this daemon has only a CPU worker
    core = make_core([make_worker()], models=(ECHO, {"name": "render", **on_gpu}, {"name": "big", **on_gpu}))
    catalog = ModelCatalog(
        core.registry, core.workers, core.dispatcher, core.inventory, {"render": object()}, 1.0
    )
    catalog.refresh_fit()
    assert core.registry.get("render").no_fit is None
    assert core.registry.get("big").no_fit == "This model needs a GPU and the daemon has none"
    with pytest.raises(SchedulerError, match="does not run on the model workers"):
        catalog.load("render")
    with pytest.raises(SchedulerError, match="does not run on the model workers"):
        catalog.unload("render")
    assert catalog.load("echo") == ["cpu-w0"] and catalog.unload("echo") == ["cpu-w0"]


def test_admitting_many_answers_each_in_order_and_asks_for_one_dispatch_pass() -> None:
    """`admit_all` (an HTTP front's frame of infers): each request admitted or refused as `admit`
    would, in order; a refusal takes only its own request; one dispatch pass asked for."""
    core = make_core(models=(ECHO, SLEEP), max_queue=3)
    requests = [
        JobRequest(model="echo", inputs=1),
        JobRequest(model="echo", inputs=2, priority="urgent"),
        JobRequest(model="nope", inputs=3),
        JobRequest(model="echo", inputs=4, idempotency_key="k"),
        JobRequest(model="echo", inputs=5, idempotency_key="k"),  # the one before, again
        JobRequest(model="sleep", inputs=0.0),
        JobRequest(model="echo", inputs=6),  # the queue holds 3 already
    ]
    admitted = core.admission.admit_all(requests, validated=True)
    assert [type(outcome).__name__ for outcome in admitted] == [
        "tuple", "InvalidInputError", "ModelNotFoundError", "tuple", "tuple", "tuple", "QueueFullError",
    ]  # fmt: skip
    jobs = [outcome for outcome in admitted if isinstance(outcome, tuple)]
    assert [(job.inputs, created) for job, created in jobs] == [(1, True), (4, True), (4, False), (0.0, True)]
    assert jobs[1][0] is jobs[2][0] and len(core.table.jobs) == 3
    assert core.admitted == [1]  # one dispatch pass asked for
    core.admission.close()
    assert all(isinstance(outcome, NotRunningError) for outcome in core.admission.admit_all(requests))
