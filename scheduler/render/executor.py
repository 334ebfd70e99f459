"""Render jobs in the `Scheduler` (a mixin): the `render` model's jobs live in the job table like
any other (so `get_job`, `wait_for`, `cancel_job` and the journal work for them), but the dispatch
pass hands them to the render process (`scheduler.render.service`) instead of a model worker.
The hooks `Scheduler` calls: `_render_setup` (init), `_render_start`/`_render_stop`,
`_render_admission_check` (submission), `_render_dispatch` (dispatch), `_render_status` (status)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scheduler.errors import QueueFullError
from scheduler.core.jobs import Job, JobStatus
from scheduler.render.service import RenderService

if TYPE_CHECKING:
    from scheduler.core.models import ModelRegistry
    from scheduler.settings import Settings
    from scheduler.core.table import JobTable

log = logging.getLogger("modelsched.render")

RENDER_MODEL = "render"
RENDER_WORKER = "render"


class RenderJobs:
    settings: Settings
    table: JobTable
    registry: ModelRegistry
    render: RenderService | None
    loop: Any
    on_job_end: list[Any]

    def _render_setup(self) -> None:
        """Register the `render` model when rendering is on (called from `__init__`)."""
        self.render = None
        if self.settings.render_enabled:
            self.register_model({  # type: ignore[attr-defined]
                "name": RENDER_MODEL, "adapter": "scheduler.render.model:RenderAdapter",
                "options": {"allow_hosts": list(self.settings.render_allow_hosts)},
            })

    def _render_start(self) -> None:
        if self.settings.render_enabled:
            self.render = RenderService(self.settings, self._on_render_outcome, self.settings.max_attempts)
            self.render.start(self.loop)
            if self._render_job_ended not in self.on_job_end:
                self.on_job_end.append(self._render_job_ended)

    def _render_job_ended(self, job: Job) -> None:
        """A render job that ended here (cancelled, timed out) stops in the render process too."""
        if job.model == RENDER_MODEL and self.render is not None and job.status is not JobStatus.COMPLETED:
            self.render.cancel(job.id)

    async def _render_stop(self) -> None:
        if self.render is not None:
            await self.render.stop()

    def _render_admission_check(self, model: str) -> None:
        """429 past `render_queue_max` renders waiting or running."""
        if model != RENDER_MODEL or self.render is None:
            return
        waiting = self.table.queued_count_by_model.get(RENDER_MODEL, 0) + self.render.load
        if waiting >= self.settings.render_queue_max:
            raise QueueFullError(
                f"the render queue is full ({self.settings.render_queue_max} renders waiting or running); retry later"
            )

    def _render_dispatch(self) -> None:
        """Hand every queued render job (suspects included) to the render process."""
        if self.render is None:
            return
        jobs = [job for job in self.table.waiting_suspects() if job.model == RENDER_MODEL] if self.table.suspects else []
        count = self.table.queued_count_by_model.get(RENDER_MODEL, 0)
        if count:
            jobs += self.table.pop_queued(RENDER_MODEL, count)
        for job in jobs:
            if job.status is not JobStatus.QUEUED:
                continue
            self.table.mark_processing(job, RENDER_WORKER, "chromium")
            self.render.submit(job.id, job.inputs)

    def _on_render_outcome(self, job_id: str, result: dict[str, Any] | None, error: str | None,
                           error_kind: str | None) -> None:
        job = self.table.get(job_id)
        if job is None or job.status is not JobStatus.PROCESSING or job.worker_id != RENDER_WORKER:
            return  # cancelled or timed out meanwhile
        if error is None:
            self._finish(job, JobStatus.COMPLETED, result=result)  # type: ignore[attr-defined]
        else:
            kind = "input" if error_kind == "refused" else error_kind
            self._finish(job, JobStatus.ERROR, error=error, error_kind=kind)  # type: ignore[attr-defined]

    def _render_status(self) -> dict[str, Any] | None:
        return self.render.status() if self.render is not None else None
