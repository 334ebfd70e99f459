"""HTTP answers: `Answer`, the one response type of the daemon (the routes return it, the raw-ASGI
paths send it), the one map from a failure to its status code and problem body (`error_answer`: an
unexpected exception is a 500 with an opaque `error_id`, logged with its traceback), the one body
decoder (`decode`: 422 naming the field, bounds kept), and what `infer` answers for a job's end."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.responses import Response

from scheduler import errors
from scheduler.core.jobs import ENDED, JobRequest
from scheduler.http.json_bounds import out_of_bounds
from scheduler.http.problems import PROBLEM_JSON, new_error_id, problem
from scheduler.http.schemas import ErrorBody, InferRequest, InferResult
from scheduler.scheduler import Scheduler

log = logging.getLogger("modelsched.server")

JSON = "application/json"
RAW_MEDIA_TYPE = "application/octet-stream"
MAX_WAIT_S = 300.0
DEFAULT_INFER_WAIT_S = 60.0
ENDED_NAMES = frozenset(status.value for status in ENDED)
ANSWER_BY_KIND: dict[str, tuple[int, str]] = {
    errors.ErrorKind.INPUT: (422, "invalid_input"),
    errors.ErrorKind.TIMEOUT: (504, "job_timeout"),
    errors.ErrorKind.CANCELLED: (409, "job_cancelled"),
}  # a failed job's answer; any other kind: 502 job_failed
JOB_FAILED = (502, "job_failed")
encoder = msgspec.json.Encoder()
infer_decoder = msgspec.json.Decoder(InferRequest)


class Answer(Response):
    """An answer as plain values: status, body bytes, headers. It is a Starlette `Response`, so a
    FastAPI route returns it as it is and a raw-ASGI path sends it with `await answer(scope, receive,
    send)`; its headers are built once, here, without Starlette's header handling."""

    def __init__(
        self, status: int, body: bytes, headers: Mapping[str, str] | None = None, media_type: str = JSON
    ) -> None:
        self.status_code = status
        self.body = body
        self.media_type = media_type
        self.background = None
        raw = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]
        if headers:
            raw += [
                (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
            ]
        self.raw_headers = raw


def json_answer(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Answer:
    return Answer(status, encoder.encode(content), headers)


def problem_answer(body: ErrorBody, headers: Mapping[str, str] | None = None) -> Answer:
    """An error answer: the problem body, as `application/problem+json`, with its status."""
    return Answer(body.status, encoder.encode(body), headers, PROBLEM_JSON)


class HttpError(Exception):
    """A failure of the HTTP layer itself (a bad body, a bad query value, a body too large)."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.field, self.headers = status, error, detail, field, headers


_STATUS_BY_ERROR: list[tuple[type[Exception], int, str]] = [
    (errors.ModelNotFoundError, 404, "model_not_found"),
    (errors.JobNotFoundError, 404, "job_not_found"),
    (errors.InvalidInputError, 422, "invalid_input"),
    (errors.QueueFullError, 429, "queue_full"),
    (errors.NotRunningError, 503, "not_accepting"),
    (errors.JournalError, 503, "journal_unavailable"),
    (errors.JobEndedError, 409, "job_ended"),
    (errors.JobCancelledError, 409, "job_cancelled"),
    (errors.NoFitError, 507, "no_fit"),
    (errors.RenderFailedError, 502, "render_failed"),
]


def error_parts(exc: Exception) -> tuple[ErrorBody, dict[str, str] | None]:
    """The one place where failures become status codes: the problem body (its `status` is the
    code) and headers. Only overload and unavailability (429, 503) say `Retry-After`; anything not
    foreseen is a 500 whose `error_id` names the log line with its traceback (never its text)."""
    if isinstance(exc, HttpError):
        return problem(exc.status, exc.error, exc.detail, exc.field), exc.headers
    if isinstance(exc, errors.JobFailedError):  # `infer`-style waits: the job's end as its answer
        status, name = ANSWER_BY_KIND.get(exc.kind or "", JOB_FAILED)
        return problem(status, name, str(exc)), None
    if isinstance(exc, TimeoutError):
        return problem(504, "wait_ended", str(exc) or "the wait ended before the job"), None
    for kind, status, name in _STATUS_BY_ERROR:
        if isinstance(exc, kind):
            headers = {"Retry-After": "1"} if status in (429, 503) else None
            return problem(status, name, str(exc), getattr(exc, "field", None)), headers
    if isinstance(exc, errors.SchedulerError):
        return problem(409, "conflict", str(exc)), None
    return unexpected_problem(exc), None


def unexpected_problem(exc: BaseException) -> ErrorBody:
    """A 500 for a failure nobody foresaw: logged with its traceback under a new error id, which the
    answer carries instead of the exception's text."""
    error_id = new_error_id()
    log.error("unexpected error %s: %s", error_id, type(exc).__name__, exc_info=exc)
    detail = f"an unexpected error; the daemon's log has it under {error_id}"
    return problem(500, "internal_error", detail, error_id=error_id)


def error_answer(exc: Exception) -> Answer:
    body, headers = error_parts(exc)
    return problem_answer(body, headers)


def decode(data: bytes, decoder: msgspec.json.Decoder[Any]) -> Any:
    """A body decoded into its struct; 422 naming the field at fault, also for a value nested deeper
    or an integer larger than the daemon carries (`json_bounds`)."""
    try:
        decoded = decoder.decode(data)
    except RecursionError:
        raise HttpError(
            422, "invalid_body", "the body nests arrays and objects too deeply to decode"
        ) from None
    except msgspec.ValidationError as exc:
        message = str(exc)
        raise HttpError(422, "invalid_body", message, field_of(message)) from None
    except msgspec.DecodeError as exc:
        raise HttpError(422, "malformed_json", f"the body is not valid JSON: {exc}") from None
    fault = out_of_bounds(data if isinstance(data, bytes) else bytes(data), decoded)
    if fault is not None:
        raise HttpError(422, "invalid_body", f"{fault[1]} (at `{fault[0]}`)", fault[0])
    return decoded


def field_of(message: str) -> str | None:
    """The field a msgspec validation message names: its path (`... - at `$.inputs[0]``), and the
    field missing or unknown there (`Object missing required field `model``)."""
    where = message.rpartition(" - at `$")[2].rstrip("`") if " - at `$" in message else ""
    where = where.removeprefix(".")
    name = None
    for start in ("Object missing required field `", "Object contains unknown field `"):
        if message.startswith(start):
            name = message[len(start) :].partition("`")[0]
    if name is not None:
        return f"{where}.{name}" if where else name
    return where or None


def parse_timeout(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise HttpError(422, "invalid_request", "timeout must be a number of seconds", "timeout") from None
    if not 0 < value <= MAX_WAIT_S:
        raise HttpError(422, "invalid_request", f"timeout must be in (0, {MAX_WAIT_S:g}]", "timeout")
    return value


def raw_vectors(result: Any) -> tuple[bytes, str] | None:
    """A result of numbers (a vector, or equal-length vectors) as little-endian float32 bytes and its
    shape ("384" or "2,384"); None when the result is not such an array."""
    import numpy as np

    try:
        array = np.asarray(result, dtype="<f4")
    except (TypeError, ValueError):
        return None
    if array.ndim not in (1, 2) or array.size == 0:
        return None
    return array.tobytes(), ",".join(str(size) for size in array.shape)


async def infer_answer(
    scheduler: Scheduler,
    model: str,
    body: bytes,
    timeout: float | None,
    raw: bool = False,
    pipeline: bool = False,
) -> Answer:
    """`POST /models/{model}/infer` (or `/pipelines/{model}/infer` with `pipeline`): submit, wait,
    answer the result or why there is none. With `raw` (the client sent `Accept:
    application/octet-stream`) a numeric result comes as float32 bytes."""
    request: InferRequest = decode(body, infer_decoder)
    job_id = await scheduler.schedule_job(
        JobRequest(
            model="" if pipeline else model,
            pipeline=model if pipeline else "",
            inputs=request.inputs,
            priority=request.priority,
            timeout_s=request.timeout_s,
        ),
        waited=True,  # answered once its end is durable: its submission is written with the end
    )
    return await result_answer(scheduler, job_id, timeout or request.timeout_s or DEFAULT_INFER_WAIT_S, raw)


async def result_answer(scheduler: Scheduler, job_id: str, wait_s: float, raw: bool = False) -> Answer:
    """The job's result once it ends (200), or why there is none, as a problem naming the job
    (`job_id`, `job_status`): 422 bad input, 409 cancelled, 504 the job's timeout or a wait that
    ended first, 503 the daemon shutting down, 502 any other failure."""
    return outcome_answer(*await result_outcome(scheduler, job_id, wait_s), raw)


Outcome = tuple[int, InferResult | ErrorBody, dict[str, str] | None]


async def result_outcome(scheduler: Scheduler, job_id: str, wait_s: float) -> Outcome:
    """What `result_answer` answers, before it is encoded (a front encodes it in its own process):
    status, body (the result, or a problem), headers."""
    return outcome_of(scheduler, job_id, await scheduler.wait_for(job_id, min(wait_s, MAX_WAIT_S)))


def outcome_of(scheduler: Scheduler, job_id: str, view: dict[str, Any]) -> Outcome:
    """The outcome for the job's view as it stands (after its wait)."""
    state = view["status"]
    if state == "completed":
        return 200, InferResult(job_id, state, view["result"]), None
    if state not in ENDED_NAMES:
        if not scheduler.accepting:  # released by the shutdown; the job stays queued for the next start
            detail = (
                f"the daemon is shutting down before the job ended; poll GET /jobs/{job_id} after its restart"
            )
            body = problem(503, "shutting_down", detail, job_id=job_id, job_status=state)
            return 503, body, {"Retry-After": "1"}
        detail = f"the wait ended before the job; poll GET /jobs/{job_id}"
        return 504, problem(504, "wait_ended", detail, job_id=job_id, job_status=state), None
    kind = scheduler.get_job(job_id).error_kind
    code, name = ANSWER_BY_KIND.get(kind or "", JOB_FAILED)
    return code, problem(code, name, str(view["error"]), job_id=job_id, job_status=state), None


def outcome_answer(
    status: int, body: InferResult | ErrorBody, headers: dict[str, str] | None, raw: bool
) -> Answer:
    """An infer's outcome encoded: a problem; the result as JSON; or with `raw` a completed numeric
    result as float32 bytes (a 406 problem when it is not an array of numbers)."""
    if isinstance(body, ErrorBody):
        return problem_answer(body, headers)
    if not raw:
        return Answer(status, encoder.encode(body), headers)
    packed = raw_vectors(body.result)
    if packed is None:
        detail = "the result is not an array of numbers; ask for application/json"
        refusal = problem(406, "not_acceptable", detail, job_id=body.job_id, job_status=body.status)
        return problem_answer(refusal, {"X-Job-Id": body.job_id})
    return Answer(
        200,
        packed[0],
        {"X-Job-Id": body.job_id, "X-Shape": packed[1], "X-Dtype": "float32-le"},
        RAW_MEDIA_TYPE,
    )
