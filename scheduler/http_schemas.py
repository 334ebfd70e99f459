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


SCHEMAS: tuple[type, ...] = (
    SubmitJob, InferRequest, RenderBody, JobAccepted, JobView, JobList, InferResult, ErrorBody, ModelList, ModelAction, Health,
)


def openapi_components() -> dict[str, Any]:
    """OpenAPI component schemas for every body above."""
    _, components = msgspec.json.schema_components(SCHEMAS, ref_template="#/components/schemas/{name}")
    return components


def ref(struct: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{struct.__name__}"}
