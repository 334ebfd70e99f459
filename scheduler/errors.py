"""Every exception the scheduler raises on purpose, and the enums that name why a job failed
(`ErrorKind`, defined on the wire in `workers.protocol`) and where a child process stands
(`WorkerState`). The REST layer maps each exception to one status code (`scheduler/http/answers.py`)."""

from __future__ import annotations

import enum

from workers.protocol import ErrorKind

__all__ = [
    "ConfigError",
    "ErrorKind",
    "InvalidInputError",
    "JobCancelledError",
    "JobEndedError",
    "JobFailedError",
    "JobNotFoundError",
    "JournalDamagedError",
    "JournalError",
    "ModelNotFoundError",
    "NoFitError",
    "NoGpuError",
    "NotRunningError",
    "QueueFullError",
    "RenderFailedError",
    "SchedulerError",
    "WorkerState",
]


class WorkerState(enum.StrEnum):
    """A child process (model worker or render process) as its supervisor sees it."""

    STARTING = "starting"  # spawned; has not said ready yet
    READY = "ready"  # said ready and keeps sending heartbeats
    STOPPING = "stopping"  # asked to stop: its death is not its jobs' fault
    DEAD = "dead"  # exited; respawned once its back-off allows
    STOPPED = "stopped"  # not running and not to be respawned (never started, or stopped for good)


class SchedulerError(Exception):
    """Base of every error the scheduler raises on purpose."""


class ModelNotFoundError(SchedulerError):
    """The job names a model that is not registered (REST: 404)."""


class InvalidInputError(SchedulerError):
    """The adapter rejected the job's inputs, or a value is out of range (REST: 422). `field` names
    what was wrong."""

    def __init__(self, message: str, field: str = "inputs") -> None:
        super().__init__(message)
        self.field = field


class JobNotFoundError(SchedulerError):
    """No job has that id (REST: 404)."""


class JobEndedError(SchedulerError):
    """The job already ended; it cannot be cancelled (REST: 409)."""


class JobCancelledError(SchedulerError):
    """`infer`, `infer_many`: the job was cancelled before it ended."""

    def __init__(self, message: str, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class QueueFullError(SchedulerError):
    """The queue holds `max_queue` jobs already, or the render queue is full (REST: 429 with Retry-After)."""


class NoFitError(SchedulerError):
    """No worker of this daemon can ever run the model: it is larger than every GPU's usable memory,
    needs a GPU on a machine without one, or a CPU worker where there is none (REST: 507)."""


class NotRunningError(SchedulerError):
    """The scheduler is not started, or is shutting down (REST: 503)."""


class JournalError(SchedulerError):
    """The journal could not record a job (REST: 503); the job may still run."""


class JournalDamagedError(JournalError):
    """The journal file fails SQLite's integrity check; the message (one line) names the file and how
    to recover. The daemon does not start; the file is left as it is."""


class RenderFailedError(SchedulerError):
    """A render ended without a page (REST: 502). `kind` is its `ErrorKind`."""

    def __init__(self, message: str, kind: str | None) -> None:
        super().__init__(message)
        self.kind = kind


class JobFailedError(SchedulerError):
    """A job the caller waited on ended in error (`run_cpu`, `map_cpu`, `infer`, `infer_many`). `kind`
    is its `ErrorKind`, `job_id` the job."""

    def __init__(self, message: str, kind: str | None, job_id: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.job_id = job_id


class ConfigError(SchedulerError):
    """A configuration file or value is invalid; the message names the key."""


class NoGpuError(SchedulerError):
    """MODELSCHED_FORCE_GPU=1 was set and no GPU is visible."""
