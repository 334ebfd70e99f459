"""The daemon itself: its status (`/system/status`), liveness (`/healthz`), readiness (`/readyz`: 503
while starting, shutting down, or while the journal cannot take jobs, with the reason) and Prometheus
metrics (`/metrics`). The dashboard at `/` is `scheduler.http.routers.dashboard`'s."""

from __future__ import annotations

from fastapi import APIRouter

from scheduler.core.status import SystemStatus
from scheduler.http.answers import Answer, json_answer
from scheduler.http.metrics import PROMETHEUS_TEXT, SchedulerMetrics
from scheduler.http.routers.docs import answers_doc
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

    @routes.get("/readyz", responses=answers_doc(200, Health, 503))
    async def readyz() -> Answer:
        reason = scheduler.not_ready_reason()
        if reason is None:
            return json_answer(Health("ready"))
        if reason in ("starting", "not accepting"):
            return json_answer(Health(reason), 503)
        return json_answer(Health("journal unavailable", reason), 503, {"Retry-After": "1"})

    @routes.get(
        "/metrics",
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
