"""The Open Inference Protocol (KServe v2: what Triton, TorchServe, MLServer and `tritonclient` speak)
for every model whose adapter declares a tensor signature (`mlp`: FP32 `INPUT` [-1, 256] -> FP32
`OUTPUT` [-1, 16]; `minilm`: BYTES `TEXT` [-1] -> FP32 `EMBEDDING` [-1, 384]).

    GET  /v2                       server metadata
    GET  /v2/health/live           200 while the process answers
    GET  /v2/health/ready          200 once a worker is ready (503 before, and from the start of shutdown)
    GET  /v2/models/{m}            the model's metadata: its input and output tensors
    GET  /v2/models/{m}/ready      200 when the model can run here (registered, fits, a worker ready)
    POST /v2/models/{m}/infer      tensors in, tensors out (JSON or the binary tensor data extension)

`/versions/{v}` paths answer the same (every model has the one version "1"). The first dimension is
the batch: a BYTES input runs as one job of all its strings (split into batches by the worker), a
numeric input as one job per row (submitted in one group, like `POST /jobs/batch`). Errors are
`{"error": "<message>"}`, as the protocol has them, with the daemon's status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from scheduler.core.endings import result_of
from scheduler.core.jobs import JobRequest, JobStatus
from scheduler.errors import InvalidInputError, ModelNotFoundError, QueueFullError, SchedulerError
from scheduler.http.answers import (
    DEFAULT_INFER_WAIT_S,
    JSON,
    RAW_MEDIA_TYPE,
    Answer,
    error_parts,
    json_answer,
)
from scheduler.http.body import read_body
from scheduler.http.protocol_schemas import (
    V2Error,
    V2InferAnswer,
    V2Live,
    V2ModelMetadata,
    V2ModelReady,
    V2Ready,
    V2Server,
)
from scheduler.http.routers.docs import body_doc, errors_doc, ok_doc
from scheduler.http.schemas import ref
from scheduler.http.tensors import (
    HEADER_LENGTH,
    InferRequestV2,
    bad,
    read_tensors,
    response_body,
    split_body,
    wants_binary,
)
from scheduler.scheduler import Scheduler

VERSION = "1"
METADATA_DOC = {**ok_doc(200, V2ModelMetadata), **errors_doc(404, error=V2Error, media_type=JSON)}
READY_DOC = {
    **ok_doc(200, V2ModelReady),
    **ok_doc(503, V2ModelReady),
    **errors_doc(404, error=V2Error, media_type=JSON),
}
INFER_DOC = {
    200: {
        "description": "the outputs: JSON, or with the binary extension the JSON's "
        "`Inference-Header-Content-Length` bytes and then the tensor's",
        "content": {JSON: {"schema": ref(V2InferAnswer)}, RAW_MEDIA_TYPE: {"schema": {"type": "string"}}},
    },
    **errors_doc(404, 409, 413, 422, 429, 500, 502, 503, 504, 507, error=V2Error, media_type=JSON),
}


def v2_error(exc: Exception) -> Answer:
    body, headers = error_parts(exc)
    return json_answer({"error": body.detail}, body.status, headers)


def tensor_doc(tensor: Any) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}


def router(scheduler: Scheduler) -> APIRouter:
    routes = APIRouter(prefix="/v2", tags=["open inference protocol"])

    def signature_of(model: str) -> Any:  # the adapter's `adapters.base.Signature`
        registered = scheduler.registry.models.get(model)
        if registered is None:
            raise ModelNotFoundError(f"model {model!r} is not registered")
        signature = getattr(registered.adapter, "signature", None)
        if signature is None:
            raise ModelNotFoundError(f"model {model!r} declares no tensors; use POST /models/{model}/infer")
        return signature

    @routes.get("", responses=ok_doc(200, V2Server))
    async def server_metadata() -> Answer:
        return json_answer({"name": "modelsched", "version": "0.1.0", "extensions": ["binary_tensor_data"]})

    @routes.get("/health/live", responses=ok_doc(200, V2Live))
    async def live() -> Answer:
        return json_answer({"live": True})

    @routes.get("/health/ready", responses={**ok_doc(200, V2Ready), **ok_doc(503, V2Ready)})
    async def ready() -> Answer:
        return json_answer({"ready": scheduler.ready}, 200 if scheduler.ready else 503)

    @routes.get("/models/{model}", responses=METADATA_DOC)
    @routes.get("/models/{model}/versions/{version}", responses=METADATA_DOC)
    async def metadata(model: str, version: str = VERSION) -> Answer:
        try:
            signature = signature_of(model)
        except SchedulerError as exc:
            return v2_error(exc)
        return json_answer(
            {
                "name": model,
                "versions": [VERSION],
                "platform": "modelsched",
                "inputs": [tensor_doc(signature.input)],
                "outputs": [tensor_doc(signature.output)],
            }
        )

    @routes.get("/models/{model}/ready", responses=READY_DOC)
    @routes.get("/models/{model}/versions/{version}/ready", responses=READY_DOC)
    async def model_ready(model: str, version: str = VERSION) -> Answer:
        try:
            signature_of(model)
        except SchedulerError as exc:
            return v2_error(exc)
        registered = scheduler.registry.models[model]
        is_ready = scheduler.ready and registered.no_fit is None
        return json_answer({"name": model, "ready": is_ready}, 200 if is_ready else 503)

    @routes.post("/models/{model}/infer", responses=INFER_DOC, openapi_extra=body_doc(InferRequestV2))
    @routes.post(
        "/models/{model}/versions/{version}/infer",
        responses=INFER_DOC,
        openapi_extra=body_doc(InferRequestV2),
    )
    async def infer(model: str, request: Request, version: str = VERSION) -> Answer:
        try:
            signature = signature_of(model)
            body = await read_body(
                request.receive, request.scope["headers"], scheduler.settings.max_body_bytes
            )
            parsed, binary = split_body(body, request.headers.get(HEADER_LENGTH))
            if len(parsed.inputs) != 1:
                raise bad(f"{model} takes one input, {signature.input.name}", "inputs")
            given = parsed.inputs[0]
            if given.datatype != signature.input.datatype:
                raise bad(f"input {given.name} must be {signature.input.datatype}", "inputs[0].datatype")
            for wanted in parsed.outputs or ():
                if wanted.name != signature.output.name:
                    raise bad(f"{model} has one output, {signature.output.name}", "outputs")
            (tensor,) = read_tensors(parsed, binary)
            array = await run(model, signature, tensor)
            content, headers = response_body(
                model, parsed, signature.output.name, array, wants_binary(parsed, signature.output.name)
            )
        except Exception as exc:
            return v2_error(exc)
        media_type = RAW_MEDIA_TYPE if headers else "application/json"
        return Answer(200, content, headers, media_type)

    async def run(model: str, signature: Any, tensor: np.ndarray | list[str]) -> np.ndarray:
        """One job of all the strings, or one job per row of numbers; the outputs as one array."""
        if isinstance(tensor, list):
            if not tensor:
                raise InvalidInputError("the input holds no strings")
            job_id = await scheduler.schedule_job(JobRequest(model=model, inputs=tensor), waited=True)
            vectors = result_of(await scheduler.wait_for(job_id, DEFAULT_INFER_WAIT_S), scheduler.accepting)
            return np.asarray(vectors, dtype="<f4").reshape(len(tensor), -1)
        width = signature.input.shape[-1]
        rows = tensor.reshape(1, -1) if tensor.ndim == 1 else tensor
        if rows.ndim != 2 or (width > 0 and rows.shape[1] != width):
            raise bad(f"the input's shape must be [-1, {width}] (or [{width}])", "inputs[0].shape")
        if rows.shape[0] > scheduler.settings.max_batch_submit:
            raise bad(
                f"the input has {rows.shape[0]} rows; at most {scheduler.settings.max_batch_submit} "
                "(max_batch_submit) run in one request",
                "inputs[0].shape",
            )
        room = scheduler.settings.max_queue - scheduler.table.count_by_status[JobStatus.QUEUED]
        if rows.shape[0] > room:  # all rows or none: a retried request must not run rows twice
            raise QueueFullError(
                f"the queue has room for {max(room, 0)} jobs, not {rows.shape[0]}; retry later"
            )
        requests = [JobRequest(model=model, inputs=row) for row in rows.astype(float).tolist()]
        ids = await scheduler.schedule_jobs(requests)
        refused = next((outcome for outcome in ids if isinstance(outcome, SchedulerError)), None)
        if refused is not None:
            for outcome in ids:  # the rows admitted do not run without the others
                if isinstance(outcome, str):
                    with contextlib.suppress(SchedulerError):
                        await scheduler.cancel_job(outcome)
            raise refused
        views = await asyncio.gather(
            *(scheduler.wait_for(str(job_id), DEFAULT_INFER_WAIT_S) for job_id in ids)
        )
        outputs = np.asarray([result_of(view, scheduler.accepting) for view in views], dtype="<f4")
        return outputs[0] if tensor.ndim == 1 else outputs

    return routes
