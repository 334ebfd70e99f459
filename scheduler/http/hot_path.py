"""The raw-ASGI front of the daemon: `POST /models/{model}/infer`, the per-job endpoint that carries
the load, is answered here without FastAPI's middleware and routing (measured: about three quarters
of the main process's time per request went there); every other request goes on to the FastAPI
app, which also documents this endpoint in the OpenAPI schema with the same behaviour."""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from scheduler.http.answers import RAW_MEDIA_TYPE, Answer, error_answer, infer_answer, parse_timeout
from scheduler.http.body import read_body
from scheduler.scheduler import Scheduler

RAW_ACCEPT = RAW_MEDIA_TYPE.encode()


class HotPath:
    def __init__(
        self,
        app: ASGIApp,
        scheduler: Scheduler,
        body_limit: int,
    ) -> None:
        self.app = app
        self.scheduler = scheduler
        self.body_limit = body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith("/models/") and path.endswith("/infer"):
                model = path[len("/models/") : -len("/infer")]
                if model and "/" not in model:
                    answer = await self.infer(model, scope, receive)
                    await answer(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def infer(self, model: str, scope: Scope, receive: Receive) -> Answer:
        try:
            timeout = None
            if scope["query_string"]:
                values = parse_qs(scope["query_string"].decode("latin-1")).get("timeout")
                timeout = parse_timeout(values[-1] if values else None)
            body = await read_body(receive, scope["headers"], self.body_limit)
            raw = any(name == b"accept" and RAW_ACCEPT in value for name, value in scope["headers"])
            return await infer_answer(self.scheduler, model, body, timeout, raw)
        except Exception as exc:
            return error_answer(exc)
