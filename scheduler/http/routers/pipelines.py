"""`/pipelines`: list them, and infer through one (submit and wait in one call); `POST /classify`,
the `classify` demo pipeline's own endpoint (`{"text": ...}` in, the label and its scores out)."""

from __future__ import annotations

import msgspec
from fastapi import APIRouter, Query, Request

from scheduler.core.jobs import JobRequest
from scheduler.http.answers import (
    DEFAULT_INFER_WAIT_S,
    JSON,
    MAX_WAIT_S,
    Answer,
    decode,
    infer_answer,
    json_answer,
    result_answer,
)
from scheduler.http.body import read_body
from scheduler.http.routers.docs import answers_doc, body_doc, errors_doc
from scheduler.http.schemas import (
    Classification,
    ClassifyRequest,
    InferRequest,
    InferResult,
    PipelineList,
    ref,
)
from scheduler.scheduler import Scheduler

CLASSIFY = "classify"
_classify_decoder = msgspec.json.Decoder(ClassifyRequest)


def router(scheduler: Scheduler) -> APIRouter:
    routes = APIRouter(tags=["pipelines"])
    body_limit = scheduler.settings.max_body_bytes

    @routes.get("/pipelines", responses=answers_doc(200, PipelineList))
    async def list_pipelines() -> Answer:
        return json_answer(PipelineList(scheduler.status().pipelines))

    @routes.post(
        "/pipelines/{pipeline}/infer",
        openapi_extra=body_doc(InferRequest),
        responses=answers_doc(200, InferResult, 404, 409, 413, 422, 429, 502, 503, 504, 507),
    )
    async def infer_pipeline(
        pipeline: str,
        request: Request,
        timeout: float | None = Query(
            None, gt=0, le=MAX_WAIT_S, description="seconds to wait for the result"
        ),
    ) -> Answer:
        body = await read_body(request.receive, request.scope["headers"], body_limit)
        return await infer_answer(scheduler, pipeline, body, timeout, pipeline=True)

    @routes.post(
        "/classify",
        openapi_extra=body_doc(ClassifyRequest),
        responses={
            200: {
                "description": "the label and its scores (a `classify` pipeline of another shape: its result as it is)",
                "content": {JSON: {"schema": {"anyOf": [ref(Classification), ref(InferResult)]}}},
            },
            **errors_doc(404, 409, 413, 422, 429, 502, 503, 504, 507),
        },
    )
    async def classify(request: Request) -> Answer:
        """The `classify` pipeline on one text: its label, confidence and per-label scores."""
        body: ClassifyRequest = decode(
            await read_body(request.receive, request.scope["headers"], body_limit), _classify_decoder
        )
        job_id = await scheduler.schedule_job(
            JobRequest(pipeline=CLASSIFY, inputs=body.text, priority=body.priority, timeout_s=body.timeout_s),
            waited=True,
        )
        answer = await result_answer(scheduler, job_id, body.timeout_s or DEFAULT_INFER_WAIT_S)
        if answer.status_code != 200:
            return answer
        job = scheduler.get_job(job_id)
        result = job.result
        if not isinstance(result, dict) or not {"label", "confidence", "scores"} <= result.keys():
            return answer  # a `classify` pipeline of another shape: its result as it is
        return json_answer(
            Classification(
                job_id,
                result["label"],
                result["confidence"],
                result["scores"],
                result.get("words"),
                job.cost_usd,
            )
        )

    return routes
