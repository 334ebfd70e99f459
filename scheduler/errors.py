"""Exceptions raised by the scheduler's public API; the REST layer maps each to a status code."""


class SchedulerError(Exception):
    """Base of every error the scheduler raises on purpose."""


class ModelNotFoundError(SchedulerError):
    """The job names a model that is not registered (REST: 404)."""


class InvalidInputError(SchedulerError):
    """The adapter rejected the job's inputs (REST: 422). `field` names what was wrong."""

    def __init__(self, message: str, field: str = "inputs") -> None:
        super().__init__(message)
        self.field = field


class JobNotFoundError(SchedulerError):
    """No job has that id (REST: 404)."""


class QueueFullError(SchedulerError):
    """The queue holds `max_queue` jobs already (REST: 429 with Retry-After)."""


class NoFitError(SchedulerError):
    """The model is larger than every GPU's usable memory."""


class NotRunningError(SchedulerError):
    """The scheduler is not started, or is shutting down (REST: 503)."""


class ConfigError(SchedulerError):
    """A configuration file or value is invalid; the message names the key."""
