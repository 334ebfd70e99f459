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
from collections.abc import Callable, Mapping

from scheduler.core.deadlines import Deadlines
from scheduler.core.endings import JobEndings
from scheduler.core.jobs import Job, JobRequest, JobStatus, Priority
from scheduler.core.models import ModelRegistry
from scheduler.core.pipelines import Pipelines
from scheduler.core.ports import JobExecutor, JobJournal
from scheduler.core.table import JobTable
from scheduler.errors import ErrorKind, InvalidInputError, NoFitError, NotRunningError, QueueFullError

_id_random = random.Random(secrets.token_bytes(32))  # seeded from the OS once: no system call per job


def new_job_id() -> str:
    """32 hex digits: creation time in milliseconds (12), then 80 random bits. Ids sort by creation, so
    the journal's id index grows at its right edge instead of at random places. Ids name jobs; they are
    not secrets (the bearer token guards the API)."""
    return f"{time.time_ns() // 1_000_000:012x}{_id_random.getrandbits(80):020x}"


class Admission:
    """registry, table: models and jobs; endings: fails a job of a model in load back-off; deadlines:
    watches a job's timeout; journal: idempotency keys of jobs no longer in memory; executors: models
    run outside the workers (their queue room is checked here); on_admitted: called once per new job
    (the dispatch pass is scheduled); max_queue, default_timeout_s: from the settings.
    `admitted_observers` are told of each new client job once (not of a replayed idempotency key,
    nor of a pipeline's stages or CPU calls, which do not come through here): the metrics count it."""

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
        self.admitted_observers: list[Callable[[Job], None]] = []

    def open(self) -> None:
        """Accept submissions (the scheduler has started)."""
        self.accepting = True

    def close(self) -> None:
        """Refuse submissions with NotRunningError from now on (the shutdown has begun)."""
        self.accepting = False

    def admit(self, request: JobRequest, validated: bool = False) -> tuple[Job, bool]:
        """The job for `request`, and whether it is new (False: its idempotency key named an earlier one).
        `validated`: its inputs passed the model's adapter `validate` already (an HTTP front ran it)."""
        if not self.accepting:
            raise NotRunningError("the scheduler is not accepting jobs (not started, or shutting down)")
        key = request.idempotency_key
        if key:
            existing = self._by_key(key)
            if existing is not None:
                return existing, False
        if request.pipeline:
            job = self._admit_pipeline(request)
            self.announce(job)
            return job, True
        job = self.new_job(request, validated=validated)
        model_name = job.model
        registered = self.registry.models[model_name]
        self.table.add(job)
        self.announce(job)
        now = time.monotonic()
        if registered.failed_error is not None and now < registered.failed_until:
            self.endings.finish(
                job,
                JobStatus.ERROR,
                error=f"model {model_name!r} failed to load: {registered.failed_error}",
                error_kind=ErrorKind.LOAD,
            )
            return job, True
        if job.timeout_s is not None:
            self.deadlines.watch(job, now + job.timeout_s)
        self.on_admitted()
        return job, True

    def new_job(self, request: JobRequest, check_fit: bool = True, validated: bool = False) -> Job:
        """The checked job of a model's request, not recorded anywhere yet (the cluster front records
        it in Redis, and checks the fit against the cluster's hosts instead: `check_fit` False)."""
        model_name = request.model_name
        if validated:
            registered = self.registry.get(model_name)
        else:
            registered = self.registry.validate(model_name, request.inputs)
        if check_fit and registered.no_fit is not None:
            raise NoFitError(f"model {model_name!r} cannot run here: {registered.no_fit}")
        if self.executors:
            executor = self.executors.get(model_name)
            if executor is not None:
                executor.check_room()
        priority, timeout_s = self._checked(request)
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
        """Tell the observers of a new client job (the cluster front calls it for jobs it records in Redis)."""
        for observer in self.admitted_observers:
            observer(job)

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

    def _checked(self, request: JobRequest) -> tuple[Priority, float | None]:
        """The priority and timeout, checked; and room in the queue."""
        try:
            priority = Priority.parse(request.priority)
        except ValueError as exc:
            raise InvalidInputError(str(exc), field="priority") from None
        timeout_s = request.timeout_s if request.timeout_s is not None else self.default_timeout_s
        if timeout_s is not None and (not math.isfinite(timeout_s) or timeout_s <= 0):
            raise InvalidInputError("timeout_s must be a positive number of seconds", field="timeout_s")
        if self.table.count_by_status[JobStatus.QUEUED] >= self.max_queue:
            raise QueueFullError(f"the queue is full ({self.max_queue} jobs waiting); retry later")
        if self.journal is not None:
            self.journal.check_room()  # its commits fail, or it is full of unfinished jobs: JournalError
        return priority, timeout_s

    def _by_key(self, key: str) -> Job | None:
        existing_id = self.table.by_idempotency_key.get(key)
        if existing_id is not None:
            return self.table.jobs[existing_id]
        if self.journal is not None:  # ended and no longer in memory (or before a restart)
            return self.journal.find_by_key(key)
        return None
