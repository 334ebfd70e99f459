"""Jobs: the request a client sends, the record the scheduler keeps, and the allowed state changes.

`queued -> processing -> completed | error | cancelled`; a job in `processing` may go back to
`queued` when its worker dies (with `attempts` kept, since the try counter is raised before each run).
"""

from __future__ import annotations

import enum
import time
from typing import Any

import msgspec


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"


ENDED = frozenset({JobStatus.COMPLETED, JobStatus.ERROR, JobStatus.CANCELLED})
# A status's plain string, read per job on the hot path: a dict lookup, where `.value` is a
# descriptor call in Python.
STATUS_VALUES: dict[JobStatus, str] = {status: status.value for status in JobStatus}

NEXT_STATUSES: dict[JobStatus, frozenset[JobStatus]] = {  # where each status may go
    JobStatus.QUEUED: frozenset({JobStatus.PROCESSING, JobStatus.ERROR, JobStatus.CANCELLED}),
    JobStatus.PROCESSING: frozenset(
        {JobStatus.QUEUED, JobStatus.COMPLETED, JobStatus.ERROR, JobStatus.CANCELLED}
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.ERROR: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    return target in NEXT_STATUSES[current]


class Priority(enum.IntEnum):
    """Lower value runs first; first in, first out within one priority."""

    HIGH = 0
    NORMAL = 1
    LOW = 2

    @classmethod
    def parse(cls, value: str | int | Priority) -> Priority:
        if isinstance(value, Priority):
            return value
        known = _PRIORITY_BY_NAME.get(value) if isinstance(value, str) else None
        if known is not None:  # the commonest case, without the enum's own lookup
            return known
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                raise ValueError(f"priority must be one of high, normal, low (got {value!r})") from None
        return cls(value)


PRIORITY_NAMES: dict[Priority, str] = {priority: priority.name.lower() for priority in Priority}
_PRIORITY_BY_NAME: dict[str, Priority] = {name: priority for priority, name in PRIORITY_NAMES.items()}


class JobRequest(msgspec.Struct, kw_only=True):
    """What a client submits: a model's job (`feature` is an alias of `model`), or a pipeline's."""

    feature: str = ""
    inputs: Any = None
    priority: str = "normal"
    timeout_s: float | None = None
    callback_url: str | None = None  # POSTed the job's view once it has ended (`scheduler.webhooks`)
    idempotency_key: str | None = None
    model: str = ""
    pipeline: str = ""

    @property
    def model_name(self) -> str:
        return self.model or self.feature


class StageRun(msgspec.Struct, kw_only=True):
    """One stage of a pipeline job as it ran (or waits): what the job view's `stages` lists.
    `queued_s` is from the stage's start in the pipeline to its run; `run_s` from its run to its end;
    `compute_s` its share of the batches it ran in, which `cost_usd` is counted from."""

    name: str
    model: str
    status: str = "pending"  # pending | queued | processing | completed | error | cancelled
    worker: str | None = None
    device: str | None = None
    attempts: int = 0
    queued_s: float | None = None
    run_s: float | None = None
    compute_s: float = 0.0
    cost_usd: float = 0.0
    error: str | None = None


class Job(msgspec.Struct, kw_only=True):
    """The scheduler's record of one job. Only the main process's event loop changes it.

    A pipeline's job (`pipeline` set) never waits in a model's queue: its stages do, each as a job of
    the stage's model with `parent_id` naming the pipeline job (see `scheduler.core.pipelines`);
    `stage` is the index of the stage it has reached and `stages` what each stage did."""

    id: str
    model: str
    inputs: Any
    priority: Priority = Priority.NORMAL
    timeout_s: float | None = None
    idempotency_key: str | None = None
    callback_url: str | None = None
    status: JobStatus = JobStatus.QUEUED
    created_at: float = msgspec.field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    attempts: int = 0
    worker_id: str | None = None
    device: str | None = None
    result: Any = None
    error: str | None = None
    error_kind: str | None = None
    seq: int = 0
    deadline: float | None = None  # time.monotonic() after which it ends as a timeout
    compute_s: float = 0.0  # worker seconds charged to it (its shares of batches)
    cost_usd: float = 0.0
    pipeline: str | None = None
    stage: int = 0
    stages: list[StageRun] | None = None
    parent_id: str | None = None  # a stage's job: the pipeline job it runs for

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    def to_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "job_id": self.id,
            "model": self.model,
            "status": STATUS_VALUES[self.status],
            "priority": PRIORITY_NAMES[self.priority],
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "attempts": self.attempts,
            "worker": self.worker_id,
            "device": self.device,
            "timeout_s": self.timeout_s,
            "result": self.result,
            "error": self.error,
            "cost_usd": self.cost_usd,
        }
        if self.stages is not None:
            shown["pipeline"] = self.pipeline
            shown["stages"] = msgspec.to_builtins(self.stages)
        return shown
