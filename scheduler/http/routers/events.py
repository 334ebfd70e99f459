"""`GET /jobs/{id}/events`: a job's events as Server-Sent Events (`scheduler.core.events`).

    retry: 1000

    id: 0.0.3
    event: queued
    data: {"job_id": "…", "status": "queued", "queue_position": 3, "attempts": 0}

    id: 0.1.0
    event: processing
    data: {"job_id": "…", "status": "processing", "worker": "cpu-w0", "device": "cpu", …}

    id: 0.3.0
    event: completed
    data: {the job's view, with its result}

The stream starts with the job's state as it stands (unless `Last-Event-ID`, or `?last_event_id=`,
names it or a later one), and ends after the job's end (`completed`, `error` or `cancelled`) or, at
shutdown, after a `shutdown` event. A comment every `KEEPALIVE_S` keeps idle proxies from closing it;
a client that goes away is forgotten at once.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
from fastapi import APIRouter, Query, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from scheduler.core.events import JobEvent, JobEvents, Listener
from scheduler.http.routers.docs import errors_doc
from scheduler.scheduler import Scheduler

KEEPALIVE_S = 15.0
EVENT_STREAM = "text/event-stream"
_encode = msgspec.json.Encoder().encode


def frame(event: JobEvent) -> bytes:
    """One event as SSE lines (msgspec's JSON holds no raw newline, so `data` is one line)."""
    head = f"id: {event.id}\nevent: {event.name}\n" if event.id is not None else f"event: {event.name}\n"
    return head.encode() + b"data: " + _encode(event.data) + b"\n\n"


class EventStream(Response):
    """The stream of one listener, sent over raw ASGI: it ends when the listener's stream ends, and
    the listener is forgotten as soon as the client goes away."""

    def __init__(self, listener: Listener, events: JobEvents) -> None:
        self.status_code = 200
        self.background = None
        self.listener = listener
        self.events = events
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        pump = asyncio.ensure_future(self._pump(send))
        gone = asyncio.ensure_future(_disconnect(receive))
        try:
            await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.events.forget(self.listener)
            for task in (pump, gone):
                task.cancel()
            outcomes = await asyncio.gather(pump, gone, return_exceptions=True)
        if pump.done() and outcomes[0] is None:  # the stream ended; the client is still there
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(self, send: Send) -> None:
        await send({"type": "http.response.body", "body": b"retry: 1000\n\n", "more_body": True})
        while True:
            try:
                event = await self.listener.next(KEEPALIVE_S)
            except TimeoutError:
                await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
                continue
            if event is None:
                return
            await send({"type": "http.response.body", "body": frame(event), "more_body": True})


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def router(scheduler: Scheduler) -> APIRouter:
    routes = APIRouter(tags=["jobs"])

    @routes.get(
        "/jobs/{job_id}/events",
        summary="A job's events, as Server-Sent Events",
        response_class=Response,  # no JSON: only the event stream is documented
        responses={
            200: {
                "description": "the event stream",
                "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
            },
            **errors_doc(404),
        },
    )
    async def job_events(
        job_id: str,
        request: Request,
        last_event_id: str | None = Query(None, description="as the Last-Event-ID header: resume after it"),
    ) -> Response:
        await scheduler.get_job_status(job_id)  # in a cluster: the job read afresh from Redis (or 404)
        job = scheduler.get_job(job_id)
        events = scheduler.endings.events
        listener = events.listen(job, request.headers.get("last-event-id") or last_event_id)
        return EventStream(listener, events)

    return routes
