"""`FrontApp`: the raw-ASGI app a front process serves. It does the HTTP work (the bearer check, the
body and its limit, JSON decoding and the schema checks, the encoding of the answer) and hands the
main process a request as one message (`protocol`): the hot routes decoded, every other request
forwarded as it came.

    POST /models/{model}/infer   -> Infer    (InferRequest checked here; JSON or raw float32 made here)
    POST /jobs                   -> Submit   (SubmitJob checked here, as the FastAPI route checks it)
    GET  /jobs/{id}[?wait=N]     -> GetJob
    anything else                -> Forward  (answered by the main process's app, streamed back)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import msgspec
from starlette.types import Receive, Scope, Send

from scheduler.core.models import input_validator
from scheduler.errors import InvalidInputError
from scheduler.http.access_log import FORWARDED
from scheduler.http.answers import (
    MAX_WAIT_S,
    RAW_MEDIA_TYPE,
    Answer,
    HttpError,
    decode,
    encoder,
    error_answer,
    infer_decoder,
    outcome_answer,
    parse_timeout,
)
from scheduler.http.auth import BearerAuth
from scheduler.http.body import read_body
from scheduler.http.fronts import protocol as wire
from scheduler.http.problems import PROBLEM_JSON
from scheduler.http.request_metrics import INFER_TEMPLATE, UNMATCHED, RequestMetrics
from scheduler.http.request_tally import RequestTally
from scheduler.http.routers.jobs import job_request, submit_decoder
from scheduler.http.schemas import InferResult

log = logging.getLogger("modelsched.fronts")

RAW_ACCEPT = RAW_MEDIA_TYPE.encode()
Outbox = Callable[[wire.FromFront], None]


class FrontApp:
    """`send_to_main(message)` queues a message for the main process; `deliver(message)` is called
    with each answer it sends back."""

    def __init__(self, config: wire.FrontConfig, send_to_main: Outbox) -> None:
        self.send_to_main = send_to_main
        self.body_limit = config.max_body_bytes
        self.pending: dict[int, asyncio.Queue[wire.ToFront | None]] = {}
        self.request_ids = itertools.count(1)
        self.answered = 0
        self.tally = RequestTally()  # the requests answered here (not the forwarded ones)
        # the main app's own check (the bearer token or the session cookie), inside the request count
        checked = BearerAuth(self.serve, config.token) if config.token else self.serve
        self.measured = RequestMetrics(checked, self.tally.observe, front_template)
        self.validators = input_validators(config.checks)

    def deliver(self, message: wire.ToFront) -> None:
        if isinstance(message, wire.Stop):
            return
        queue = self.pending.get(message.request_id)
        if queue is not None:
            queue.put_nowait(message)

    def refuse(self, message: wire.FromFront, exc: Exception) -> None:
        """A request that could not be sent to the main process (a number past 64 bits, say): 422."""
        queue = self.pending.get(getattr(message, "request_id", -1))
        if queue is not None:
            answer = error_answer(HttpError(422, "invalid_body", f"the body cannot be carried: {exc}"))
            queue.put_nowait(wire.Start(0, answer.status_code, answer.raw_headers))
            queue.put_nowait(wire.Chunk(0, bytes(answer.body), False))

    def fail_all(self) -> None:
        """The main process is gone: every request still waiting ends (503)."""
        for queue in self.pending.values():
            queue.put_nowait(None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await self.measured(scope, receive, send)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            answer = await self.route(scope, receive, send)
        except Exception as exc:
            answer = error_answer(exc)
        if answer is not None:
            await answer(scope, receive, send)
        self.answered += 1

    async def route(self, scope: Scope, receive: Receive, send: Send) -> Answer | None:
        method: str = scope["method"]
        path: str = scope["path"]
        if method == "POST" and path.startswith("/models/") and path.endswith("/infer"):
            model = path[len("/models/") : -len("/infer")]
            if model and "/" not in model:
                return await self.infer(model, scope, receive)
        elif method == "POST" and path == "/jobs":
            body = decode(await read_body(receive, scope["headers"], self.body_limit), submit_decoder)
            request = job_request(body)
            job = wire.FrontJob(
                **msgspec.structs.asdict(request), checked=self.check(request.model, request.inputs)
            )
            request_id = next(self.request_ids)
            return await self.ask(request_id, wire.Submit(request_id, job))
        elif method == "GET" and path.startswith("/jobs/"):
            job_id = path[len("/jobs/") :]
            if job_id and "/" not in job_id:
                request_id = next(self.request_ids)
                return await self.ask(request_id, wire.GetJob(request_id, job_id, wait_of(scope)))
        await self.forward(scope, receive, send)
        return None

    async def infer(self, model: str, scope: Scope, receive: Receive) -> Answer:
        timeout = None
        if scope["query_string"]:
            values = parse_qs(scope["query_string"].decode("latin-1")).get("timeout")
            timeout = parse_timeout(values[-1] if values else None)
        body = decode(await read_body(receive, scope["headers"], self.body_limit), infer_decoder)
        raw = any(name == b"accept" and RAW_ACCEPT in value for name, value in scope["headers"])
        request_id = next(self.request_ids)
        job = wire.FrontJob(
            model=model,
            inputs=body.inputs,
            priority=body.priority,
            timeout_s=body.timeout_s,
            checked=self.check(model, body.inputs),
        )
        return await self.ask(request_id, wire.Infer(request_id, job, timeout or 0.0), raw)

    def check(self, model: str, inputs: Any) -> bool:
        """Run the model's adapter `validate` here when this front has it (True); an invalid input is
        refused (422) as the main process refuses it."""
        validate = self.validators.get(model)
        if validate is None:
            return False
        try:
            validate(inputs)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(str(exc)) from None
        return True

    async def ask(self, request_id: int, message: wire.FromFront, raw: bool = False) -> Answer:
        """Send one request and wait for its one answer."""
        queue: asyncio.Queue[wire.ToFront | None] = asyncio.Queue()
        self.pending[request_id] = queue
        try:
            self.send_to_main(message)
            first = await queue.get()
            if isinstance(first, wire.Content):
                if first.status >= 400:  # a problem body, made in the main process
                    return Answer(first.status, encoder.encode(first.content), first.headers, PROBLEM_JSON)
                if raw:
                    return outcome_answer(
                        first.status, msgspec.convert(first.content, InferResult), first.headers, True
                    )
                return Answer(first.status, encoder.encode(first.content), first.headers)
            if isinstance(first, wire.Start):
                rest = await queue.get()
                answer = Answer(first.status, rest.body if isinstance(rest, wire.Chunk) else b"")
                answer.raw_headers = first.headers
                return answer
            raise HttpError(503, "not_accepting", "the main process is gone", headers={"Retry-After": "1"})
        finally:
            del self.pending[request_id]

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Any other request, answered by the main process: its response is sent on as it comes."""
        refused = ""
        try:
            body = await read_body(receive, scope["headers"], self.body_limit)
        except HttpError as exc:  # too large: the route answers 413 in its own error shape (/v1, /v2)
            if exc.status != 413:
                raise
            body, refused = b"", exc.detail
        scope[FORWARDED] = True
        request_id = next(self.request_ids)
        queue: asyncio.Queue[wire.ToFront | None] = asyncio.Queue()
        self.pending[request_id] = queue
        client = scope.get("client")
        self.send_to_main(
            wire.Forward(
                request_id,
                scope["method"],
                scope["path"],
                scope.get("raw_path") or scope["path"].encode(),
                scope["query_string"],
                [(bytes(name), bytes(value)) for name, value in scope["headers"]],
                body,
                (client[0], client[1]) if client else None,
                refused,
            )
        )
        watcher = asyncio.ensure_future(_client_gone(receive, queue))
        started = False
        try:
            while True:
                message = await queue.get()
                if message is None:  # the client went away, or the main process did
                    self.send_to_main(wire.Disconnect(request_id))
                    if not started:
                        await error_answer(
                            HttpError(
                                503,
                                "not_accepting",
                                "no answer from the main process",
                                headers={"Retry-After": "1"},
                            )
                        )(scope, receive, send)
                    return
                if isinstance(message, wire.Start):
                    started = True
                    await send(
                        {"type": "http.response.start", "status": message.status, "headers": message.headers}
                    )
                elif isinstance(message, wire.Chunk):
                    await send(
                        {"type": "http.response.body", "body": message.body, "more_body": message.more}
                    )
                    if not message.more:
                        return
        finally:
            watcher.cancel()
            del self.pending[request_id]


