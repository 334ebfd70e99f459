"""The journal's table: its schema, its statements, the record kinds the writer turns into statements,
and conversions between jobs and rows. Pure: no I/O (that is `scheduler.journal.sqlite`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from itertools import chain
from typing import Any

import msgspec

from scheduler.core.jobs import STATUS_VALUES, Job, JobStatus, Priority, StageRun

log = logging.getLogger("modelsched.journal")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    n INTEGER PRIMARY KEY,          -- submission order, kept across restarts
    id TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    priority INTEGER NOT NULL,
    timeout_s REAL,
    idempotency_key TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    worker_id TEXT,
    device TEXT,
    inputs BLOB,
    result BLOB,
    error TEXT,
    error_kind TEXT,
    end_records INTEGER NOT NULL DEFAULT 0,  -- end records written for this job: more than 1 is a bug
    pipeline TEXT,                  -- a pipeline's job: its pipeline
    stage INTEGER NOT NULL DEFAULT 0,  -- the stage it has reached (its input is in `inputs`)
    stages BLOB,                    -- what its stages did, as msgpack
    cost_usd REAL NOT NULL DEFAULT 0,
    compute_s REAL NOT NULL DEFAULT 0,
    callback_url TEXT               -- POSTed the job's view when it ends (a webhook)
);
CREATE INDEX IF NOT EXISTS jobs_open ON jobs(n) WHERE ended_at IS NULL;
CREATE INDEX IF NOT EXISTS jobs_ended ON jobs(ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_by_key ON jobs(idempotency_key) WHERE idempotency_key IS NOT NULL;
-- the job list's pages (`GET /jobs?before=&status=&model=`), newest id first, over ended jobs. By
-- status only the jobs that did not complete are indexed: completed ones are most of them, so a page
-- of them is found by walking the id index (`page_query`), and their rows are written without it.
CREATE INDEX IF NOT EXISTS jobs_ended_by_model ON jobs(model, id) WHERE ended_at IS NOT NULL;
DROP INDEX IF EXISTS jobs_ended_by_status;  -- before 2026-12-03: every ended job, completed too
CREATE INDEX IF NOT EXISTS jobs_ended_unsuccessful ON jobs(status, id)
    WHERE ended_at IS NOT NULL AND status <> 'completed';
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);  -- the probe commit's one row
"""
# Columns added since the first schema: a journal written by an older version gains them at open.
ADDED_COLUMNS = {
    "pipeline": "TEXT",
    "stage": "INTEGER NOT NULL DEFAULT 0",
    "stages": "BLOB",
    "cost_usd": "REAL NOT NULL DEFAULT 0",
    "compute_s": "REAL NOT NULL DEFAULT 0",
    "callback_url": "TEXT",
}

SUBMIT_SQL = """
INSERT INTO jobs (id, model, priority, timeout_s, idempotency_key, status, attempts, created_at, inputs,
                  pipeline, stage, stages, callback_url)
VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING
"""
# An ended row's columns: the lean ones (`end_record`'s END_LEAN: what every end has), then the ones
# the commonest end leaves NULL (no idempotency key, pipeline, error or stages).
_LEAN_COLUMNS = (
    "id, model, priority, timeout_s, created_at, status, attempts, started_at, ended_at, worker_id, device, "
    "result, cost_usd, compute_s"
)
_NULL_COLUMNS = "idempotency_key, pipeline, error, error_kind, stages"
_LEAN_COUNT, _NULL_COUNT = len(_LEAN_COLUMNS.split(", ")), len(_NULL_COLUMNS.split(", "))


def _marks(count: int) -> str:
    """`count` parameters and the row's first end record, as an ended row's VALUES list."""
    return f"({', '.join(['?'] * count)}, 1)"


