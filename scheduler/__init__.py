"""modelsched's main process and its public API: `Scheduler`, the presets, the job request and the
public exceptions. The rooms: `core` (jobs, placement, dispatch), `pool` (child processes and their
supervision), `journal`, `render` (the main side of rendering), `http` (the REST front)."""

from scheduler.core.jobs import JobRequest, JobStatus, Priority
from scheduler.errors import (
    ErrorKind,
    InvalidInputError,
    JobEndedError,
    JobNotFoundError,
    ModelNotFoundError,
    NoFitError,
    NotRunningError,
    QueueFullError,
    SchedulerError,
)
from scheduler.presets import (
    SchedulerFactory,
    SchedulerType,
    create_development_scheduler,
    create_production_scheduler,
)
from scheduler.scheduler import Scheduler

__all__ = [
    "ErrorKind",
    "InvalidInputError",
    "JobEndedError",
    "JobNotFoundError",
    "JobRequest",
    "JobStatus",
    "ModelNotFoundError",
    "NoFitError",
    "NotRunningError",
    "Priority",
    "QueueFullError",
    "Scheduler",
    "SchedulerError",
    "SchedulerFactory",
    "SchedulerType",
    "create_development_scheduler",
    "create_production_scheduler",
]
