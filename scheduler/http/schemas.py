"""Request and response bodies of the REST API, as msgspec structs: decoded and encoded in C, and
described to OpenAPI from the same definitions (`openapi_components`). The system status and the
render request are the core's and the render process's own structs, described as they are."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from scheduler.core.history import HistoryColumns
from scheduler.core.jobs import StageRun
from scheduler.core.status import ModelInfo, PipelineInfo, SystemStatus
from workers.render.request import RenderRequest

PriorityName = Literal["high", "normal", "low"]


class SubmitJob(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /jobs`: a model's job (`feature` is accepted as another name for `model`), or a
    pipeline's (`pipeline`)."""

    inputs: Any
    model: str | None = None
    feature: str | None = None
    pipeline: str | None = None
    priority: PriorityName = "normal"
    timeout_s: float | None = None
    idempotency_key: str | None = msgspec.field(default=None)
    callback_url: str | None = None  # POSTed the job's view once it has ended (a webhook)


class InferRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /models/{model}/infer`: submit and wait in one call."""

    inputs: Any
    priority: PriorityName = "normal"
    timeout_s: float | None = None


class JobAccepted(msgspec.Struct):
    job_id: str
    status: str


class JobView(msgspec.Struct, kw_only=True):
    """A job as `GET /jobs/{id}` shows it; a pipeline's job also has `pipeline` and `stages`."""

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
    error_kind: str | None  # why it failed: input, model, oom, load, timeout, cancelled, poison, placement
    queue_position: int | None  # queued: how many jobs of its model run before it
    cost_usd: float
    pipeline: str | None = None
    stages: list[StageRun] | None = None


class ClassifyRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /classify`: one text through the `classify` pipeline."""

    text: str
    priority: PriorityName = "normal"
    timeout_s: float | None = None


class Classification(msgspec.Struct):
    """`POST /classify`'s answer: the label, its probability, every label's, what it cost."""

    job_id: str
    label: str
    confidence: float
    scores: dict[str, float]
    words: int | None
    cost_usd: float


class PipelineList(msgspec.Struct):
    pipelines: list[PipelineInfo]


class JobList(msgspec.Struct):
    """`GET /jobs`; with `ids`, `not_found` lists the ids no job has. `next_before`: the cursor of the
    next (older) page, `?before=<next_before>`; None when this page is the last."""

    jobs: list[JobView]
    not_found: list[str] = []
    next_before: str | None = None


class Login(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /login`: the daemon's token; answered with the dashboard's cookie."""

    token: str


class LoginState(msgspec.Struct):
    """`/login`, `/logout`: whether the daemon wants a token."""

    token_required: bool


class BatchSubmit(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /jobs/batch`: up to `max_batch_submit` job bodies (a bare JSON list of them works too).
    Each is checked alone: one that is refused gets its error in its place, the others are queued."""

    jobs: list[SubmitJob]


class BatchItem(msgspec.Struct, omit_defaults=True):
    """One job of a batch: `job_id` and `status`, or the error that refused it (`code`: the status
    a single `POST /jobs` would have answered)."""

    job_id: str | None = None
    status: str | None = None
    error: str | None = None
    detail: str | None = None
    field: str | None = None
    code: int | None = None


class BatchAccepted(msgspec.Struct):
    jobs: list[BatchItem]
    accepted: int
    refused: int


class InferResult(msgspec.Struct):
    """A job's result (`infer`, `render`): its id, `completed`, and what the model gave."""

    job_id: str
    status: str
    result: Any = None


class ErrorBody(msgspec.Struct, kw_only=True):
    """Every error answer (`application/problem+json`, RFC 9457): `type` (a URI naming the kind of
    problem: `tag:modelsched,2026:problem/<error>`), `title` (the same for every answer of that
    type), `status` (the HTTP status code), `error` (the kind, a short code), `detail` (what is wrong
    this time) and `field` (the request field at fault, or null). A job's answer (`infer`, `render`)
    also has `job_id` and `job_status` (the job's state: poll `GET /jobs/{job_id}`); an unexpected
    failure (500) has `error_id`, the id of the log line that holds its traceback."""

    type: str
    title: str
    status: int
    error: str
    detail: str
    field: str | None = None
    job_id: str | msgspec.UnsetType = msgspec.UNSET
    job_status: str | msgspec.UnsetType = msgspec.UNSET
    error_id: str | msgspec.UnsetType = msgspec.UNSET


class ModelList(msgspec.Struct):
    models: list[ModelInfo]


class ModelAction(msgspec.Struct):
    model: str
    workers: list[str]


class Health(msgspec.Struct, omit_defaults=True):
    """`/healthz` and `/readyz`; `reason` says why the daemon is not ready (`/readyz` 503): `status`
    `starting`, `not accepting`, `journal unavailable`, or `models not ready` with `models`, the state
    of each preloaded model that is not loaded yet (`loading`, `failed`, `unloaded`)."""

    status: str
    reason: str | None = None
    models: dict[str, str] | None = None


class ModelReady(msgspec.Struct):
    """`GET /models/{model}/ready`: 200 when it is loaded on at least one worker, else 503."""

    model: str
    ready: bool
    state: str  # unloaded | loading | ready | failed
    workers: list[str]  # where it is loaded
    preload: bool
    error: str | None = None  # its last failed load


SCHEMAS: tuple[type, ...] = (
    SubmitJob,
    InferRequest,
    RenderRequest,
    JobAccepted,
    JobView,
    JobList,
    BatchSubmit,
    BatchItem,
    BatchAccepted,
    InferResult,
    ErrorBody,
    ModelList,
    ModelAction,
    Health,
    ModelReady,
    ClassifyRequest,
    Classification,
    PipelineList,
    SystemStatus,
    HistoryColumns,
    Login,
    LoginState,
)


def openapi_components(*more: type) -> dict[str, Any]:
    """OpenAPI component schemas for every body above, and `more` (bodies a router defines)."""
    _, components = msgspec.json.schema_components(
        (*SCHEMAS, *more), ref_template="#/components/schemas/{name}"
    )
    return components


def ref(struct: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{struct.__name__}"}
