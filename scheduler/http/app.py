"""The daemon as one ASGI app: the FastAPI routers (jobs, job events, models, render, system, the
OpenAI embeddings, the Open Inference Protocol, the dashboard and the offline API docs) behind the raw-ASGI hot path and, when a token is set, the bearer check,
inside the request metrics (which also answer an exception nothing else did). Every failure is an
RFC 9457 problem body (`answers.error_answer`; `problems.py`); see docs/architecture.md, Errors."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp

from scheduler import errors
from scheduler.http.access_log import AccessLog
from scheduler.http.answers import Answer, HttpError, error_answer, problem_answer
from scheduler.http.auth import PUBLIC_PATHS, BearerAuth
from scheduler.http.hot_path import HotPath
from scheduler.http.metrics import SchedulerMetrics
from scheduler.http.openapi_doc import finish, methods_of, operation_id
from scheduler.http.problems import problem
from scheduler.http.request_metrics import RequestMetrics
from scheduler.http.routers import dashboard, events, jobs, models, openai, pipelines, render, system, v2
from scheduler.http.schemas import openapi_components
from scheduler.scheduler import Scheduler
from scheduler.settings import Settings
from workers.gc_tuning import tune_gc


def create_app(settings_or_scheduler: Settings | Scheduler) -> DaemonApp:
    """The app over `scheduler` (given settings, it builds its own). The app's lifespan starts and
    stops the scheduler."""
    if isinstance(settings_or_scheduler, Scheduler):
        scheduler = settings_or_scheduler
    else:
        scheduler = Scheduler(settings_or_scheduler)
    metrics = SchedulerMetrics(scheduler)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await scheduler.start()
        tune_gc()  # everything loaded so far lives as long as the daemon
        try:
            yield
        finally:
            await scheduler.stop()

    app = DaemonApp(
        scheduler,
        metrics,
        title="modelsched",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # `/docs` and `/redoc` are the dashboard router's: served offline
        redoc_url=None,
        description="Model-inference jobs scheduled onto every GPU (or the CPU) of a machine.",
        generate_unique_id_function=operation_id,
    )

    @app.exception_handler(HttpError)
    @app.exception_handler(errors.SchedulerError)
    @app.exception_handler(Exception)  # a 500 with an error id, its traceback logged under that id
    async def scheduler_error(request: Request, exc: Exception) -> Answer:
        return error_answer(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Answer:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        detail = str(first.get("msg", "invalid request"))
        return problem_answer(
            problem(422, "invalid_request", f"{field}: {detail}" if field else detail, field)
        )

    @app.exception_handler(HTTPException)  # Starlette's own: no route (404), a method it lacks (405)
    async def routing_error(request: Request, exc: HTTPException) -> Answer:
        if exc.status_code == 404:
            body = problem(404, "not_found", f"no route {request.url.path}")
        elif exc.status_code == 405:
            allowed = methods_of(app.openapi(), request.url.path)
            if allowed:
                return problem_answer(
                    problem(405, "method_not_allowed", f"{request.url.path} takes {', '.join(allowed)}"),
                    {"Allow": ", ".join(allowed)},
                )
            body = problem(405, "method_not_allowed", f"{request.url.path} does not take {request.method}")
        else:
            body = problem(exc.status_code, "http_error", str(exc.detail))
        return problem_answer(body, exc.headers)

    app.include_router(jobs.router(scheduler))
    app.include_router(events.router(scheduler))
    app.include_router(models.router(scheduler))
    app.include_router(pipelines.router(scheduler))
    app.include_router(render.router(scheduler))
    app.include_router(system.router(scheduler, metrics))
    app.include_router(openai.router(scheduler))
    app.include_router(v2.router(scheduler))
    app.include_router(dashboard.router(scheduler))
    dashboard.mount_files(app)
    return app


class DaemonApp(FastAPI):
    """FastAPI with the daemon's front outside Starlette's middleware stack (where `HotPath` and
    `BearerAuth` cost nothing per request but their own work), and our msgspec structs as the OpenAPI
    component schemas."""

    def __init__(self, scheduler: Scheduler, metrics: SchedulerMetrics, **options: Any) -> None:
        super().__init__(**options)
        self.scheduler = scheduler
        self.metrics = metrics

    def build_middleware_stack(self) -> ASGIApp:
        settings = self.scheduler.settings
        front: ASGIApp = HotPath(
            super().build_middleware_stack(),
            self.scheduler,
            settings.max_body_bytes,
        )
        if settings.token:
            front = BearerAuth(front, settings.token)
        measured = RequestMetrics(front, self.metrics.request_answered)
        return AccessLog(measured) if settings.access_log else measured

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = finish(super().openapi(), PUBLIC_PATHS, bool(self.scheduler.settings.token))
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                openapi_components(openai.EmbeddingsRequest)  # every `$ref` resolves: ReDoc needs it
            )
            self.openapi_schema = schema
        return self.openapi_schema