_ENDED_AGAIN = """ON CONFLICT(id) DO UPDATE SET
    status = excluded.status, attempts = excluded.attempts, started_at = excluded.started_at,
    ended_at = excluded.ended_at, worker_id = excluded.worker_id, device = excluded.device,
    inputs = NULL, result = excluded.result, error = excluded.error, error_kind = excluded.error_kind,
    stages = excluded.stages, cost_usd = excluded.cost_usd, compute_s = excluded.compute_s,
    end_records = end_records + 1
"""
END_ROW_SQL = f"""
INSERT INTO jobs ({_LEAN_COLUMNS}, {_NULL_COLUMNS}, end_records)
VALUES {_marks(_LEAN_COUNT + _NULL_COUNT)}
{_ENDED_AGAIN}"""
MAX_LEAN_ROWS = 64  # the most lean rows one INSERT writes (`executions`); 896 parameters, under 999


def end_rows_lean_sql(count: int) -> str:
    """One INSERT of `count` lean rows (`executions` writes up to `MAX_LEAN_ROWS` so; sqlite3 keeps
    each count's statement once prepared)."""
    return f"""
INSERT INTO jobs ({_LEAN_COLUMNS}, end_records)
VALUES {", ".join([_marks(_LEAN_COUNT)] * count)}
{_ENDED_AGAIN}"""


_END_ROWS_LEAN_SQL = [""] + [end_rows_lean_sql(count) for count in range(1, MAX_LEAN_ROWS + 1)]
# The commonest end: its NULLs are not bound one by one but left to the columns' defaults (binding
# costs per value, a NULL about twice an int: `scheduler.journal.sqlite`).
END_ROW_LEAN_SQL = _END_ROWS_LEAN_SQL[1]
END_UPDATE_SQL = """
UPDATE jobs SET status = ?, attempts = ?, started_at = ?, ended_at = ?, worker_id = ?, device = ?, inputs = NULL,
                result = ?, cost_usd = ?, compute_s = ?, error = ?, error_kind = ?, stages = ?,
                end_records = end_records + 1
WHERE id = ?
"""
ATTEMPTS_SQL = "UPDATE jobs SET attempts = ? WHERE id = ? AND ended_at IS NULL"
STAGE_SQL = "UPDATE jobs SET stage = ?, inputs = ?, stages = ?, cost_usd = ?, compute_s = ? WHERE id = ? AND ended_at IS NULL"
PROBE_SQL = (
    "INSERT INTO meta (key, value) VALUES ('probe', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
)
# The columns read back, named as `Job`'s fields (`job_from_row` relies on it).
OPEN_FIELDS = (
    "id", "model", "priority", "timeout_s", "idempotency_key", "attempts", "created_at", "inputs",
    "pipeline", "stage", "stages", "cost_usd", "compute_s", "callback_url",
)  # fmt: skip
ENDED_FIELDS = (
    "id", "model", "priority", "timeout_s", "idempotency_key", "status", "attempts", "created_at",
    "started_at", "ended_at", "worker_id", "device", "result", "error", "error_kind", "pipeline", "stages",
    "cost_usd", "compute_s",
)  # fmt: skip
OPEN_SQL = f"SELECT {', '.join(OPEN_FIELDS)} FROM jobs WHERE ended_at IS NULL ORDER BY n"
ENDED_COLUMNS = ", ".join(ENDED_FIELDS)


