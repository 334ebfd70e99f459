"""The daemon's one error body (RFC 9457 problem details, `application/problem+json`): every error
kind (`error`), its status code and title, and `problem()`, which builds the body. Pure: no I/O.

A problem's `type` is a tag URI (RFC 4151) per kind, `tag:modelsched,2026:problem/<error>`: it
names the kind and is not meant to be fetched (RFC 9457 §3.1.1 allows a non-resolvable URI).
"""

from __future__ import annotations

import http
import secrets
from typing import Any

from scheduler.http.schemas import ErrorBody

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "tag:modelsched,2026:problem/"

TITLES: dict[str, str] = {  # error kind -> its title (the same for every answer of that kind)
    "invalid_body": "The request body is not valid",
    "malformed_json": "The request body is not JSON",
    "invalid_request": "A query or path parameter is not valid",
    "invalid_input": "The inputs are not valid for this model",
    "invalid_tensor": "The tensor is not valid for this model",
    "body_too_large": "The request body is too large",
    "unauthorized": "A valid bearer token is required",
    "not_found": "No such route",
    "method_not_allowed": "The route does not take this method",
    "not_acceptable": "The result cannot be sent in the media type asked for",
    "model_not_found": "No such model",
    "job_not_found": "No such job",
    "render_disabled": "Rendering is off",
    "queue_full": "The queue is full",
    "not_accepting": "The daemon is not accepting jobs",
    "journal_unavailable": "The journal cannot take jobs",
    "shutting_down": "The daemon is shutting down before the job ended",
    "job_ended": "The job has already ended",
    "job_cancelled": "The job was cancelled",
    "conflict": "The request conflicts with the job's state",
    "no_fit": "No worker of this daemon can run the model",
    "job_failed": "The job failed",
    "render_failed": "The page could not be rendered",
    "job_timeout": "The job ran past its timeout",
    "wait_ended": "The wait ended before the job",
    "internal_error": "An unexpected error; the daemon's log has its traceback under `error_id`",
}


def problem(status: int, error: str, detail: str, field: str | None = None, **extra: Any) -> ErrorBody:
    """The error body of an answer with `status`; `extra`: `job_id`, `job_status` or `error_id`."""
    title = TITLES.get(error) or http.HTTPStatus(status).phrase
    return ErrorBody(
        type=TYPE_PREFIX + error, title=title, status=status, error=error, detail=detail, field=field, **extra
    )


def new_error_id() -> str:
    """An opaque id for one unexpected failure: in its answer and in the log line with its traceback."""
    return f"err_{secrets.token_hex(8)}"
