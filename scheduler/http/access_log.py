"""The access log (`access_log = true`): one line per HTTP request, once its answer is sent (a stream
once it ends), through the daemon's log format (`workers.logs`): `method`, `path`, `query`,
`status`, `duration_ms`, `client` as fields in JSON, and a request under `/jobs/{id}` is about that
job (`job_id`; the lines written while it is served carry it too). Raw ASGI, outermost, so refused
requests (401, 413) are counted too; off, it costs nothing."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workers.logs import JOB_FIELD, job_context

log = logging.getLogger("modelsched.access")

NOT_JOB_IDS = frozenset({"batch", ""})


def job_of(path: str) -> str | None:
    """The job a path is about: `/jobs/{id}`, `/jobs/{id}/events`; None for any other."""
    if not path.startswith("/jobs/"):
        return None
    job_id = path[len("/jobs/") :].split("/", 1)[0]
    return None if job_id in NOT_JOB_IDS else job_id


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app fails before it answers

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        path: str = scope["path"]
        job_id = job_of(path)
        try:
            if job_id is None:
                await self.app(scope, receive, watched)
            else:
                with job_context(job_id):
                    await self.app(scope, receive, watched)
        finally:
            self.write(scope, path, status, time.perf_counter() - started, job_id)

    @staticmethod
    def write(scope: Scope, path: str, status: int, took_s: float, job_id: str | None) -> None:
        query = scope.get("query_string", b"").decode("latin-1")
        client = scope.get("client")
        fields: dict[str, object] = {
            "method": scope["method"],
            "path": path,
            "query": query,
            "status": status,
            "duration_ms": round(took_s * 1000, 3),
            "client": f"{client[0]}:{client[1]}" if client else None,
        }
        if job_id is not None:
            fields[JOB_FIELD] = job_id
        log.info(
            '%s "%s %s%s" %d %.1fms',
            fields["client"] or "-",
            scope["method"],
            path,
            f"?{query}" if query else "",
            status,
            took_s * 1000,
            extra=fields,
        )
