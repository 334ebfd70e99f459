"""`RenderExecutor`: render jobs in the scheduler. The `render` model's jobs live in the job table
like any other, and the dispatch pass hands them here instead of to a model worker; this hands
them to the render process (`RenderService`) and ends them with its outcomes. It implements the
core's `JobExecutor`."""

from __future__ import annotations

import logging
from typing import Any

from scheduler.core.endings import JobEndings
from scheduler.core.jobs import Job, JobStatus
from scheduler.core.table import JobTable
from scheduler.errors import ErrorKind, InvalidInputError
from scheduler.render.guard import refuse_unless_allowed
from scheduler.render.model import RENDER_MODEL
from scheduler.render.service import RenderService
from scheduler.settings import Settings
from workers.render.request import UrlRefused, parse_render_request

log = logging.getLogger("modelsched.render")

RENDER_WORKER = "render"  # the `worker` a render job shows
RENDER_DEVICE = "chromium"


class RenderExecutor:
    """table, endings: the scheduler's jobs and the one place that ends them; settings: the render
    settings. Owns the `RenderService`."""

    model = RENDER_MODEL

    def __init__(self, table: JobTable, endings: JobEndings, settings: Settings) -> None:
        self.table = table
        self.endings = endings
        self.allow_hosts = tuple(settings.render_allow_hosts)
        self.service = RenderService(settings, self._on_outcome)
        endings.observers.append(self._job_ended)

    async def precheck(self, inputs: Any) -> None:
        """The SSRF guard with DNS, before the job is admitted (admission's `validate` answers a bad shape)."""
        try:
            request = parse_render_request(inputs, self.allow_hosts)
        except UrlRefused as exc:
            raise InvalidInputError(str(exc), field="url") from None
        except ValueError:
            return
        await refuse_unless_allowed(request.url, self.allow_hosts)

    def check_room(self) -> None:
        """QueueFullError past `render_queue_max` renders waiting or running."""
        self.service.check_room(waiting=self.table.queued_count_by_model.get(RENDER_MODEL, 0))

    def dispatch(self) -> None:
        """Hand every queued render job (suspects included) to the render process."""
        jobs = (
            [job for job in self.table.waiting_suspects() if job.model == RENDER_MODEL]
            if self.table.suspects
            else []
        )
        count = self.table.queued_count_by_model.get(RENDER_MODEL, 0)
        if count:
            jobs += self.table.pop_queued(RENDER_MODEL, count)
        for job in jobs:
            if job.status is not JobStatus.QUEUED:
                continue
            try:
                request = parse_render_request(job.inputs, self.allow_hosts)
            except ValueError as exc:  # journaled before a change of the allowlist: refused now
                self.endings.finish(job, JobStatus.ERROR, error=str(exc), error_kind=ErrorKind.INPUT)
                continue
            self.table.mark_processing(job, RENDER_WORKER, RENDER_DEVICE)
            self.service.submit(job.id, request)

    def _on_outcome(
        self, job_id: str, result: dict[str, Any] | None, error: str | None, kind: ErrorKind | None
    ) -> None:
        job = self.table.get(job_id)
        if job is None or job.status is not JobStatus.PROCESSING or job.worker_id != RENDER_WORKER:
            return  # cancelled or timed out meanwhile
        if error is None:
            self.endings.finish(job, JobStatus.COMPLETED, result=result)
        else:
            self.endings.finish(
                job,
                JobStatus.ERROR,
                error=error,
                error_kind=ErrorKind.INPUT if kind == ErrorKind.REFUSED else kind,
            )

    def _job_ended(self, job: Job) -> None:
        """A render job that ended here (cancelled, timed out) stops in the render process too."""
        if job.model == RENDER_MODEL and job.status is not JobStatus.COMPLETED:
            self.service.cancel(job.id)

    def status(self) -> dict[str, Any]:
        return self.service.status()
