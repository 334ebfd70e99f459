"""The raw-ASGI front of the daemon: `POST /models/{model}/infer`, the per-job endpoint that carries
the load, is answered here without FastAPI's middleware and routing stack (measured: about three
quarters of the main process's time per request went there); every other request goes on to the
FastAPI app, which also documents this endpoint in the OpenAPI schema with the same behaviour."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from scheduler.scheduler import Scheduler
from scheduler.http.answers import (
    RAW_MEDIA_TYPE,
    Answer,
    HttpError,
    error_answer,
    infer_answer,
    parse_timeout,
)

RAW_ACCEPT = RAW_MEDIA_TYPE.encode()


class HotPath:
    def __init__(self, app: Any, scheduler: Scheduler, body_limit: int, on_submitted: Any = None) -> None:
        self.app = app
        self.scheduler = scheduler
        self.body_limit = body_limit
        self.on_submitted = on_submitted

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith("/models/") and path.endswith("/infer"):
                model = path[len("/models/"):-len("/infer")]
                if model and "/" not in model:
                    await self.respond(send, await self.infer(model, scope, receive))
                    return
        await self.app(scope, receive, send)

    async def infer(self, model: str, scope: dict[str, Any], receive: Any) -> Answer:
        try:
            timeout = None
            if scope["query_string"]:
                values = parse_qs(scope["query_string"].decode("latin-1")).get("timeout")
                timeout = parse_timeout(values[-1] if values else None)
            body = await self.read_body(scope, receive)
            raw = any(name == b"accept" and RAW_ACCEPT in value for name, value in scope["headers"])
            return await infer_answer(self.scheduler, model, body, timeout, self.on_submitted, raw)
        except Exception as exc:
            return error_answer(exc)

    async def read_body(self, scope: dict[str, Any], receive: Any) -> bytes:
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.body_limit:
                raise HttpError(413, "body_too_large", f"the body is {value.decode()} bytes; the limit is "
                                f"{self.body_limit}")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.body_limit:
                raise HttpError(413, "body_too_large", f"the body exceeds the limit of {self.body_limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    async def respond(send: Any, answer: Answer) -> None:
        headers = [(b"content-type", answer.media_type.encode()), (b"content-length", str(len(answer.body)).encode())]
        if answer.headers:
            headers += [(name.lower().encode(), value.encode()) for name, value in answer.headers.items()]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})
