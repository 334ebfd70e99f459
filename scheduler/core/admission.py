"""`Admission`: whether a submitted job may be queued, and queueing it.

A job is admitted when the scheduler accepts jobs, its model (or each stage's model, for a
pipeline's job: `scheduler.core.pipelines`) is registered and some worker can ever run it (else
`NoFitError`), the adapter's `validate` accepts its inputs, its priority and timeout are
valid and the queue has room. An idempotency key already seen answers the first job again (from the
journal when the table no longer holds it). A model in its load back-off fails the job at once.
The journal must have room too (`JobJournal.check_room`: its commits succeed, and it is not full).
"""

from __future__ import annotations

import math
import random
import secrets
import time
from collections.abc import Callable, Mapping, Sequence

from scheduler.core.deadlines import Deadlines
from scheduler.core.endings import JobEndings
from scheduler.core.jobs import Job, JobRequest, JobStatus, Priority
from scheduler.core.models import ModelRegistry, RegisteredModel
from scheduler.core.pipelines import Pipelines
from scheduler.core.ports import JobExecutor, JobJournal
from scheduler.core.table import JobTable
from scheduler.errors import ErrorKind, InvalidInputError, NoFitError, NotRunningError, QueueFullError

# seeded from the OS once: no system call per job
_random_bits = random.Random(secrets.token_bytes(32)).getrandbits
_time_ns = time.time_ns


