"""Pipelines: named, ordered stages, each a registered model; one job to the client, a chain of
stage runs inside.

A pipeline's job waits in no model queue. For the stage it has reached, `Pipelines` adds a job of
the stage's model to the table (`parent_id` names the pipeline job), which queues, batches with the
other jobs of that model and runs where placement puts it, like any job. When it ends (`on_end`, an
observer of every end) its output becomes the next stage's input in the main process, without a
client round trip; the last stage's output is the pipeline job's result. A stage that fails, or
passes its own `timeout_s` (counted from the moment the stage began, queue included), fails the job
with an error naming the stage; cancelling the job (or its own timeout) cancels the stage under way,
and later stages never run. A worker dying under a stage sends that stage's job back to the queue
like any job's: only that stage runs again.

Each stage end is journaled (`record_stage`: the stage reached, its input, what the stages did), so
after a restart a pipeline job resumes at the stage it had reached (`resume`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scheduler.core.deadlines import Deadlines
from scheduler.core.endings import JobEndings
from scheduler.core.jobs import Job, JobStatus, StageRun
from scheduler.core.models import ModelRegistry
from scheduler.core.ports import JobJournal
from scheduler.core.table import JobTable
from scheduler.errors import ConfigError, ErrorKind, ModelNotFoundError, NoFitError
from scheduler.settings import PipelineConfig, StageConfig

log = logging.getLogger("modelsched.pipelines")


@dataclass(frozen=True)
class Stage:
    name: str
    model: str
    timeout_s: float | None


@dataclass(frozen=True)
class Pipeline:
    name: str
    stages: tuple[Stage, ...]
    description: str = ""


def pipeline_from(config: PipelineConfig | dict[str, Any], registry: ModelRegistry) -> Pipeline:
    """A checked pipeline: stages name registered models, stage names are unique, timeouts positive."""
    if isinstance(config, dict):
        try:
            config = PipelineConfig(**config)
        except TypeError as exc:
            raise ConfigError(f"pipeline config: {exc}") from None
    where = f"pipelines.{config.name}"
    if not config.name or "/" in config.name:
        raise ConfigError(f"{where}.name: must be a non-empty name without '/'")
    if not config.stages:
        raise ConfigError(f"{where}.stages: a pipeline needs at least one stage")
    stages: list[Stage] = []
    for index, entry in enumerate(config.stages):
        stage = StageConfig(model=entry) if isinstance(entry, str) else entry
        if isinstance(stage, dict):
            stage = StageConfig(**stage)
        if stage.model not in registry:
            known = ", ".join(sorted(registry.models)) or "none"
            raise ConfigError(
                f"{where}.stages[{index}]: no model {stage.model!r} is registered (registered: {known})"
            )
        if stage.timeout_s is not None and not stage.timeout_s > 0:
            raise ConfigError(f"{where}.stages[{index}].timeout_s: must be a positive number of seconds")
        stages.append(Stage(stage.name or stage.model, stage.model, stage.timeout_s))
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}.stages: stage names must be unique (got {names})")
    return Pipeline(config.name, tuple(stages), config.description)


def stage_error(stage: Stage, job: Job) -> str:
    """The pipeline job's error when a stage's job ended without a result."""
    if job.error_kind == ErrorKind.TIMEOUT:
        return f"stage {stage.name!r} ({stage.model}) timed out: it did not end within {stage.timeout_s}s"
    return f"stage {stage.name!r} ({stage.model}) failed: {job.error}"


class Pipelines:
    """registry, table, endings, deadlines: models and jobs; journal: records stage ends (None: no
    journal); schedule: runs the dispatch pass soon."""

    def __init__(
        self,
        registry: ModelRegistry,
        table: JobTable,
        endings: JobEndings,
        deadlines: Deadlines,
        journal: JobJournal | None,
        schedule: Callable[[], None],
    ) -> None:
        self.registry = registry
        self.table = table
        self.endings = endings
        self.deadlines = deadlines
        self.journal = journal
        self.schedule = schedule
        self.pipelines: dict[str, Pipeline] = {}
        self.running: dict[str, Job] = {}  # pipeline job id -> the job of the stage it is at
        self._definition: dict[str, Pipeline] = {}  # pipeline job id -> the pipeline as it began
        self.orphans: list[Job] = []  # read back from the journal, their pipeline not registered yet
        self.stage_observers: list[Callable[[str, str, float], None]] = []  # (pipeline, stage, seconds)
        endings.family_observers.append(self.on_end)

    # ---- definitions ---------------------------------------------------------------------------

    def register(self, config: PipelineConfig | dict[str, Any]) -> Pipeline:
        pipeline = pipeline_from(config, self.registry)
        if pipeline.name in self.registry:
            raise ConfigError(f"pipelines.{pipeline.name}: a model has that name already")
        self.pipelines[pipeline.name] = pipeline
        waiting = [job for job in self.orphans if job.model == pipeline.name and not job.ended]
        if waiting:  # read back from the journal before its pipeline was registered
            self.orphans = [job for job in self.orphans if job.model != pipeline.name]
            for job in waiting:
                self._resume(job)
        return pipeline

    def get(self, name: str) -> Pipeline:
        pipeline = self.pipelines.get(name)
        if pipeline is None:
            known = ", ".join(sorted(self.pipelines)) or "none"
            raise ModelNotFoundError(f"unknown pipeline {name!r} (registered: {known})")
        return pipeline

    def validate(self, name: str, inputs: Any) -> Pipeline:
        """The pipeline, once its first stage's model accepts the inputs and every stage can run here."""
        pipeline = self.get(name)
        for stage in pipeline.stages:
            registered = self.registry.get(stage.model)
            if registered.no_fit is not None:
                raise NoFitError(
                    f"pipeline {name!r}: stage {stage.name!r} ({stage.model}) cannot run here: "
                    f"{registered.no_fit}"
                )
        self.registry.validate(pipeline.stages[0].model, inputs)
        return pipeline

    def new_runs(self, pipeline: Pipeline) -> list[StageRun]:
        return [StageRun(name=stage.name, model=stage.model) for stage in pipeline.stages]

    # ---- running ---------------------------------------------------------------------------------

    def begin(self, job: Job) -> None:
        """Queue the job of the stage `job` has reached (its input is `job.inputs`)."""
        pipeline = self._definition.get(job.id)
        if pipeline is None:  # a job finishes on the definition it began with, even if replaced meanwhile
            pipeline = self._definition[job.id] = self.get(job.model)
        stage = pipeline.stages[job.stage]
        registered = self.registry.models.get(stage.model)
        if (
            registered is not None
            and registered.failed_error is not None
            and time.monotonic() < registered.failed_until
        ):
            self._definition.pop(job.id, None)  # its model is in its load back-off: no load is tried
            self.endings.finish(
                job,
                JobStatus.ERROR,
                error=f"stage {stage.name!r} ({stage.model}) failed: model {stage.model!r} failed to load: "
                f"{registered.failed_error}",
                error_kind=ErrorKind.LOAD,
            )
            return
        stage_job = Job(
            id=f"{job.id}.{job.stage}",
            model=stage.model,
            inputs=job.inputs,
            priority=job.priority,
            timeout_s=stage.timeout_s,
            parent_id=job.id,
        )
        self.table.add(stage_job)
        self.running[job.id] = stage_job
        assert job.stages is not None
        job.stages[job.stage].status = JobStatus.QUEUED.value
        if stage.timeout_s is not None:
            self.deadlines.watch(stage_job, time.monotonic() + stage.timeout_s)
        self.schedule()

    def resume(self) -> int:
        """After a restart: every pipeline job read back from the journal goes on at its stage. One
        whose pipeline is not registered (yet: it may be registered right after the start) waits in
        `orphans` until `register` or `settle_orphans`."""
        resumed = 0
        for job in [
            job for job in self.table.jobs.values() if job.pipeline and job.status is JobStatus.QUEUED
        ]:
            if job.pipeline not in self.pipelines:
                self.orphans.append(job)
                continue
            self._resume(job)
            resumed += 1
        if resumed:
            log.info("pipelines: %d job(s) resume at the stage they had reached", resumed)
        return resumed

    def _resume(self, job: Job) -> None:
        pipeline = self.pipelines[job.model]
        if job.stages is None or [run.model for run in job.stages] != [
            stage.model for stage in pipeline.stages
        ]:
            self.endings.finish(  # its input is the input of a stage the new definition may not have
                job,
                JobStatus.ERROR,
                error=f"pipeline {job.model!r} changed its stages since the job began; submit it again",
                error_kind=ErrorKind.MODEL,
            )
            return
        self.begin(job)

    def settle_orphans(self) -> None:
        """Once the start is over: jobs of pipelines still not registered fail, as a plain job of an
        unregistered model does at the first dispatch pass."""
        orphans, self.orphans = self.orphans, []
        for job in orphans:
            if job.ended:
                continue
            if job.model in self.pipelines:
                self._resume(job)
                continue
            self.endings.finish(
                job,
                JobStatus.ERROR,
                error=f"pipeline {job.model!r} is no longer registered",
                error_kind=ErrorKind.MODEL,
            )

    def processing(self) -> int:
        """Pipeline jobs under way (they count as processing between their stages too)."""
        return sum(
            1
            for job_id in self.running
            if (job := self.table.get(job_id)) is not None and job.status is JobStatus.PROCESSING
        )

    def stage_started(self, stage_job: Job) -> None:
        """The dispatch pass sent a stage's job to a worker."""
        parent = self.table.get(stage_job.parent_id or "")
        if parent is None or parent.stages is None or self.running.get(parent.id) is not stage_job:
            return
        run = parent.stages[parent.stage]
        run.status = JobStatus.PROCESSING.value
        run.worker, run.device, run.attempts = stage_job.worker_id, stage_job.device, stage_job.attempts
        if stage_job.started_at is not None:  # the stage began when its job was made
            run.queued_s = max(0.0, stage_job.started_at - stage_job.created_at)
        if parent.status is JobStatus.QUEUED:
            self.table.mark_started(parent)
        self.endings.events.progress(parent, parent.stage, len(parent.stages), stage=run.name)

    def on_end(self, job: Job) -> None:
        """A pipeline's job's or a stage's end (`JobEndings.family_observers`): a stage's end moves its
        pipeline job on; a pipeline job's end stops its stage."""
        if job.pipeline is not None:
            self._definition.pop(job.id, None)
            under_way = self.running.pop(job.id, None)
            if job.stages is not None:
                for run in job.stages:
                    if run.status == "pending":
                        run.status = "skipped"
            if under_way is not None and not under_way.ended:
                if job.stages is not None:
                    job.stages[job.stage].status = JobStatus.CANCELLED.value
                self.endings.finish(
                    under_way,
                    JobStatus.CANCELLED,
                    error=f"the pipeline job {job.status.value}",
                    error_kind=ErrorKind.CANCELLED,
                )
            return
        if job.parent_id is None:
            return
        parent = self.table.get(job.parent_id)
        if parent is None or self.running.get(parent.id) is not job:
            self.table.discard(job)  # a stage its pipeline job no longer waits for, or a CPU call's job
            return
        del self.running[parent.id]
        self.table.discard(job)
        self._stage_ended(parent, job)

    def _stage_ended(self, parent: Job, stage_job: Job) -> None:
        pipeline = self._definition[parent.id]
        stage = pipeline.stages[parent.stage]
        assert parent.stages is not None
        run = parent.stages[parent.stage]
        run.status = stage_job.status.value
        run.worker, run.device, run.attempts = stage_job.worker_id, stage_job.device, stage_job.attempts
        ended = stage_job.ended_at or time.time()
        if stage_job.started_at is not None:
            run.run_s = max(0.0, ended - stage_job.started_at)
            if run.queued_s is None:
                run.queued_s = max(0.0, stage_job.started_at - stage_job.created_at)
        run.compute_s, run.cost_usd = stage_job.compute_s, stage_job.cost_usd
        parent.compute_s += stage_job.compute_s
        parent.cost_usd += stage_job.cost_usd
        for observer in self.stage_observers:
            observer(pipeline.name, stage.name, max(0.0, ended - stage_job.created_at))
        if parent.ended:
            return
        if stage_job.status is not JobStatus.COMPLETED:
            run.error = stage_job.error
            kind = ErrorKind(stage_job.error_kind) if stage_job.error_kind else ErrorKind.MODEL
            ending = JobStatus.CANCELLED if stage_job.status is JobStatus.CANCELLED else JobStatus.ERROR
            self.endings.finish(parent, ending, error=stage_error(stage, stage_job), error_kind=kind)
            return
        if parent.stage + 1 == len(pipeline.stages):
            self.endings.finish(parent, JobStatus.COMPLETED, result=stage_job.result)
            return
        following = pipeline.stages[parent.stage + 1]
        try:
            self.registry.validate(following.model, stage_job.result)
        except Exception as exc:  # InvalidInputError, ModelNotFoundError, or an adapter's own bug
            parent.stages[parent.stage + 1].error = str(exc)
            self.endings.finish(
                parent,
                JobStatus.ERROR,
                error=f"stage {following.name!r} ({following.model}) refused the output of stage "
                f"{stage.name!r}: {exc}",
                error_kind=ErrorKind.INPUT,
            )
            return
        parent.stage += 1
        parent.inputs = stage_job.result
        if self.journal is not None:
            self.journal.record_stage(parent)
        self.begin(parent)
