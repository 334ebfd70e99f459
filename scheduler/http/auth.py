"""Token authentication as raw-ASGI middleware: when a token is set, every path but the public ones
(the probes `/healthz` and `/readyz`, which tell nothing but ready or not and why, so a load balancer
asks them without a secret; the dashboard's static files and its login) wants `Authorization: Bearer <token>` or the
dashboard's session cookie, both compared in constant time. `/` without either is answered 401 with
the login form, which `POST /login`s the token.

The cookie (`COOKIE`, set by `POST /login`: HttpOnly, SameSite=Strict, Path=/) holds an HMAC of the
token, not the token: what a browser keeps cannot be used as a bearer token, and a new token ends every
session. A request that changes something on the strength of the cookie alone must not come from
another origin (its `Origin` header, when sent, names this host)."""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from scheduler.http.answers import Answer, problem_answer
from scheduler.http.dashboard import HTML, LOGIN_PAGE, PAGE_HEADERS
from scheduler.http.problems import problem

COOKIE = "modelsched_session"
COOKIE_MAX_AGE_S = 7 * 86_400
OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # API routes answered without a token
PUBLIC_PATHS = OPEN_PATHS | {"/login", "/logout"}
PUBLIC_PREFIX = "/dashboard/"  # the page's HTML, JS, CSS and vendored libraries: no data
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

UNAUTHORIZED = problem_answer(
    problem(
        401,
        "unauthorized",
        "a valid 'Authorization: Bearer <token>' (or the dashboard's session cookie) is required",
    ),
    {"WWW-Authenticate": "Bearer"},
)
LOGIN = Answer(401, LOGIN_PAGE, {"WWW-Authenticate": "Bearer", **PAGE_HEADERS}, media_type=HTML)
CROSS_ORIGIN = problem_answer(
    problem(403, "forbidden", "a cookie-authenticated change must come from this origin"),
)


def session_value(token: str) -> str:
    """What the session cookie holds for `token`."""
    return hmac.new(token.encode(), b"modelsched dashboard session", hashlib.sha256).hexdigest()


def session_cookie(token: str) -> str:
    """The `Set-Cookie` value `POST /login` answers with."""
    return f"{COOKIE}={session_value(token)}; HttpOnly; SameSite=Strict; Path=/; Max-Age={COOKIE_MAX_AGE_S}"


def cleared_cookie() -> str:
    return f"{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX)


def header(scope: Scope, name: bytes) -> bytes:
    return next((value for key, value in scope["headers"] if key == name), b"")


def same_origin(scope: Scope) -> bool:
    """No `Origin` header (not a browser's cross-site request), or one naming the `Host` asked for."""
    origin = header(scope, b"origin")
    if not origin:
        return True
    host = header(scope, b"host")
    return bool(host) and origin.split(b"://", 1)[-1] == host


class BearerAuth:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.session = session_value(token).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not is_public(scope["path"]):
            refusal = self.refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> Answer | None:
        """None when the request may go on: the bearer header, or the session cookie (from this origin
        when it changes something)."""
        if hmac.compare_digest(header(scope, b"authorization"), self.expected):
            return None
        cookies = cookie_parser(header(scope, b"cookie").decode("latin-1"))
        if not hmac.compare_digest(cookies.get(COOKIE, "").encode("latin-1", "replace"), self.session):
            return LOGIN if scope["path"] == "/" else UNAUTHORIZED
        if scope["method"] not in SAFE_METHODS and not same_origin(scope):
            return CROSS_ORIGIN
        return None