def new_job_id() -> str:
    """32 hex digits: creation time in milliseconds (12), then 80 random bits. Ids sort by creation, so
    the journal's id index grows at its right edge instead of at random places. Ids name jobs; they are
    not secrets (the bearer token guards the API)."""
    return "%012x%020x" % (_time_ns() // 1_000_000, _random_bits(80))  # noqa: UP031 (a fifth faster than an f-string)


class Admission:
    """registry, table: models and jobs; endings: fails a job of a model in load back-off; deadlines:
    watches a job's timeout; journal: idempotency keys of jobs no longer in memory; executors: models
    run outside the workers (their queue room is checked here); on_admitted: called once per new job
    (the dispatch pass is scheduled); max_queue, default_timeout_s: from the settings.
    `admitted_by_model` counts each new client job once (not a replayed idempotency key, nor a
    pipeline's stages or CPU calls, which do not come through here): the metrics read it."""

    def __init__(
        self,
        registry: ModelRegistry,
        table: JobTable,
        endings: JobEndings,
        deadlines: Deadlines,
        journal: JobJournal | None,
        executors: Mapping[str, JobExecutor],
        pipelines: Pipelines,
        on_admitted: Callable[[], None],
        *,
        max_queue: int,
        default_timeout_s: float,
    ) -> None:
        self.registry = registry
        self.table = table
        self.endings = endings
        self.deadlines = deadlines
        self.journal = journal
        self.executors = executors
        self.pipelines = pipelines
        self.on_admitted = on_admitted
        self.max_queue = max_queue
        self.default_timeout_s = default_timeout_s or None
        self.accepting = False
        self.admitted_by_model: dict[str, int] = {}

    def open(self) -> None:
        """Accept submissions (the scheduler has started)."""
        self.accepting = True

    def close(self) -> None:
        """Refuse submissions with NotRunningError from now on (the shutdown has begun)."""
        self.accepting = False

    def admit(self, request: JobRequest, validated: bool = False) -> tuple[Job, bool]:
        """The job for `request`, and whether it is new (False: its idempotency key named an earlier one).
        `validated`: its inputs passed the model's adapter `validate` already (an HTTP front ran it)."""
        admitted = self.admit_all([request], validated)[0]
        if isinstance(admitted, Exception):
            raise admitted
        return admitted

    def admit_all(
        self, requests: Sequence[JobRequest], validated: bool = False
    ) -> list[tuple[Job, bool] | Exception]:
        """`admit` of each request, in order: its job and whether it is new, or why it was refused (the
        exception `admit` raises). What holds for them all is looked at once: whether the scheduler
        accepts jobs and the journal has room, a model's registration (of `validated` requests), and
        the dispatch pass is asked for once (an HTTP front's frame of requests: `FrontRequests`)."""
        if not self.accepting:
            refused = NotRunningError("the scheduler is not accepting jobs (not started, or shutting down)")
            return [refused for _ in requests]
        room_checked = self.journal is None or self.journal.problem() is None  # else each raises it
        registered_by_name: dict[str, RegisteredModel] = {}
        admitted: list[tuple[Job, bool] | Exception] = []
        queued = False
        now = time.monotonic()
        for request in requests:
            try:
                key = request.idempotency_key
                if key:
                    existing = self._by_key(key)
                    if existing is not None:
                        admitted.append((existing, False))
                        continue
                if request.pipeline:
                    job = self._admit_pipeline(request)
                    self.announce(job)
                    admitted.append((job, True))
                    continue
                model_name = request.model_name
                if validated:
                    registered = registered_by_name.get(model_name)
                    if registered is None:
                        registered = registered_by_name[model_name] = self.registry.get(model_name)
                else:
                    registered = self.registry.validate(model_name, request.inputs)
                job = self._new_job(request, registered, check_fit=True, room_checked=room_checked)
                self.table.add(job)
                self.announce(job)
                if registered.failed_error is not None and now < registered.failed_until:
                    self.endings.finish(
                        job,
                        JobStatus.ERROR,
                        error=f"model {model_name!r} failed to load: {registered.failed_error}",
                        error_kind=ErrorKind.LOAD,
                    )
                else:
                    if job.timeout_s is not None:
                        self.deadlines.watch(job, now + job.timeout_s)
                    queued = True
                admitted.append((job, True))  # last: one answer a request, whatever raised before it
            except Exception as exc:  # this request's refusal (the caller raises or answers it)
                admitted.append(exc)
        if queued:
            self.on_admitted()
        return admitted

    def new_job(self, request: JobRequest, check_fit: bool = True, validated: bool = False) -> Job:
        """The checked job of a model's request, not recorded anywhere yet (the cluster front records
        it in Redis, and checks the fit against the cluster's hosts instead: `check_fit` False)."""
        model_name = request.model_name
        if validated:
            registered = self.registry.get(model_name)
        else:
            registered = self.registry.validate(model_name, request.inputs)
        return self._new_job(request, registered, check_fit)

    def _new_job(
        self, request: JobRequest, registered: RegisteredModel, check_fit: bool, room_checked: bool = False
    ) -> Job:
        model_name = registered.spec.name
        if check_fit and registered.no_fit is not None:
            raise NoFitError(f"model {model_name!r} cannot run here: {registered.no_fit}")
        if self.executors:
            executor = self.executors.get(model_name)
            if executor is not None:
                executor.check_room()
        priority, timeout_s = self._checked(request, room_checked)
        return Job(
            id=new_job_id(),
            model=model_name,
            inputs=request.inputs,
            priority=priority,
            timeout_s=timeout_s,
            idempotency_key=request.idempotency_key,
            callback_url=request.callback_url,
        )

    def announce(self, job: Job) -> None:
        """Count a new client job (the cluster front calls it for jobs it records in Redis)."""
        counts = self.admitted_by_model
        counts[job.model] = counts.get(job.model, 0) + 1

    def _admit_pipeline(self, request: JobRequest) -> Job:
        pipeline = self.pipelines.validate(request.pipeline, request.inputs)
        priority, timeout_s = self._checked(request)
        job = Job(
            id=new_job_id(),
            model=pipeline.name,
            inputs=request.inputs,
            priority=priority,
            timeout_s=timeout_s,
            idempotency_key=request.idempotency_key,
            callback_url=request.callback_url,
            pipeline=pipeline.name,
            stages=self.pipelines.new_runs(pipeline),
        )
        self.table.add(job)
        if timeout_s is not None:
            self.deadlines.watch(job, time.monotonic() + timeout_s)
        self.pipelines.begin(job)
        return job

    def _checked(self, request: JobRequest, room_checked: bool = False) -> tuple[Priority, float | None]:
        """The priority and timeout, checked; and room in the queue, and in the journal (unless the
        caller found it has room: `room_checked`)."""
        try:
            priority = Priority.parse(request.priority)
        except ValueError as exc:
            raise InvalidInputError(str(exc), field="priority") from None
        timeout_s = request.timeout_s if request.timeout_s is not None else self.default_timeout_s
        if timeout_s is not None and (not math.isfinite(timeout_s) or timeout_s <= 0):
            raise InvalidInputError("timeout_s must be a positive number of seconds", field="timeout_s")
        if self.table.count_by_status[JobStatus.QUEUED] >= self.max_queue:
            raise QueueFullError(f"the queue is full ({self.max_queue} jobs waiting); retry later")
        if self.journal is not None and not room_checked:
            self.journal.check_room()  # its commits fail, or it is full of unfinished jobs: JournalError
        return priority, timeout_s

    def _by_key(self, key: str) -> Job | None:
        existing_id = self.table.by_idempotency_key.get(key)
        if existing_id is not None:
            return self.table.jobs[existing_id]
        if self.journal is not None:  # ended and no longer in memory (or before a restart)
            return self.journal.find_by_key(key)
        return None
