"""Pure conversions between the scheduler's `Job` and the cluster's Redis records: the arguments of
the submit and finish functions, a claimed job back into a `Job`, a job's hash into the view a client
sees (the same fields as `JobEndings.view`). Inputs and results travel as msgpack."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from scheduler.core.jobs import Job, JobStatus, Priority

MAX_SCAN = 20_000  # ids a page of the job list looks at, at most, before it answers with a cursor
CLAIM_FIELDS = 12  # values per job in a claim's answer: id, the nine fields read, its stream and entry

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(value: Any) -> float | None:
    text = _text(value) if value is not None else ""
    return float(text) if text else None


def as_dict(reply: Any) -> dict[bytes, bytes]:
    """A hash's raw reply as a dict: a map under RESP3, a flat list (field, value, ...) under RESP2."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def submit_args(job: Job, host: str = "", submitter: str = "", released: bool = False) -> tuple[Any, ...]:
    """`modelsched_submit`'s arguments after the prefix: the deadline is wall-clock time; `host`: the
    submitting host, when it has room to run the job at once ("": queue it); `submitter`: the host
    told of the job's end when another writes it (its waits); `released`: a submission `host` held
    back while the job ran there, written now (held by `host`, and only if its end is not there)."""
    deadline = job.created_at + job.timeout_s if job.timeout_s is not None else None
    return (
        job.id,
        job.model,
        int(job.priority),
        repr(job.created_at),
        "" if job.timeout_s is None else repr(job.timeout_s),
        "" if deadline is None else repr(deadline),
        job.idempotency_key or "",
        _encoder.encode(job.inputs),
        job.callback_url or "",
        host,
        submitter,
        "1" if released else "",
    )


def stream_name(prefix: str, model: str, priority: int) -> bytes:
    """The queue stream of `model` at `priority` (the functions' `stream_of`)."""
    return f"{prefix}q:{model}:{priority}".encode()


def finish_args(job: Job, host: str, retention_s: float, new_hash: bool = False) -> tuple[Any, ...]:
    """`modelsched_finish`'s arguments after the prefix: the end as the job's host saw it (fields
    without a value are left out: they were never written before the end, and missing reads as empty;
    `new_hash`: nor a cost or a try count of 0, for a hash written whole at the end)."""
    ended_at = job.ended_at if job.ended_at is not None else time.time()
    args: list[Any] = [job.id, host, job.status.value, repr(ended_at), int(retention_s)]
    args += ("result", _encoder.encode(job.result))
    if job.cost_usd or not new_hash:
        args += ("cost_usd", repr(job.cost_usd))
    if job.attempts or not new_hash:
        args += ("attempts", job.attempts)
    if job.error:
        args += ("error", job.error)
    if job.error_kind:
        args += ("error_kind", job.error_kind)
    if job.worker_id:
        args += ("worker", job.worker_id)
    if job.device:
        args += ("device", job.device)
    return tuple(args)


def record_args(job: Job, host: str, retention_s: float) -> tuple[Any, ...]:
    """`modelsched_record`'s arguments after the prefix: the end of a job whose submission `host` held
    back, with the submission's fields (`finish_args` with them inserted after the retention). Not
    the inputs: an ended job's are never read again (the SQLite journal drops them at the end too);
    nor a cost or a try count of 0 (a new hash: missing reads as 0)."""
    ended = finish_args(job, host, retention_s, new_hash=True)
    submission: list[Any] = ["id", job.id, "model", job.model, "priority", int(job.priority)]
    submission += ("created_at", repr(job.created_at))
    if job.started_at is not None:
        submission += ("started_at", repr(job.started_at))
    if job.timeout_s is not None:
        submission += ("timeout_s", repr(job.timeout_s), "deadline", repr(job.created_at + job.timeout_s))
    return (*ended[:5], len(submission), *submission, *ended[5:])


