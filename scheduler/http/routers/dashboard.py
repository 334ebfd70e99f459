"""The dashboard and the API docs, served offline: the page at `/` and its files under `/dashboard/`
(`scheduler.http.dashboard`), the history its charts draw (`/system/history`), the token login that
sets its session cookie (`/login`, `/logout`), and Swagger UI (`/docs`) and ReDoc (`/redoc`) with
their scripts from the `fastapi-offline` package (`/docs/assets/`): no page loads anything from
another host."""

from __future__ import annotations

import hmac
from pathlib import Path

import fastapi_offline
import msgspec
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from scheduler.core.history import HistoryColumns
from scheduler.http.answers import Answer, HttpError, decode, json_answer, problem_answer
from scheduler.http.auth import cleared_cookie, session_cookie
from scheduler.http.body import read_body
from scheduler.http.dashboard import HTML, INDEX_PAGE, PAGE_HEADERS, STATIC_DIR
from scheduler.http.problems import problem
from scheduler.http.routers.docs import answers_doc, body_doc
from scheduler.http.schemas import Login, LoginState
from scheduler.scheduler import Scheduler

DOCS_ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
LOGIN_BODY_LIMIT = 4096
_login_decoder = msgspec.json.Decoder(Login)
# The docs pages may load nothing from another host: ReDoc's bundle has an <img> of a logo on a CDN,
# which this refuses before any request is made (the page hides the broken image).
DOCS_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; connect-src 'self'"
)


def router(scheduler: Scheduler) -> APIRouter:
    routes = APIRouter()
    token = scheduler.settings.token
    history = scheduler.supervision.history

    @routes.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard() -> Answer:
        return Answer(200, INDEX_PAGE, PAGE_HEADERS, media_type=HTML)

    @routes.get("/system/history", tags=["system"], responses=answers_doc(200, HistoryColumns))
    async def system_history() -> Answer:
        """The last 15 minutes, a sample every 2 s, as columns: what the dashboard's charts draw."""
        if history is None:
            raise HttpError(404, "not_found", "this daemon keeps no history")
        return json_answer(history.columns())

    @routes.get("/login", tags=["dashboard"], responses=answers_doc(200, LoginState))
    async def login_state() -> Answer:
        """Whether the daemon wants a token (the dashboard shows its log-out button then)."""
        return json_answer(LoginState(bool(token)))

    @routes.post(
        "/login",
        tags=["dashboard"],
        openapi_extra=body_doc(Login),
        responses=answers_doc(200, LoginState, 401, 413, 422),
    )
    async def login(request: Request) -> Answer:
        """The token, once: answered with the session cookie (HttpOnly, SameSite=Strict, Path=/) that
        the dashboard's requests carry instead of a bearer header."""
        body = decode(
            await read_body(request.receive, request.scope["headers"], LOGIN_BODY_LIMIT), _login_decoder
        )
        if not token:
            return json_answer(LoginState(False))
        if not hmac.compare_digest(body.token.encode(), token.encode()):
            return problem_answer(problem(401, "unauthorized", "that is not the daemon's token", "token"))
        return json_answer(LoginState(True), headers={"Set-Cookie": session_cookie(token)})

    @routes.post("/logout", tags=["dashboard"], responses=answers_doc(200, LoginState))
    async def logout() -> Answer:
        """Ends the browser's session: the cookie is cleared."""
        return json_answer(LoginState(bool(token)), headers={"Set-Cookie": cleared_cookie()})

    @routes.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return with_policy(
            get_swagger_ui_html(
                openapi_url="/openapi.json",
                title="modelsched - Swagger UI",
                swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                swagger_css_url="/docs/assets/swagger-ui.css",
                swagger_favicon_url="/docs/assets/favicon.png",
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @routes.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return with_policy(
            get_redoc_html(
                openapi_url="/openapi.json",
                title="modelsched - ReDoc",
                redoc_js_url="/docs/assets/redoc.standalone.js",
                redoc_favicon_url="/docs/assets/favicon.png",
                with_google_fonts=False,
            )
        )

    return routes


def with_policy(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_POLICY
    return page


def mount_files(app: FastAPI) -> None:
    """The dashboard's files and the docs' scripts, as static files."""
    app.mount("/dashboard", StaticFiles(directory=STATIC_DIR), name="dashboard")
    app.mount("/docs/assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
