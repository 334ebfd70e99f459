"""The daemon itself: its status (`/system/status`), liveness (`/healthz`), readiness (`/readyz`: 503
while starting, shutting down, while the journal cannot take jobs, or while a preloaded model is not
loaded, with the reason) and Prometheus metrics (`/metrics`). The dashboard at `/` is
`scheduler.http.routers.dashboard`'s."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from scheduler.core.status import SystemStatus
from scheduler.http.answers import Answer, json_answer
from scheduler.http.metrics import PROMETHEUS_TEXT, SchedulerMetrics
from scheduler.http.routers.docs import answers_doc, ok_doc
from scheduler.http.schemas import Health
from scheduler.scheduler import Scheduler


def router(scheduler: Scheduler, metrics: SchedulerMetrics) -> APIRouter:
    routes = APIRouter(tags=["system"])

    @routes.get("/system/status", responses=answers_doc(200, SystemStatus))
    async def system_status() -> Answer:
        return json_answer(scheduler.status())

    @routes.get("/healthz", responses=answers_doc(200, Health))
    async def healthz() -> Answer:
        return json_answer(Health("ok"))

    @routes.get("/readyz", responses={**ok_doc(200, Health), **ok_doc(503, Health)})
    async def readyz() -> Answer:
        """200 when the daemon takes jobs, a worker is ready, the journal takes jobs and every
        preloaded model is loaded on a worker; else 503 saying what is missing. No token needed."""
        problem = scheduler.readiness.problem()
        if problem is None:
            return json_answer(Health("ready"))
        models = {model.model: model.state.value for model in problem.models} or None
        headers = {"Retry-After": "1"} if problem.status == "journal unavailable" else None
        return json_answer(Health(problem.status, problem.reason, models), 503, headers)

    @routes.get(
        "/metrics",
        response_class=Response,  # no JSON: only the exposition format is documented
        responses={
            200: {
                "description": "Prometheus text exposition format",
                "content": {PROMETHEUS_TEXT: {"schema": {"type": "string"}}},
            }
        },
    )
    async def prometheus_metrics() -> Answer:
        return Answer(200, metrics.render(), media_type=PROMETHEUS_TEXT)

    return routes
