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

import logging
from collections.abc import Callable, MutableMapping
from typing import Any

import msgspec
from starlette.types import ASGIApp

from scheduler.core.jobs import Job, JobRequest, JobStatus
from scheduler.http.access_log import FORWARDED
from scheduler.http.answers import (
    DEFAULT_INFER_WAIT_S,
    MAX_WAIT_S,
    HttpError,
    Outcome,
    error_answer,
    outcome_of,
)
from scheduler.http.fronts import protocol as wire
from scheduler.http.fronts.link import FrontLink
from scheduler.http.schemas import InferResult, JobAccepted
from scheduler.scheduler import Scheduler

log = logging.getLogger("modelsched.fronts")

Message = MutableMapping[str, Any]


class FrontRequests:
    """`handle(link, message)` for every request message of every front."""

    def __init__(
        self,
        scheduler: Scheduler,
        app: ASGIApp,
        server: tuple[str, int],
    ) -> None:
        self.scheduler = scheduler
        self.app = app
        self.server = server

    def handle_all(self, link: FrontLink, messages: list[wire.FromFront]) -> None:
        """The messages of one frame, in order; a run of infers is admitted together (`infer_all`)."""
        infers: list[wire.Infer] = []
        for message in messages:
            if isinstance(message, wire.Infer):
                infers.append(message)
                continue
            if infers:
                self.infer_all(link, infers)
                infers = []
            self.handle(link, message)
        if infers:
            self.infer_all(link, infers)

    def handle(self, link: FrontLink, message: wire.FromFront) -> None:
        if isinstance(message, wire.Infer):
            self.infer_all(link, [message])
        elif isinstance(message, wire.Submit):
            self.submit(link, message)
        elif isinstance(message, wire.GetJob):
            self.get_job(link, message)
        elif isinstance(message, wire.Forward):
            link.forwarded[message.request_id] = link.loop.create_future()
            link.loop.create_task(self.forward(link, message))
        else:
            link.on_message(message)

    def infer_all(self, link: FrontLink, messages: list[wire.Infer]) -> None:
        """Submit each (not cancelled by the front's death: the job is journaled and goes on), then
        answer when the job has ended or the wait is over; callbacks all the way, no task per request.
        The requests whose inputs the front validated are admitted together
        (`Submissions.admit_all_waited`) and their waits begin at once; another admitted as it is
        (`Submissions.takes_validated`) is admitted alone; one with a callback URL or for a render
        goes through `schedule`."""
        submissions = self.scheduler.submissions
        validated_jobs: list[JobRequest] = []
        waiting: list[tuple[int, float]] = []  # theirs: (request id, wait)
        seen: dict[str, tuple[bool, bool]] = {}
        for message in messages:
            request_id = message.request_id
            try:
                job, validated = self.request_of(link, message.job, seen)
                wait_s = min(message.wait_s or job.timeout_s or DEFAULT_INFER_WAIT_S, MAX_WAIT_S)
                if validated:
                    validated_jobs.append(job)
                    waiting.append((request_id, wait_s))
                elif submissions.takes_validated(job):
                    link.waits.add(request_id, submissions.admit_waited(job), wait_s, self.answer_infer)
                else:
                    self.schedule_infer(link, request_id, job, wait_s)
            except Exception as exc:
                link.answer(request_id, error_answer(exc))
        if not validated_jobs:
            return
        for (request_id, wait_s), admitted in zip(
            waiting, submissions.admit_all_waited(validated_jobs, validated=True), strict=True
        ):
            try:
                if isinstance(admitted, Exception):
                    raise admitted
                link.waits.add(request_id, admitted, wait_s, self.answer_infer)
            except Exception as exc:  # each request answered, whatever another's wait raised
                link.answer(request_id, error_answer(exc))

    def schedule_infer(self, link: FrontLink, request_id: int, job: JobRequest, wait_s: float) -> None:
        """An infer whose submission has checks of its own (a callback URL, a render): `schedule`."""

        def submitted(job_id: str | None, failure: BaseException | None) -> None:
            if job_id is None:
                link.answer(request_id, error_answer(_exception(failure)))
            elif link.alive:
                self.when_ended(link, request_id, job_id, wait_s, self.answer_infer)

        self.scheduler.submissions.schedule_then(job, submitted, waited=True)

    def answer_infer(self, link: FrontLink, request_id: int, job: Job) -> None:
        link.reply(wire.Content(request_id, *self.outcome(job)))

    def answer_view(self, link: FrontLink, request_id: int, job: Job) -> None:
        link.reply(wire.Content(request_id, 200, self.scheduler.endings.view(job)))

    def submit(self, link: FrontLink, message: wire.Submit) -> None:
        request_id = message.request_id

        def submitted(job_id: str | None, failure: BaseException | None) -> None:
            if job_id is None:
                link.answer(request_id, error_answer(_exception(failure)))
                return
            try:
                shown = self.scheduler.endings.shown_status(self.scheduler.get_job(job_id)).value
                link.reply(wire.Content(request_id, 202, JobAccepted(job_id, shown)))
            except Exception as exc:
                link.answer(request_id, error_answer(exc))

        try:
            job, validated = self.request_of(link, message.job)
            self.scheduler.submissions.schedule_then(job, submitted, validated=validated)
        except Exception as exc:
            link.answer(request_id, error_answer(exc))

    def request_of(
        self, link: FrontLink, job: wire.FrontJob, seen: dict[str, tuple[bool, bool]] | None = None
    ) -> tuple[JobRequest, bool]:
        """The job as the scheduler takes it, and whether its inputs count as validated: the front ran
        the adapter this model is registered with now (not one registered again since) and the
        submission takes no path that validates again (`Submissions.takes_validated`). Those inputs
        stay msgpack (`msgspec.Raw`, sent to the worker as they came) unless the adapter counts their
        items; any others are decoded. `seen`: what was found of each model for the requests before
        (one frame's: the registry does not change within it)."""
        name = job.model_name
        found = seen.get(name) if seen is not None else None
        if found is None:
            registered = self.scheduler.registry.models.get(name)
            adapter = registered.adapter if registered is not None else None
            found = (
                adapter is not None and link.checked.get(name) is adapter,  # the front checks with it
                getattr(adapter, "items", None) is None,  # its inputs are not counted
            )
            if seen is not None:
                seen[name] = found
        checked_here, uncounted = found
        validated = job.checked and checked_here and self.scheduler.submissions.takes_validated(job)
        if validated and uncounted:
            job.inputs = job.inputs.copy()  # its own bytes: the frame they came in is not kept alive
        else:
            job.inputs = _decode(job.inputs)
        return job, validated

    def get_job(self, link: FrontLink, message: wire.GetJob) -> None:
        request_id = message.request_id
        try:
            if message.wait_s <= 0:
                link.reply(wire.Content(request_id, 200, self.scheduler.job_status(message.job_id)))
                return
            self.when_ended(
                link, request_id, message.job_id, min(message.wait_s, MAX_WAIT_S), self.answer_view
            )
        except Exception as exc:
            link.answer(request_id, error_answer(exc))

    def when_ended(
        self,
        link: FrontLink,
        request_id: int,
        job_id: str,
        wait_s: float,
        answer: Callable[[FrontLink, int, Job], None],
    ) -> None:
        """`answer(link, request_id, job)` once the job's end is durable or `wait_s` has passed
        (`Scheduler.wait_for` without a task, a future or a timer per waiting request: `Waits`);
        nothing if the front dies first. An error answer if the job is unknown, or `answer` raises."""
        try:
            link.waits.add(request_id, self.scheduler.get_job(job_id), wait_s, answer)
        except Exception as exc:
            link.answer(request_id, error_answer(exc))

    def outcome(self, job: Job) -> Outcome:
        """What an infer answers for its job as it stands: a completed job whose end is durable from
        the job itself (no view of it is built: the hot path's commonest answer); any other as
        `outcome_of` says."""
        endings = self.scheduler.endings
        if job.status is JobStatus.COMPLETED and endings.settled(job):
            return 200, InferResult(job.id, "completed", job.result), None
        return outcome_of(self.scheduler, job.id, endings.view(job))

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
                if message.refused:  # raised where the route reads its body: answered in its own shape
                    raise HttpError(413, "body_too_large", message.refused)
                return {"type": "http.request", "body": message.body, "more_body": False}
            await gone
            return {"type": "http.disconnect"}

        async def send(event: Message) -> None:
            nonlocal started, ended
            if gone.done():  # as uvicorn does: what is sent after the client went away is dropped
                return
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
            FORWARDED: True,  # the front has logged it (`access_log`), not counted it
        }


_decode = msgspec.msgpack.Decoder().decode


def _exception(failure: BaseException | None) -> Exception:
    return failure if isinstance(failure, Exception) else RuntimeError(f"the submission failed: {failure!r}")
