"""The daemon as one ASGI app: the FastAPI routers (jobs, models, render, system) behind the raw-ASGI
hot path and, when a token is set, the bearer check. Every failure is answered by `error_answer`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from scheduler import errors
from scheduler.http.answers import Answer, HttpError, error_answer, json_answer
from scheduler.http.auth import BearerAuth
from scheduler.http.hot_path import HotPath
from scheduler.http.metrics import SchedulerMetrics
from scheduler.http.routers import jobs, models, render, system
from scheduler.http.schemas import ErrorBody, openapi_components
from scheduler.scheduler import Scheduler
from scheduler.settings import Settings
from workers.gc_tuning import tune_gc


def create_app(settings_or_scheduler: Settings | Scheduler) -> FastAPI:
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

    app = FastAPI(title="modelsched", version="0.1.0", lifespan=lifespan,
                  description="Model-inference jobs scheduled onto every GPU (or the CPU) of a machine.")
    app.state.scheduler = scheduler
    app.state.metrics = metrics

    @app.exception_handler(HttpError)
    @app.exception_handler(errors.SchedulerError)
    async def scheduler_error(request: Request, exc: Exception) -> Answer:
        return error_answer(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Answer:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return json_answer(ErrorBody("invalid_request", str(first.get("msg", "invalid request")), field), 422)

    app.include_router(jobs.router(scheduler, metrics.job_submitted))
    app.include_router(models.router(scheduler, metrics.job_submitted))
    app.include_router(render.router(scheduler))
    app.include_router(system.router(scheduler, metrics))
    _install_openapi(app)
    _install_front(app, scheduler, metrics)
    return app


def _install_front(app: FastAPI, scheduler: Scheduler, metrics: SchedulerMetrics) -> None:
    """Put `HotPath` and `BearerAuth` outside Starlette's middleware stack, where they cost nothing per
    request but their own work (Starlette builds the stack on the first call)."""
    build_stack = app.build_middleware_stack
    token = scheduler.settings.token

    def build_middleware_stack() -> Any:
        front = HotPath(build_stack(), scheduler, scheduler.settings.max_body_bytes, metrics.job_submitted)
        return BearerAuth(front, token) if token else front

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


def _install_openapi(app: FastAPI) -> None:
    """The OpenAPI schema with our msgspec structs as its component schemas."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(openapi_components())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
