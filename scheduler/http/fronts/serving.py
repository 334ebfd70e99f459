"""`FrontRequests`: what the main process does with the requests its fronts hand it.

The hot routes arrive decoded and checked (`Infer`, `Submit`, `GetJob`): the main process calls the
scheduler and answers with a `Content` (a value; the front encodes it) or, for a failure, the bytes of
`error_answer`, the one error encoding. Any other request (`Forward`) runs through the daemon's own
ASGI app, in this process, with its body already read: what the app sends goes back as `Start` and
`Chunk` messages as it is sent (so Server-Sent Events stream), and a `Disconnect` from the front, or
the front's death, is the app's `http.disconnect`. Every route, present or future, works behind a
front without glue of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from starlette.types import ASGIApp

from scheduler.core.jobs import JobRequest
from scheduler.http.answers import DEFAULT_INFER_WAIT_S, error_answer, result_outcome
from scheduler.http.fronts import protocol as wire
from scheduler.http.fronts.link import FrontLink
from scheduler.http.schemas import JobAccepted
from scheduler.scheduler import Scheduler

log = logging.getLogger("modelsched.fronts")

Message = MutableMapping[str, Any]


class FrontRequests:
    """`handle(link, message)` for every request message of every front."""

    def __init__(
        self,
        scheduler: Scheduler,
        app: ASGIApp,
        on_submitted: Callable[[str], None],
        server: tuple[str, int],
    ) -> None:
        self.scheduler = scheduler
        self.app = app
        self.on_submitted = on_submitted
        self.server = server

    def handle(self, link: FrontLink, message: wire.FromFront) -> None:
        if isinstance(message, wire.Infer):
            self._start(link, message.request_id, self.infer(link, message))
        elif isinstance(message, wire.Submit):
            self._start(link, message.request_id, self.submit(link, message))
        elif isinstance(message, wire.GetJob):
            if message.wait_s > 0:
                self._start(link, message.request_id, self.wait_for(link, message))
            else:
                try:
                    link.reply(
                        wire.Content(message.request_id, 200, self.scheduler.job_status(message.job_id))
                    )
                except Exception as exc:
                    link.answer(message.request_id, error_answer(exc))
        elif isinstance(message, wire.Forward):
            link.forwarded[message.request_id] = link.loop.create_future()
            link.loop.create_task(self.forward(link, message))
        else:
            link.on_message(message)

    def _start(self, link: FrontLink, request_id: int, work: Any) -> None:
        link.waits[request_id] = link.loop.create_task(work)

    async def _submitted(self, link: FrontLink, request_id: int, job: JobRequest) -> str | None:
        """The job's id once it is durable; None when its front died meanwhile (the job goes on).
        The submission is not cancelled by the front's death: a cancelled commit would leave a client
        with no answer and a job it may submit again."""
        link.waits.pop(request_id, None)  # not cancelled while it is being submitted
        job_id = await self.scheduler.schedule_job(job)
        if not link.alive:
            return None
        task = asyncio.current_task()
        if task is not None:
            link.waits[request_id] = task
        return job_id

    async def infer(self, link: FrontLink, message: wire.Infer) -> None:
        request_id = message.request_id
        try:
            job_id = await self._submitted(link, request_id, message.job)
            self.on_submitted(message.job.model_name)
            if job_id is None:
                return
            status, body, headers = await result_outcome(
                self.scheduler, job_id, message.wait_s or message.job.timeout_s or DEFAULT_INFER_WAIT_S
            )
            link.reply(wire.Content(request_id, status, body, headers))
        except asyncio.CancelledError:
            raise  # the front is gone; the job goes on
        except Exception as exc:
            link.answer(request_id, error_answer(exc))
        finally:
            link.waits.pop(request_id, None)

    async def submit(self, link: FrontLink, message: wire.Submit) -> None:
        request_id = message.request_id
        try:
            job_id = await self._submitted(link, request_id, message.job)
            self.on_submitted(message.job.model_name or message.job.pipeline)
            if job_id is None:
                return
            shown = self.scheduler.endings.shown_status(self.scheduler.get_job(job_id)).value
            link.reply(wire.Content(request_id, 202, JobAccepted(job_id, shown)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            link.answer(request_id, error_answer(exc))
        finally:
            link.waits.pop(request_id, None)

    async def wait_for(self, link: FrontLink, message: wire.GetJob) -> None:
        try:
            view = await self.scheduler.wait_for(message.job_id, message.wait_s)
            link.reply(wire.Content(message.request_id, 200, view))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            link.answer(message.request_id, error_answer(exc))
        finally:
            link.waits.pop(message.request_id, None)

    async def forward(self, link: FrontLink, message: wire.Forward) -> None:
        """Run the daemon's ASGI app over the forwarded request; its response goes back as it is sent."""
        request_id = message.request_id
        gone = link.forwarded[request_id]
        body_given = False
        started = ended = False

        async def receive() -> Message:
            nonlocal body_given
            if not body_given:
                body_given = True
                return {"type": "http.request", "body": message.body, "more_body": False}
            await gone
            return {"type": "http.disconnect"}

        async def send(event: Message) -> None:
            nonlocal started, ended
            if gone.done():
                raise OSError("the client went away")
            if event["type"] == "http.response.start":
                started = True
                headers = [(bytes(name), bytes(value)) for name, value in event.get("headers", ())]
                link.reply(wire.Start(request_id, event["status"], headers))
            elif event["type"] == "http.response.body":
                more = bool(event.get("more_body", False))
                ended = not more
                link.reply(wire.Chunk(request_id, bytes(event.get("body", b"")), more))

        try:
            await self.app(self.scope(message), receive, send)
        except Exception as exc:
            if not started:
                link.answer(request_id, error_answer(exc))
                started = ended = True
            elif not gone.done():
                log.warning(
                    "%s: %s %s failed while answering: %r", link.name, message.method, message.path, exc
                )
        finally:
            if not ended:  # the front must not wait for an end that will not come
                if not started:
                    link.reply(wire.Start(request_id, 503, [(b"content-length", b"0")]))
                link.reply(wire.Chunk(request_id, b"", False))
            link.forwarded.pop(request_id, None)

    def scope(self, message: wire.Forward) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": message.method,
            "scheme": "http",
            "path": message.path,
            "raw_path": message.raw_path,
            "query_string": message.query,
            "root_path": "",
            "headers": message.headers,
            "client": message.client,
            "server": self.server,
            "state": {},
        }