def input_validators(checks: list[wire.InputCheck]) -> dict[str, Callable[[Any], None]]:
    """The `validate` of each model's own adapter, built here from its class and options; a model whose
    adapter cannot be built here is validated by the main process (a warning says why)."""
    validators: dict[str, Callable[[Any], None]] = {}
    for check in checks:
        try:
            validators[check.model] = input_validator(check.adapter, check.options)
        except Exception as exc:
            log.warning("the inputs of %s are validated by the main process: %r", check.model, exc)
    return validators


async def _client_gone(receive: Receive, queue: asyncio.Queue[Any]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    queue.put_nowait(None)


def wait_of(scope: Scope) -> float:
    """`?wait=N` of `GET /jobs/{id}`: 0 when absent; 422 unless a number in [0, MAX_WAIT_S]."""
    if not scope["query_string"]:
        return 0.0
    values = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True).get("wait")
    if not values:
        return 0.0
    try:
        wait = float(values[-1])
    except ValueError:
        raise HttpError(422, "invalid_request", "wait must be a number of seconds", "wait") from None
    if not 0 <= wait <= MAX_WAIT_S:
        raise HttpError(422, "invalid_request", f"wait must be in [0, {MAX_WAIT_S:g}]", "wait")
    return wait


def front_template(scope: Scope, status: int) -> str | None:
    """The route template of a request a front answers itself, as `RequestMetrics` names it in the
    main process: an infer path is always its template; any other refused before routing (401) is
    `unmatched`. None for a forwarded request: the main process counts it."""
    if scope.get(FORWARDED):
        return None
    path: str = scope["path"]
    if path.startswith("/models/") and path.endswith("/infer") and path.count("/") == 3:
        return INFER_TEMPLATE
    if status == 401:
        return UNMATCHED
    if path == "/jobs":
        return "/jobs"
    if path.startswith("/jobs/") and path.count("/") == 2:
        return "/jobs/{job_id}"
    return UNMATCHED
