"""`/jobs`: submit a job (202 once it is in the journal) or many at once (`/jobs/batch`, one journal
group), read one (optionally waiting for its end) or many (`?ids=`), cancel one, list them newest
first, page by page (`?before=<id>`, `scheduler.core.job_pages`)."""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import APIRouter, Query, Request

from scheduler.core import job_pages
from scheduler.core.job_pages import JobFilter, id_bound
from scheduler.core.jobs import Job, JobRequest
from scheduler.errors import JobNotFoundError, SchedulerError
from scheduler.http.answers import MAX_WAIT_S, Answer, HttpError, decode, error_parts, json_answer
from scheduler.http.body import read_body
from scheduler.http.routers.docs import answers_doc, body_doc
from scheduler.http.schemas import (
    BatchAccepted,
    BatchItem,
    BatchSubmit,
    JobAccepted,
    JobList,
    JobView,
    SubmitJob,
)
from scheduler.scheduler import Scheduler

submit_decoder = msgspec.json.Decoder(SubmitJob)
IDS_QUERY = Query(
    None, description="these jobs, in this order (comma-separated or repeated), not recent ones"
)


class _RawBatch(msgspec.Struct, forbid_unknown_fields=True):
    jobs: list[msgspec.Raw]


_batch_decoder = msgspec.json.Decoder(list[msgspec.Raw] | _RawBatch)


def job_request(body: SubmitJob) -> JobRequest:
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
    return JobRequest(
        model=model or "",
        pipeline=body.pipeline or "",
        inputs=body.inputs,
        priority=body.priority,
        timeout_s=body.timeout_s,
        idempotency_key=body.idempotency_key,
        callback_url=body.callback_url,
    )


def refused_item(exc: Exception, index: int) -> BatchItem:
    error, _ = error_parts(exc)
    field = f"jobs[{index}].{error.field}" if error.field else f"jobs[{index}]"
    return BatchItem(error=error.error, detail=error.detail, field=field, code=error.status)


def router(scheduler: Scheduler) -> APIRouter:
    routes = APIRouter(tags=["jobs"])
    settings = scheduler.settings

    def shown(job_id: str) -> str:
        return shown_status_of(scheduler.get_job(job_id))

    def shown_status_of(job: Job) -> str:
        return scheduler.endings.shown_status(job).value

    @routes.post(
        "/jobs",
        status_code=202,
        openapi_extra=body_doc(SubmitJob),
        responses=answers_doc(202, JobAccepted, 404, 413, 422, 429, 503, 507),
    )
    async def submit_job(request: Request) -> Answer:
        body: SubmitJob = decode(
            await read_body(request.receive, request.scope["headers"], settings.max_body_bytes),
            submit_decoder,
        )
        job = job_request(body)
        job_id = await scheduler.schedule_job(job)
        return json_answer(JobAccepted(job_id, shown(job_id)), 202)

    @routes.post(
        "/jobs/batch",
        openapi_extra=body_doc(BatchSubmit),
        responses=answers_doc(200, BatchAccepted, 413, 422, 503),
    )
    async def submit_batch(request: Request) -> Answer:
        """Many jobs in one request, committed to the journal in one group: an item per job, in order."""
        raw = await read_body(request.receive, request.scope["headers"], settings.max_body_bytes)
        body = decode(raw, _batch_decoder)
        items = body if isinstance(body, list) else body.jobs
        if not items or len(items) > settings.max_batch_submit:
            raise HttpError(
                422,
                "invalid_body",
                f"a batch holds 1 to {settings.max_batch_submit} jobs (got {len(items)})",
                "jobs",
            )
        answers: list[BatchItem | None] = [None] * len(items)
        requests: list[JobRequest] = []
        where: list[int] = []
        for index, item in enumerate(items):
            try:
                requests.append(job_request(decode(item, submit_decoder)))
                where.append(index)
            except HttpError as exc:
                answers[index] = refused_item(exc, index)
        outcomes = await scheduler.schedule_jobs(requests)
        for index, outcome in zip(where, outcomes, strict=True):
            if isinstance(outcome, SchedulerError):
                answers[index] = refused_item(outcome, index)
            else:
                answers[index] = BatchItem(job_id=outcome, status=shown(outcome))
        done = [answer for answer in answers if answer is not None]
        accepted = sum(1 for answer in done if answer.job_id is not None)
        return json_answer(BatchAccepted(done, accepted, len(done) - accepted))

    @routes.get("/jobs/{job_id}", responses=answers_doc(200, JobView, 404, 422))
    async def get_job(
        job_id: str,
        wait: float | None = Query(
            None, ge=0, le=MAX_WAIT_S, description="hold up to N s until the job ends"
        ),
    ) -> Answer:
        if wait:
            return json_answer(await scheduler.wait_for(job_id, wait))
        return json_answer(await scheduler.get_job_status(job_id))  # in a cluster: read afresh

    @routes.delete("/jobs/{job_id}", responses=answers_doc(200, JobView, 404, 409, 503))
    async def cancel_job(job_id: str) -> Answer:
        return json_answer(await scheduler.cancel_job(job_id))

    @routes.get("/jobs", responses=answers_doc(200, JobList, 422))
    async def list_jobs(
        status: str | None = Query(None, pattern="^(queued|processing|completed|error|cancelled)$"),
        model: str | None = None,
        limit: int = Query(50, ge=1, le=1000),
        ids: list[str] | None = IDS_QUERY,
        before: str | None = Query(
            None, max_length=64, description="older jobs than this id (the last page's `next_before`)"
        ),
        since: float | None = Query(
            None, ge=0, le=1e11, description="jobs created at or after (epoch s, to the ms)"
        ),
        until: float | None = Query(
            None, ge=0, le=1e11, description="jobs created before (epoch s, to the ms)"
        ),
    ) -> Answer:
        """Jobs newest first, from memory and the journal (ended jobs no longer in memory, and those
        from before a restart; in a cluster, every host's jobs from Redis); `next_before` pages on."""
        if ids is not None and scheduler.cluster is not None:  # any host's jobs, read afresh from Redis
            return json_answer(await scheduler.cluster.front.views(wanted_ids(ids)))
        if ids is not None:
            return json_answer(jobs_by_id(ids))
        if until is not None:
            before = min(before, id_bound(until)) if before is not None else id_bound(until)
        where = JobFilter(status, model, before, id_bound(since) if since is not None else None)
        if scheduler.cluster is not None:  # every host's jobs, as Redis holds them
            return json_answer(await scheduler.cluster.front.page(where, limit))
        jobs, next_before = await job_pages.page(
            scheduler.table, scheduler.journal, shown_status_of, where, limit
        )
        return json_answer(
            {"jobs": scheduler.endings.views(jobs), "not_found": [], "next_before": next_before}
        )

    def wanted_ids(ids: list[str]) -> list[str]:
        wanted = list(dict.fromkeys(one.strip() for text in ids for one in text.split(",") if one.strip()))
        if len(wanted) > settings.max_batch_submit:
            raise HttpError(422, "invalid_request", f"at most {settings.max_batch_submit} ids at once", "ids")
        return wanted

    def jobs_by_id(ids: list[str]) -> dict[str, Any]:
        wanted = wanted_ids(ids)
        found: list[Job] = []
        missing: list[str] = []
        for job_id in wanted:
            try:
                found.append(scheduler.get_job(job_id))
            except JobNotFoundError:
                missing.append(job_id)
        return {"jobs": scheduler.endings.views(found), "not_found": missing}

    return routes
