"""Bearer-token authentication as raw-ASGI middleware: every path but the probes (`/healthz`,
`/readyz`: a load balancer or an orchestrator asks them without a secret, and they tell nothing
but ready or not, and why) wants `Authorization: Bearer <token>` (compared in constant time) when a
token is set."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from scheduler.http.answers import problem_answer
from scheduler.http.problems import problem

OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # answered without a token
UNAUTHORIZED = problem_answer(
    problem(401, "unauthorized", "a valid 'Authorization: Bearer <token>' is required"),
    {"WWW-Authenticate": "Bearer"},
)


class BearerAuth:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
            if not hmac.compare_digest(given, self.expected):
                await UNAUTHORIZED(scope, receive, send)
                return
        await self.app(scope, receive, send)
