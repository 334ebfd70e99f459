"""modelsched's main-process side: jobs, placement, the worker pool and the `Scheduler` API."""

from scheduler.scheduler import Scheduler
from scheduler.errors import (
    InvalidInputError,
    JobNotFoundError,
    ModelNotFoundError,
    NoFitError,
    QueueFullError,
    SchedulerError,
)
from scheduler.core.jobs import JobRequest, JobStatus, Priority
from scheduler.presets import (
    SchedulerFactory,
    SchedulerType,
    create_development_scheduler,
    create_production_scheduler,
)

__all__ = [
    "InvalidInputError",
    "JobNotFoundError",
    "JobRequest",
    "JobStatus",
    "ModelNotFoundError",
    "NoFitError",
    "Priority",
    "QueueFullError",
    "Scheduler",
    "SchedulerError",
    "SchedulerFactory",
    "SchedulerType",
    "create_development_scheduler",
    "create_production_scheduler",
]
