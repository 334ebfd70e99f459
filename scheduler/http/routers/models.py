"""`/models`: infer (submit and wait in one call), list the models (with each one's state), whether
one is loaded (`/models/{m}/ready`), load and unload one."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from scheduler.core.readiness import ModelState
from scheduler.http.answers import MAX_WAIT_S, RAW_MEDIA_TYPE, Answer, infer_answer, json_answer
from scheduler.http.body import read_body
from scheduler.http.routers.docs import answers_doc, body_doc
from scheduler.http.schemas import InferRequest, InferResult, ModelAction, ModelList, ModelReady
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

    model_ready_doc = answers_doc(200, ModelReady, 404)
    model_ready_doc[503] = {
        "description": "not loaded on any worker",
        "content": model_ready_doc[200]["content"],
    }

    @routes.get("/models/{model}/ready", responses=model_ready_doc)
    async def model_ready(model: str) -> Answer:
        """200 when the model is loaded on at least one worker; 503 (with its state) otherwise."""
        readiness = scheduler.readiness.of(model)
        ready = readiness.state is ModelState.READY
        body = ModelReady(
            model, ready, readiness.state.value, readiness.ready_on, readiness.preload, readiness.error
        )
        return json_answer(body, 200 if ready else 503)

    @routes.post("/models/{model}/load", responses=answers_doc(200, ModelAction, 404, 409, 507))
    async def load_model(model: str) -> Answer:
        return json_answer(ModelAction(model, await scheduler.load_model(model)))

    @routes.post("/models/{model}/unload", responses=answers_doc(200, ModelAction, 404))
    async def unload_model(model: str) -> Answer:
        return json_answer(ModelAction(model, await scheduler.unload_model(model)))

    return routes
