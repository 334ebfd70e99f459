"""The modelsched daemon: the FastAPI app over a `Scheduler`, and the `modelsched` command line.

    modelsched serve [--preset dev|prod] [--config FILE] [--host H] [--port P]
    modelsched submit MODEL --inputs JSON [--wait] [--url URL]
    modelsched status | jobs

Bodies are decoded and encoded with msgspec (`scheduler/http_schemas.py`); the hot endpoints
(`POST /jobs`, `POST /models/{model}/infer`) read the raw body and never touch pydantic or FastAPI's
JSON encoder. Errors map to status codes in one place (`error_response`); no request gets a 500.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response

from scheduler import errors
from scheduler.scheduler import Scheduler
from workers.gc_tuning import tune_gc
from scheduler.http.hot_path import HotPath
from scheduler.http.answers import (
    MAX_WAIT_S,
    Answer,
    HttpError,
    decode,
    error_answer,
    infer_answer,
    read_body,
)
from scheduler.http.schemas import (
    ErrorBody,
    Health,
    InferRequest,
    InferResult,
    JobAccepted,
    JobList,
    JobView,
    ModelAction,
    ModelList,
    SubmitJob,
    SystemStatus,
    openapi_components,
    ref,
)
from scheduler.http.server import DrainingServer
from scheduler.core.jobs import JobRequest
from scheduler.http.metrics import SchedulerMetrics
from scheduler.http.routers.render import router as render_router
from scheduler.settings import Settings, load_settings
from workers.render.ssrf import check_url
from scheduler.http.status_page import STATUS_PAGE

log = logging.getLogger("modelsched.server")

JSON = "application/json"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
HTTP_CLOSE_GRACE_S = 3  # after the drain: how long uvicorn waits for open connections
_encoder = msgspec.json.Encoder()
_submit_decoder = msgspec.json.Decoder(SubmitJob)


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(content), status_code=status, media_type=JSON, headers=headers)


def answer_response(answer: Answer) -> Response:
    return Response(answer.body, status_code=answer.status, media_type=answer.media_type, headers=answer.headers)


def error_response(exc: Exception) -> Response:
    return answer_response(error_answer(exc))


def _body_doc(struct: type) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {JSON: {"schema": ref(struct)}}}}


def _responses(ok: int, struct: type, *errors_codes: int) -> dict[int | str, dict[str, Any]]:
    answers: dict[int | str, dict[str, Any]] = {ok: {"description": "OK", "content": {JSON: {"schema": ref(struct)}}}}
    for code in errors_codes:
        answers[code] = {"description": "error", "content": {JSON: {"schema": ref(ErrorBody)}}}
    return answers


class BearerAuth:
    """ASGI middleware: every path but /healthz wants `Authorization: Bearer <token>`."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] != "/healthz":
            given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
            if not hmac.compare_digest(given, self.expected):
                body = _encoder.encode(ErrorBody("unauthorized", "a valid 'Authorization: Bearer <token>' is required"))
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def create_app(settings_or_scheduler: Settings | Scheduler) -> FastAPI:
    """The whole daemon as one ASGI app: the FastAPI routes behind the raw-ASGI hot path and, when a
    token is set, the bearer check. Given settings, it builds its own `Scheduler`, started and stopped
    by the app's lifespan."""
    if isinstance(settings_or_scheduler, Scheduler):
        scheduler = settings_or_scheduler
    else:
        scheduler = Scheduler(settings_or_scheduler)
    settings = scheduler.settings
    body_limit = settings.max_body_bytes
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
    async def scheduler_error(request: Request, exc: Exception) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return json_response(ErrorBody("invalid_request", str(first.get("msg", "invalid request")), field), 422)

    # ---- jobs ----------------------------------------------------------------------------------

    @app.post("/jobs", status_code=202, openapi_extra=_body_doc(SubmitJob),
              responses=_responses(202, JobAccepted, 404, 413, 422, 429, 503))
    async def submit_job(request: Request) -> Response:
        body: SubmitJob = decode(await read_body(request, body_limit), _submit_decoder)
        model = body.model or body.feature
        if not model:
            raise HttpError(422, "invalid_body", "the body must name a model ('model' or 'feature')", "model")
        if model == "render" and "render" in scheduler.registry:
            url = body.inputs.get("url") if isinstance(body.inputs, dict) else body.inputs
            if isinstance(url, str):
                await check_render_url(url)
        job_id = await scheduler.schedule_job(JobRequest(
            model=model, inputs=body.inputs, priority=body.priority, timeout_s=body.timeout_s,
            idempotency_key=body.idempotency_key,
        ))
        metrics.job_submitted(model)
        return json_response(JobAccepted(job_id, scheduler.get_job_status(job_id)["status"]), 202)

    @app.get("/jobs/{job_id}", responses=_responses(200, JobView, 404, 422))
    async def get_job(job_id: str, wait: float | None = Query(None, ge=0, le=MAX_WAIT_S,
                                                              description="hold up to N s until the job ends")) -> Response:
        if wait:
            return json_response(await scheduler.wait_for(job_id, wait))
        return json_response(scheduler.get_job_status(job_id))

    @app.delete("/jobs/{job_id}", responses=_responses(200, JobView, 404, 409))
    async def cancel_job(job_id: str) -> Response:
        return json_response(await scheduler.cancel_job(job_id))

    @app.get("/jobs", responses=_responses(200, JobList, 422))
    async def list_jobs(status: str | None = Query(None, pattern="^(queued|processing|completed|error|cancelled)$"),
                        model: str | None = None, limit: int = Query(50, ge=1, le=1000)) -> Response:
        return json_response({"jobs": scheduler.list_jobs(status, model, limit)})

    # ---- models --------------------------------------------------------------------------------

    @app.post("/models/{model}/infer", openapi_extra=_body_doc(InferRequest),
              responses=_responses(200, InferResult, 404, 409, 413, 422, 429, 502, 503, 504))
    async def infer(model: str, request: Request,
                    timeout: float | None = Query(None, gt=0, le=MAX_WAIT_S,
                                                  description="seconds to wait for the result")) -> Response:
        """Answered by `HotPath` in front of this app; the route documents it (and serves it when
        the app runs without that front)."""
        body = await read_body(request, body_limit)
        raw = "application/octet-stream" in request.headers.get("accept", "")
        return answer_response(await infer_answer(scheduler, model, body, timeout, metrics.job_submitted, raw))

    async def check_render_url(url: str) -> None:
        """The SSRF guard with DNS, off the event loop: a refused URL is a 422 before it is queued."""
        verdict = await asyncio.to_thread(check_url, url, tuple(settings.render_allow_hosts))
        if not verdict.allowed:
            raise HttpError(422, "refused_url", f"the URL is refused: {verdict.reason}", "url")

    app.include_router(render_router)  # POST /render (scheduler/render_http.py)

    @app.get("/models", responses=_responses(200, ModelList))
    async def list_models() -> Response:
        return json_response({"models": scheduler.get_system_status()["models"]})

    @app.post("/models/{model}/load", responses=_responses(200, ModelAction, 404, 409))
    async def load_model(model: str) -> Response:
        return json_response(ModelAction(model, await scheduler.load_model(model)))

    @app.post("/models/{model}/unload", responses=_responses(200, ModelAction, 404))
    async def unload_model(model: str) -> Response:
        return json_response(ModelAction(model, await scheduler.unload_model(model)))

    # ---- system --------------------------------------------------------------------------------

    @app.get("/system/status", responses=_responses(200, SystemStatus))
    async def system_status() -> Response:
        return json_response(scheduler.get_system_status())

    @app.get("/healthz", responses=_responses(200, Health))
    async def healthz() -> Response:
        return json_response(Health("ok"))

    @app.get("/readyz", responses=_responses(200, Health, 503))
    async def readyz() -> Response:
        if scheduler.ready:
            return json_response(Health("ready"))
        return json_response(Health("starting" if scheduler.accepting else "not accepting"), 503)

    @app.get("/metrics", responses={200: {"description": "Prometheus text exposition format",
                                          "content": {PROMETHEUS_TEXT: {"schema": {"type": "string"}}}}})
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=PROMETHEUS_TEXT)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def status_page() -> HTMLResponse:
        return HTMLResponse(STATUS_PAGE)

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
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(openapi_components())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# ---- the command line -------------------------------------------------------------------------


