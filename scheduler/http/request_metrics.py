"""The outermost raw-ASGI layer of the daemon: every HTTP request counted by its route template,
method and status code (`modelsched_http_requests_total`, `modelsched_http_request_seconds`), and
the last guard against an exception: one that escapes the app (Starlette re-raises after its 500
handler has answered) ends here, answered with a 500 problem when nothing was sent yet, never
passed on to uvicorn (which would log its traceback a second time, without the error id)."""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.http.answers import problem_answer, unexpected_problem

RequestObserver = Callable[[str, str, int, float], None]  # (route template, method, status, seconds)
RouteNamer = Callable[[Scope, int], str | None]  # (scope, status) -> route template; None: not counted here
INFER_TEMPLATE = "/models/{model}/infer"  # answered by `HotPath` before any routing
UNMATCHED = "unmatched"  # not routed: no route has this path (404), or refused before routing (401)


class RequestMetrics:
    """app: the daemon's front (bearer check, hot path, FastAPI); observe: told of each answered
    request, with its route's template (`UNMATCHED` when it was not routed). `template(scope,
    status)` names a request's route; None: another process counts it (an HTTP front's forwarded
    requests)."""

    def __init__(self, app: ASGIApp, observe: RequestObserver, template: RouteNamer | None = None) -> None:
        self.app = app
        self.observe = observe
        self.template = template or routed_template

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 0

        async def counted_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted_send)
        except Exception as exc:
            if not status:  # nothing answered it yet: answer it here
                body = unexpected_problem(exc)
                status = body.status
                await problem_answer(body)(scope, receive, send)
        finally:
            route = self.template(scope, status) if status else None  # 0: the client went away first
            if route is not None:
                self.observe(route, scope["method"], status, time.perf_counter() - began)


def routed_template(scope: Scope, status: int) -> str:
    """The template of the route that answered, as the router set it; the hot path's infer, answered
    before any routing; else `UNMATCHED`."""
    route = scope.get("route")
    if route is not None:
        return str(route.path)
    path: str = scope["path"]
    if path.startswith("/models/") and path.endswith("/infer") and path.count("/") == 3:
        return INFER_TEMPLATE
    return UNMATCHED
