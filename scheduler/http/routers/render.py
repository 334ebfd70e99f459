"""`POST /render` as a FastAPI `APIRouter`: render one page and wait for it.

    app.include_router(scheduler.http.routers.render.router)   # the app must set app.state.scheduler

The body is `{url, wait_until?, screenshot?, html?, engine?, fallback?, timeout_s?}`
(`scheduler.http.schemas.RenderBody`); the URL passes the SSRF guard, with DNS, before the job is
queued. Answers: 200 `{job_id, status, result}`; 422 for a bad body or a refused URL (the guard also
refuses redirects and requests of the page while it renders: those end as 422 too); 429 when
`render_queue_max` renders are in flight; 502 when no page came back; 504 on a timeout, or when the
wait (`?timeout=`, default every try plus a margin) ends first — the job goes on (`GET /jobs/{id}`).
Errors are answered here (`error_answer`), so the router works in any app, not only `server.py`'s.
"""

from __future__ import annotations

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from scheduler.http.answers import (
    MAX_WAIT_S,
    Answer,
    HttpError,
    decode,
    error_answer,
    read_body,
    result_answer,
)
from scheduler.http.schemas import ErrorBody, InferResult, RenderBody, ref
from scheduler.render.client import longest_wait_s, submit_render
from scheduler.render.executor import RENDER_MODEL

router = APIRouter(tags=["render"])
_decoder = msgspec.json.Decoder(RenderBody)
MAX_RENDER_BODY_BYTES = 64 * 1024  # a URL and a few flags


def _response(answer: Answer) -> Response:
    return Response(answer.body, status_code=answer.status, media_type=answer.media_type, headers=answer.headers)


@router.post(
    "/render", summary="Render a web page and wait for it",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": ref(RenderBody)}}}},
    responses={code: {"description": "error", "content": {"application/json": {"schema": ref(ErrorBody)}}}
               for code in (404, 413, 422, 429, 502, 503, 504)} | {
        200: {"description": "the page", "content": {"application/json": {"schema": ref(InferResult)}}}},
)
async def render(request: Request, timeout: float | None = Query(
        None, gt=0, le=MAX_WAIT_S, description="seconds to wait for the page")) -> Response:
    scheduler = request.app.state.scheduler
    try:
        if RENDER_MODEL not in scheduler.registry:
            raise HttpError(404, "render_disabled", "rendering is off: set render_enabled (MODELSCHED_RENDER_ENABLED=1)")
        body: RenderBody = decode(await read_body(request, MAX_RENDER_BODY_BYTES), _decoder)
        inputs = {key: value for key, value in msgspec.structs.asdict(body).items()
                  if value is not None or key == "fallback"}  # "fallback": null turns the fallback off
        job_id = await submit_render(scheduler, inputs)  # the SSRF guard with DNS, then the job
        wait_s = timeout or longest_wait_s(scheduler, body.timeout_s)
        return _response(await result_answer(scheduler, job_id, wait_s))
    except Exception as exc:  # every failure has its status code (error_answer); none becomes a 500
        return _response(error_answer(exc))