def page_query(
    before: str | None,
    since: str | None,
    status: str | None,
    model: str | None,
    ended_since: float,
    limit: int,
) -> tuple[str, tuple[object, ...]]:
    """The statement and parameters of a page of ended jobs (`JobJournal.page_ended`)."""
    where = ["ended_at IS NOT NULL", "ended_at >= ?"]
    params: list[object] = [ended_since]
    for clause, value in (
        ("id < ?", before),
        ("id >= ?", since),
        # the second term names `jobs_ended_unsuccessful`'s own, so that SQLite may use it
        ("status = ?" if status == "completed" else "status = ? AND status <> 'completed'", status),
        ("model = ?", model),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    params.append(limit)
    return f"SELECT {ENDED_COLUMNS} FROM jobs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?", tuple(
        params
    )


# Record kinds. END carries the whole row: the writer turns it into an UPDATE of the submitted row,
# or, when the submission is in the same commit, into one INSERT of the ended row (END_ROW). END_LEAN
# is an end whose key, pipeline and error are NULL (`end_record`), written as END_ROW_LEAN.
SUBMIT, END, END_ROW, ATTEMPTS, STAGE, END_LEAN, END_ROW_LEAN = 0, 1, 2, 3, 4, 5, 6
SQL_BY_KIND = {
    SUBMIT: SUBMIT_SQL,
    END: END_UPDATE_SQL,
    END_ROW: END_ROW_SQL,
    ATTEMPTS: ATTEMPTS_SQL,
    STAGE: STAGE_SQL,
    END_ROW_LEAN: END_ROW_LEAN_SQL,
}
ENDS = frozenset({END, END_LEAN})  # an end not yet known to be its row's first write
END_KINDS = frozenset({END, END_ROW, END_LEAN, END_ROW_LEAN})
ROW_OF = {END: END_ROW, END_LEAN: END_ROW_LEAN}  # an end written as its job's whole row
# where each kind's params hold the job id
ID_AT = {SUBMIT: 0, END: 0, END_ROW: 0, ATTEMPTS: 1, STAGE: 5, END_LEAN: 0, END_ROW_LEAN: 0}

_encoder = msgspec.msgpack.Encoder()
_encode = _encoder.encode
_decode = msgspec.msgpack.Decoder().decode
_decode_stages = msgspec.msgpack.Decoder(list[StageRun]).decode


def submit_params(job: Job) -> tuple[Any, ...]:
    return (
        job.id,
        job.model,
        int(job.priority),
        job.timeout_s,
        job.idempotency_key,
        job.attempts,
        job.created_at,
        encode_or_none(job.inputs, job.id),
        job.pipeline,
        job.stage,
        encode_stages(job),
        job.callback_url,
    )


def end_params(job: Job) -> tuple[Any, ...]:
    """An end's params for END_ROW_SQL: the lean columns', then the ones the commonest end leaves NULL."""
    return (
        *_lean_params(job),
        job.idempotency_key,
        job.pipeline,
        job.error,
        job.error_kind,
        encode_stages(job),
    )


def _lean_params(job: Job) -> tuple[Any, ...]:
    return (
        job.id,
        job.model,
        int(job.priority),
        job.timeout_s,
        job.created_at,
        STATUS_VALUES[job.status],
        job.attempts,
        job.started_at,
        job.ended_at,
        job.worker_id,
        job.device,
        encode_or_none(job.result, job.id),
        job.cost_usd,
        job.compute_s,
    )


def end_record(job: Job) -> tuple[int, tuple[Any, ...]]:
    """The job's end record: END_LEAN (END_ROW_LEAN_SQL's params) when its idempotency key,
    pipeline, error and stages are all None, else END (`end_params`)."""
    if (
        job.idempotency_key is None
        and job.pipeline is None
        and job.error is None
        and job.error_kind is None
        and job.stages is None
    ):
        return END_LEAN, _lean_params(job)
    return END, end_params(job)


_ENDING = slice(
    _LEAN_COLUMNS.split(", ").index("status"), _LEAN_COUNT
)  # of the lean columns, those an end sets
_ERRORS = slice(_LEAN_COUNT + 2, _LEAN_COUNT + _NULL_COUNT)  # of the others: error, error_kind, stages
_NO_ERRORS = (None, None, None)


def update_params(kind: int, params: tuple[Any, ...]) -> tuple[Any, ...]:
    """An end's params (END or END_LEAN) for END_UPDATE_SQL: the job's row was written before."""
    return (*params[_ENDING], *(_NO_ERRORS if kind == END_LEAN else params[_ERRORS]), params[0])


def stage_params(job: Job) -> tuple[Any, ...]:
    return (
        job.stage,
        encode_or_none(job.inputs, job.id),
        encode_stages(job),
        job.cost_usd,
        job.compute_s,
        job.id,
    )


def encode_stages(job: Job) -> bytearray | None:
    return None if job.stages is None else _blob(job.stages)


def decode_stages(blob: bytes | None) -> list[StageRun] | None:
    return None if blob is None else _decode_stages(blob)


def statements(records: list[tuple[int, tuple[Any, ...]]]) -> list[tuple[int, tuple[Any, ...]]]:
    """The records of one commit as statements, in order: a job submitted and ended within the same
    commit is written once, as its ended row, where it was submitted; other ends update their row."""
    if not any(kind == SUBMIT or kind in ENDS for kind, _ in records):
        return records  # whole rows (a held submission's end), attempts and stages: as they are
    submitted = {params[0] for kind, params in records if kind == SUBMIT}
    ended_here = {
        params[0]: (kind, params) for kind, params in records if kind in ENDS and params[0] in submitted
    }
    statements: list[tuple[int, tuple[Any, ...]]] = []
    for kind, params in records:
        job_id = params[ID_AT[kind]]
        if kind == SUBMIT and job_id in ended_here:
            end_kind, end = ended_here[job_id]
            statements.append((ROW_OF[end_kind], end))
        elif kind in ENDS and job_id not in ended_here:
            statements.append((END, update_params(kind, params)))
        elif job_id in ended_here and (kind in ENDS or kind in (ATTEMPTS, STAGE)):
            continue  # written with the submission
        else:
            statements.append((kind, params))
    return statements


def executions(kind: int, params: list[tuple[Any, ...]]) -> list[tuple[str, Any, bool]]:
    """How a run of one kind's statements is executed: (SQL, params, many), `executemany` when many,
    else `execute`. Lean rows go in one INSERT, `MAX_LEAN_ROWS` at most, so that a commit of ends
    steps once (and the writer commits it without BEGIN and COMMIT, two steps more): each step lets
    go of the GIL and takes it back, and under load, with the loop holding the GIL, taking it back is
    often a futex wait and a switch. `executemany` steps once a row."""
    if kind != END_ROW_LEAN:
        return [(SQL_BY_KIND[kind], params, True)]
    return [
        (_END_ROWS_LEAN_SQL[len(chunk)], tuple(chain.from_iterable(chunk)), False)
        for chunk in (params[start : start + MAX_LEAN_ROWS] for start in range(0, len(params), MAX_LEAN_ROWS))
    ]


def _blob(value: Any) -> bytearray:
    """`value` as msgpack, in a bytearray: sqlite3 binds a bytearray as it is, where `bytes` go through
    its adapter lookup first (see `scheduler.journal.sqlite`), which costs three times the binding."""
    blob = bytearray()
    _encoder.encode_into(value, blob)
    return blob


def encode_or_none(value: Any, job_id: str) -> bytearray | None:
    if value is None:
        return None
    try:
        return _blob(value)
    except (TypeError, msgspec.EncodeError) as exc:
        log.warning(
            "journal: the job holds a value msgpack cannot carry (%s); stored without it",
            exc,
            extra={"job_id": job_id},
        )
        return None


def decode_or_none(blob: bytes | None) -> Any:
    return None if blob is None else _decode(blob)


_DECODE: dict[str, Callable[[Any], Any]] = {
    "inputs": decode_or_none,
    "result": decode_or_none,
    "stages": decode_stages,
    "priority": Priority,
    "status": JobStatus,
}


def job_from_row(fields: tuple[str, ...], row: tuple[Any, ...]) -> Job:
    """A job from a row of the columns `fields` (named as `Job`'s fields), its blobs decoded."""
    values = dict(zip(fields, row, strict=True))
    values.setdefault("inputs", None)  # an ended job's inputs are dropped
    for name, decode in _DECODE.items():
        if name in values:
            values[name] = decode(values[name])
    return Job(**values)


def open_job(row: tuple[Any, ...]) -> Job:
    return job_from_row(OPEN_FIELDS, row)


def ended_job(row: tuple[Any, ...]) -> Job:
    return job_from_row(ENDED_FIELDS, row)
