"""`/jobs`: submit a job (202 once it is in the journal), read one (optionally waiting for its end),
cancel one, list recent ones."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from fastapi import APIRouter, Query, Request

from scheduler.core.jobs import JobRequest
from scheduler.http.answers import MAX_WAIT_S, Answer, HttpError, decode, json_answer
from scheduler.http.body import read_body
from scheduler.http.routers.docs import answers_doc, body_doc
from scheduler.http.schemas import JobAccepted, JobList, JobView, SubmitJob
from scheduler.scheduler import Scheduler

_submit_decoder = msgspec.json.Decoder(SubmitJob)


def router(scheduler: Scheduler, on_submitted: Callable[[str], None]) -> APIRouter:
    routes = APIRouter(tags=["jobs"])
    body_limit = scheduler.settings.max_body_bytes

    @routes.post(
        "/jobs",
        status_code=202,
        openapi_extra=body_doc(SubmitJob),
        responses=answers_doc(202, JobAccepted, 404, 413, 422, 429, 503, 507),
    )
    async def submit_job(request: Request) -> Answer:
        body: SubmitJob = decode(
            await read_body(request.receive, request.scope["headers"], body_limit), _submit_decoder
        )
        model = body.model or body.feature
        if body.pipeline and model:
            raise HttpError(422, "invalid_body", "name a model or a pipeline, not both", "pipeline")
        if not model and not body.pipeline:
            raise HttpError(
                422,
                "invalid_body",
                "the body must name a model ('model' or 'feature') or a 'pipeline'",
                "model",
            )
        job_id = await scheduler.schedule_job(
            JobRequest(
                model=model or "",
                pipeline=body.pipeline or "",
                inputs=body.inputs,
                priority=body.priority,
                timeout_s=body.timeout_s,
                idempotency_key=body.idempotency_key,
            )
        )
        on_submitted(model or body.pipeline or "")
        return json_answer(JobAccepted(job_id, scheduler.get_job_status(job_id)["status"]), 202)

    @routes.get("/jobs/{job_id}", responses=answers_doc(200, JobView, 404, 422))
    async def get_job(
        job_id: str,
        wait: float | None = Query(
            None, ge=0, le=MAX_WAIT_S, description="hold up to N s until the job ends"
        ),
    ) -> Answer:
        if wait:
            return json_answer(await scheduler.wait_for(job_id, wait))
        return json_answer(scheduler.get_job_status(job_id))

    @routes.delete("/jobs/{job_id}", responses=answers_doc(200, JobView, 404, 409))
    async def cancel_job(job_id: str) -> Answer:
        return json_answer(await scheduler.cancel_job(job_id))

    @routes.get("/jobs", responses=answers_doc(200, JobList, 422))
    async def list_jobs(
        status: str | None = Query(None, pattern="^(queued|processing|completed|error|cancelled)$"),
        model: str | None = None,
        limit: int = Query(50, ge=1, le=1000),
    ) -> Answer:
        return json_answer({"jobs": scheduler.list_jobs(status, model, limit)})

    return routes