def build_asgi(scheduler: Scheduler) -> Any:
    return create_app(scheduler)


def serve(settings: Settings) -> int:
    import uvicorn

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scheduler = Scheduler(settings)
    config = uvicorn.Config(
        build_asgi(scheduler), host=settings.host, port=settings.port, loop="uvloop", http="httptools",
        access_log=False, log_level=settings.log_level.lower(), lifespan="on",
        timeout_graceful_shutdown=HTTP_CLOSE_GRACE_S, server_header=False,  # the drain has had the grace
    )

    server = DrainingServer(config, scheduler)
    log.info("modelsched %s preset: http://%s:%d (models: %s)", settings.preset, settings.host, settings.port,
             ", ".join(model.name for model in settings.models))
    server.run()
    return 0 if server.started else 1


def _client_url(args: argparse.Namespace) -> str:
    return args.url or os.environ.get("MODELSCHED_URL") or "http://127.0.0.1:" + os.environ.get("MODELSCHED_PORT", "8000")


def _client(args: argparse.Namespace) -> Any:
    import httpx

    token = args.token or os.environ.get("MODELSCHED_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=_client_url(args), headers=headers, timeout=MAX_WAIT_S + 10)


def _print_answer(response: Any) -> int:
    try:
        print(json.dumps(response.json(), indent=2))
    except ValueError:
        print(response.text)
    return 0 if response.status_code < 400 else 1


def cli_submit(args: argparse.Namespace) -> int:
    try:
        inputs = json.loads(args.inputs)
    except json.JSONDecodeError as exc:
        print(f"modelsched: --inputs is not valid JSON: {exc}", file=sys.stderr)
        return 2
    with _client(args) as client:
        answer = client.post("/jobs", json={"model": args.model, "inputs": inputs, "priority": args.priority})
        if answer.status_code != 202 or not args.wait:
            return _print_answer(answer)
        job_id = answer.json()["job_id"]
        while True:
            answer = client.get(f"/jobs/{job_id}", params={"wait": 30})
            if answer.status_code != 200 or answer.json()["status"] in {"completed", "error", "cancelled"}:
                return _print_answer(answer)


def cli_get(path: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        with _client(args) as client:
            return _print_answer(client.get(path))

    return run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="modelsched", description="Schedule model-inference jobs onto GPUs.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the daemon")
    serve_parser.add_argument("--preset", default=os.environ.get("MODELSCHED_PRESET", "dev"), choices=["dev", "prod"])
    serve_parser.add_argument("--config", default=os.environ.get("MODELSCHED_CONFIG"),
                              help="a TOML file whose keys override the preset's (default $MODELSCHED_CONFIG)")
    serve_parser.add_argument("--host")
    serve_parser.add_argument("--port", type=int)
    for name, help_text in (("submit", "submit a job"), ("status", "the system status"), ("jobs", "recent jobs")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--url", help="the daemon's address (default $MODELSCHED_URL or http://127.0.0.1:8000)")
        sub.add_argument("--token", help="bearer token (default $MODELSCHED_TOKEN)")
        if name == "submit":
            sub.add_argument("model")
            sub.add_argument("--inputs", required=True, help="the job's inputs as JSON")
            sub.add_argument("--priority", default="normal", choices=["high", "normal", "low"])
            sub.add_argument("--wait", action="store_true", help="wait for the job to end and print it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "serve":
        overrides = {key: value for key, value in (("host", args.host), ("port", args.port)) if value is not None}
        try:
            settings = load_settings(args.preset, config_file=args.config, overrides=overrides)
        except errors.ConfigError as exc:
            print(f"modelsched: configuration error: {exc}", file=sys.stderr)
            return 2
        try:
            return serve(settings)
        except errors.ConfigError as exc:  # a model's adapter cannot be built, a bad device setting
            print(f"modelsched: configuration error: {exc}", file=sys.stderr)
            return 2
    if args.command == "submit":
        return cli_submit(args)
    return cli_get({"status": "/system/status", "jobs": "/jobs"}[args.command])(args)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
