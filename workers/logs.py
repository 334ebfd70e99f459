"""The daemon's log lines, the same in the main process and in every child: `text` (one line: time,
level, `[process]`, logger, message, then `job=<id>` for a line about a job) or `json` (one object a
line: `time`, `level`, `logger`, `message`, `process`, `job_id`, and whatever `extra=` the call gave,
such as the access log's `method`, `path`, `status`, `duration_ms`; through python-json-logger).

A line is about a job when its call says so, `log.info(..., extra=about_job(job_id))`, or when it is
written inside `with job_context(job_id):` (a contextvar: a task or thread that works for one job,
such as a webhook delivery, tags every line it writes, the libraries' too). uvicorn's own loggers
write through the same handler (`scheduler.http.server` gives uvicorn no logging config of its own).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator
from typing import TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

JOB_FIELD = "job_id"
MAIN_PROCESS = "main"
_current_job: contextvars.ContextVar[str | None] = contextvars.ContextVar("modelsched_job", default=None)
_NOT_FIELDS = [*RESERVED_ATTRS, "color_message", "process_name"]  # uvicorn's coloured copy of its message


def about_job(job_id: str) -> dict[str, str]:
    """`extra=` for a log call about one job."""
    return {JOB_FIELD: job_id}


@contextlib.contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Every line written inside (in this task or thread) is about `job_id`."""
    token = _current_job.set(job_id)
    try:
        yield
    finally:
        _current_job.reset(token)


class JobTag(logging.Filter):
    """Gives a record the job of the context it was written in (unless its call named one), and the
    name of the process that wrote it."""

    def __init__(self, process_name: str) -> None:
        super().__init__()
        self.process_name = process_name

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, JOB_FIELD, None) is None:
            job_id = _current_job.get()
            if job_id is not None:
                setattr(record, JOB_FIELD, job_id)
        record.process_name = self.process_name
        return True


class TextFormatter(logging.Formatter):
    """`2026-01-02 03:04:05,678 INFO [cpu-w0] modelsched.worker: message job=<id>`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(process_name)s] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        job_id = getattr(record, JOB_FIELD, None)
        if job_id is None:
            return line
        first, newline, rest = line.partition("\n")  # after the message, before a traceback
        return f"{first} job={job_id}{newline}{rest}"


def json_formatter(process_name: str) -> JsonFormatter:
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        static_fields={"process": process_name},
        reserved_attrs=_NOT_FIELDS,
        timestamp="time",
        json_ensure_ascii=False,
    )


def make_handler(log_format: str, process_name: str, stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(JobTag(process_name))
    if log_format == "json":
        handler.setFormatter(json_formatter(process_name))
    else:
        handler.setFormatter(TextFormatter())
    return handler


def configure_logging(
    level: str, log_format: str = "text", process_name: str = MAIN_PROCESS, stream: TextIO | None = None
) -> None:
    """The root logger writes through one handler in `log_format`; handlers others had put there are
    replaced, and every logger that propagates (uvicorn's too) comes through it."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(make_handler(log_format, process_name, stream))
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # `warnings.warn` from a library: a line in the same format
