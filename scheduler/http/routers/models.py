"""`/models`: infer (submit and wait in one call), list the models, load and unload one."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from scheduler.http.answers import MAX_WAIT_S, RAW_MEDIA_TYPE, Answer, infer_answer, json_answer
from scheduler.http.body import read_body
from scheduler.http.routers.docs import answers_doc, body_doc
from scheduler.http.schemas import InferRequest, InferResult, ModelAction, ModelList
from scheduler.scheduler import Scheduler


def router(scheduler: Scheduler) -> APIRouter:
    routes = APIRouter(tags=["models"])
    body_limit = scheduler.settings.max_body_bytes

    @routes.post(
        "/models/{model}/infer",
        openapi_extra=body_doc(InferRequest),
        responses=answers_doc(200, InferResult, 404, 406, 409, 413, 422, 429, 502, 503, 504, 507),
    )
    async def infer_model(
        model: str,
        request: Request,
        timeout: float | None = Query(
            None, gt=0, le=MAX_WAIT_S, description="seconds to wait for the result"
        ),
    ) -> Answer:
        """Answered by `HotPath` in front of the app; this route documents it (and serves it when the
        app runs without that front)."""
        body = await read_body(request.receive, request.scope["headers"], body_limit)
        raw = RAW_MEDIA_TYPE in request.headers.get("accept", "")
        return await infer_answer(scheduler, model, body, timeout, raw)

    @routes.get("/models", responses=answers_doc(200, ModelList))
    async def list_models() -> Answer:
        return json_answer(ModelList(scheduler.status().models))

    @routes.post("/models/{model}/load", responses=answers_doc(200, ModelAction, 404, 409, 507))
    async def load_model(model: str) -> Answer:
        return json_answer(ModelAction(model, await scheduler.load_model(model)))

    @routes.post("/models/{model}/unload", responses=answers_doc(200, ModelAction, 404))
    async def unload_model(model: str) -> Answer:
        return json_answer(ModelAction(model, await scheduler.unload_model(model)))

    return routes