def page_args(
    before: str | None, since: str | None, status: str | None, model: str | None, limit: int, ended_only: bool
) -> tuple[Any, ...]:
    """`modelsched_jobs`'s arguments after the prefix (`MAX_SCAN` ids looked at, at most, per call)."""
    return (before or "", since or "", status or "", model or "", limit, int(ended_only), MAX_SCAN)


def page_of(reply: list[Any]) -> tuple[str | None, list[tuple[Job, str | None]]]:
    """`modelsched_jobs`'s answer: the cursor (None: the walk reached the end) and the jobs with their hosts."""
    cursor = _text(reply[0]) or None
    return cursor, [job_from_hash(as_dict(fields)) for fields in reply[1:]]


def claimed_jobs(values: list[Any]) -> list[Job]:
    """The jobs of a claim's flat answer, queued (this host's dispatch pass runs them)."""
    return [job for job, _ in claimed_entries(values)]


def claimed_entries(values: list[Any]) -> list[tuple[Job, tuple[bytes, bytes]]]:
    """The jobs of a claim's flat answer, each with its (stream, entry): what the host refreshes."""
    jobs: list[tuple[Job, tuple[bytes, bytes]]] = []
    for start in range(0, len(values), CLAIM_FIELDS):
        job_id, model, priority, created, timeout, _deadline, idem, inputs, attempts, callback = values[
            start : start + CLAIM_FIELDS - 2
        ]
        stream, entry = values[start + CLAIM_FIELDS - 2 : start + CLAIM_FIELDS]
        job = Job(
            id=_text(job_id),
            model=_text(model),
            inputs=_decoder.decode(inputs) if inputs else None,
            priority=Priority(int(_text(priority))),
            timeout_s=_number(timeout),
            idempotency_key=_text(idem) or None,
            callback_url=_text(callback) or None,
            created_at=_number(created) or time.time(),
            attempts=int(_text(attempts) or 0),
        )
        jobs.append((job, (stream, entry)))
    return jobs


def remaining_s(job: Job, now: float | None = None) -> float | None:
    """Seconds left before a claimed job's cluster-wide deadline (its timeout from its creation)."""
    if job.timeout_s is None:
        return None
    return job.created_at + job.timeout_s - (time.time() if now is None else now)


def job_from_hash(fields: dict[bytes, bytes]) -> tuple[Job, str | None]:
    """A job's hash as a `Job` (what a front shows), and the host that holds or ran it."""
    get = {_text(key): value for key, value in fields.items()}
    status = JobStatus(_text(get.get("status", b"queued")))
    result = get.get("result")
    job = Job(
        id=_text(get["id"]),
        model=_text(get.get("model", b"")),
        inputs=None,
        status=status,
        priority=Priority(int(_text(get.get("priority", b"1")))),
        created_at=_number(get.get("created_at")) or 0.0,
        started_at=_number(get.get("started_at")) if status is not JobStatus.QUEUED else None,
        ended_at=_number(get.get("ended_at")),
        attempts=int(_text(get.get("attempts", b"0")) or 0),
        worker_id=_text(get.get("worker", b"")) or None,
        device=_text(get.get("device", b"")) or None,
        timeout_s=_number(get.get("timeout_s")),
        result=_decoder.decode(result) if result else None,
        error=_text(get.get("error", b"")) or None,
        error_kind=_text(get.get("error_kind", b"")) or None,
        cost_usd=_number(get.get("cost_usd")) or 0.0,
        idempotency_key=_text(get.get("idem", b"")) or None,
    )
    return job, _text(get.get("host", b"")) or None


def view_of_job(job: Job, host: str | None) -> dict[str, Any]:
    """What a client sees of a cluster job (`GET /jobs/{id}`): `JobEndings.view`'s fields and the host."""
    shown = job.to_dict()
    shown.update(error_kind=job.error_kind, queue_position=None, host=host)
    return shown


def view_of(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A job's hash as the client sees it."""
    return view_of_job(*job_from_hash(fields))
