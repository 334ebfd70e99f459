"""`POST /render`: render one page and wait for it.

The body is a `RenderRequest` (`{url, wait_until?, screenshot?, html?, engine?, fallback?,
timeout_s?}`); the URL passes the SSRF guard, with DNS, before the job is queued. Answers: 200
`{job_id, status, result}`; 422 for a bad body or a refused URL (the guard also refuses redirects
and requests of the page while it renders: those end as 422 too); 429 when `render_queue_max`
renders are in flight; 502 when no page came back; 504 on a timeout, or when the wait
(`?timeout=`, default every try plus a margin) ends first: the job goes on (`GET /jobs/{id}`).
"""

from __future__ import annotations

import msgspec
from fastapi import APIRouter, Query, Request

from scheduler.http.answers import MAX_WAIT_S, Answer, HttpError, decode, result_answer
from scheduler.http.body import read_body
from scheduler.http.routers.docs import answers_doc, body_doc
from scheduler.http.schemas import InferResult
from scheduler.render.client import longest_wait_s, submit_render
from scheduler.render.model import RENDER_MODEL
from scheduler.scheduler import Scheduler
from workers.render.request import RenderRequest

_decoder = msgspec.json.Decoder(RenderRequest)
MAX_RENDER_BODY_BYTES = 64 * 1024  # a URL and a few flags


def router(scheduler: Scheduler) -> APIRouter:
    routes = APIRouter(tags=["render"])

    @routes.post(
        "/render",
        summary="Render a web page and wait for it",
        openapi_extra=body_doc(RenderRequest),
        responses=answers_doc(200, InferResult, 404, 409, 413, 422, 429, 502, 503, 504),
    )
    async def render(
        request: Request,
        timeout: float | None = Query(None, gt=0, le=MAX_WAIT_S, description="seconds to wait for the page"),
    ) -> Answer:
        if RENDER_MODEL not in scheduler.registry:
            raise HttpError(
                404, "render_disabled", "rendering is off: set render_enabled (MODELSCHED_RENDER_ENABLED=1)"
            )
        body: RenderRequest = decode(
            await read_body(request.receive, request.scope["headers"], MAX_RENDER_BODY_BYTES), _decoder
        )
        job_id = await submit_render(scheduler, body)  # the SSRF guard with DNS, then the job
        return await result_answer(scheduler, job_id, timeout or longest_wait_s(scheduler, body.timeout_s))

    return routes
