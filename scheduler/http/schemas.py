"""Request and response bodies of the REST API, as msgspec structs: decoded and encoded in C, and
described to OpenAPI from the same definitions (`openapi_components`)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

PriorityName = Literal["high", "normal", "low"]


class SubmitJob(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /jobs`. `feature` is accepted as another name for `model`."""

    inputs: Any
    model: str | None = None
    feature: str | None = None
    priority: PriorityName = "normal"
    timeout_s: float | None = None
    idempotency_key: str | None = msgspec.field(default=None)


class InferRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /models/{model}/infer`: submit and wait in one call."""

    inputs: Any
    priority: PriorityName = "normal"
    timeout_s: float | None = None


class RenderBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /render`: render a page in Chromium (or fetch it over plain HTTP) and wait for it."""

    url: str
    wait_until: Literal["load", "domcontentloaded", "networkidle"] = "load"
    screenshot: bool = False
    html: bool = False
    engine: Literal["browser", "http"] = "browser"
    fallback: Literal["http"] | None = "http"
    timeout_s: float | None = None


class JobAccepted(msgspec.Struct):
    job_id: str
    status: str


class JobView(msgspec.Struct):
    """A job as `GET /jobs/{id}` shows it."""

    job_id: str
    model: str
    status: str
    priority: str
    created_at: float
    started_at: float | None
    ended_at: float | None
    attempts: int
    worker: str | None
    device: str | None
    timeout_s: float | None
    result: Any
    error: str | None


class JobList(msgspec.Struct):
    jobs: list[JobView]


class InferResult(msgspec.Struct):
    job_id: str
    status: str
    result: Any = None
    error: str | None = None


class ErrorBody(msgspec.Struct):
    """Every error answer: what went wrong, and the field at fault where there is one."""

    error: str
    detail: str
    field: str | None = None


class ModelInfo(msgspec.Struct):
    name: str
    adapter: str
    device: str
    vram_mb: int
    max_batch_size: int
    max_delay_ms: float
    loaded_on: list[str]
    queued: int
    failed: str | None


class ModelList(msgspec.Struct):
    models: list[ModelInfo]


class ModelAction(msgspec.Struct):
    model: str
    workers: list[str]


class Health(msgspec.Struct):
    status: str


class SchedulerInfo(msgspec.Struct):
    type: str
    preset: str
    accepting: bool
    started_at: float | None
    uptime_s: float


class GpuStatus(msgspec.Struct):
    """One card: memory as the card reports it, and what the VRAM ledger assigns to models."""

    index: int
    name: str
    simulated: bool
    total_mb: float
    used_mb: float
    free_mb: float
    utilization_pct: float | None
    reserve_mb: int
    ledger_used_mb: float
    workers: list[str]


class LoadedModelStatus(msgspec.Struct):
    model: str
    ledger_mb: float
    measured_mb: float
    loading: bool
    jobs_in_flight: int
    idle_s: float


class WorkerStatus(msgspec.Struct):
    worker_id: str
    pid: int | None
    device: str
    gpu_index: int | None
    state: str
    alive: bool
    loaded_models: list[LoadedModelStatus]
    jobs_in_flight: int
    jobs_done: int
    last_heartbeat: float | None
    heartbeat_age_s: float | None
    restarts: int
    rss_mb: float
    cuda_visible_devices: str | None


class QueueCounts(msgspec.Struct):
    queued: int
    processing: int
    completed: int
    error: int
    cancelled: int
    max_queue: int


class SystemStatus(msgspec.Struct):
    """`GET /system/status`: the scheduler, each GPU, each worker, the queue, the models."""

    scheduler: SchedulerInfo
    gpu: list[GpuStatus]
    workers: list[WorkerStatus]
    render: dict[str, Any] | None
    queue: QueueCounts
    models: list[ModelInfo]


SCHEMAS: tuple[type, ...] = (
    SubmitJob, InferRequest, RenderBody, JobAccepted, JobView, JobList, InferResult, ErrorBody, ModelList, ModelAction, Health,
    SystemStatus,
)


def openapi_components() -> dict[str, Any]:
    """OpenAPI component schemas for every body above."""
    _, components = msgspec.json.schema_components(SCHEMAS, ref_template="#/components/schemas/{name}")
    return components


def ref(struct: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{struct.__name__}"}
