"""`ClusterSubmissions`: `Submissions` for a daemon in a cluster. The same API (`schedule`,
`schedule_many`, `infer`, `infer_many`), with the job recorded in Redis by the front instead of the
local table and journal, and the wait done on the cluster (any host may run it)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from scheduler.cluster.front import ClusterFront
from scheduler.core.admission import Admission
from scheduler.core.endings import JobEndings, result_of
from scheduler.core.jobs import JobRequest
from scheduler.core.ports import JobExecutor, JobJournal
from scheduler.errors import SchedulerError
from scheduler.submissions import Submissions, schedule_in_task
from scheduler.webhooks import Webhooks


class ClusterSubmissions(Submissions):
    def __init__(
        self,
        front: ClusterFront,
        admission: Admission,
        endings: JobEndings,
        journal: JobJournal | None,
        executors: Mapping[str, JobExecutor],
        webhooks: Webhooks,
    ) -> None:
        super().__init__(admission, endings, journal, executors, webhooks)
        self.front = front

    async def schedule(self, request: JobRequest, *, waited: bool = False) -> str:
        await self.precheck(request)
        return await self.front.schedule(request, held=waited)

    def schedule_then(
        self,
        request: JobRequest,
        done: Callable[[str | None, BaseException | None], None],
        *,
        waited: bool = False,
        validated: bool = False,
    ) -> None:
        """A submission told through `done(id, None)` or `done(None, error)` (the HTTP fronts' path):
        in a cluster always through Redis (`schedule`), never the local table and journal."""
        schedule_in_task(self.schedule(request, waited=waited), done)

    def takes_validated(self, request: JobRequest) -> bool:
        return False  # every submission goes through `schedule`, which validates

    def submit(self, request: JobRequest) -> str:
        raise SchedulerError("in cluster mode a submission waits for Redis: use schedule_job")

    async def schedule_many(self, requests: list[JobRequest]) -> list[str | SchedulerError]:
        checked: list[JobRequest] = []
        refused: dict[int, SchedulerError] = {}
        for index, request in enumerate(requests):
            try:
                await self.precheck(request)
                checked.append(request)
            except SchedulerError as exc:
                refused[index] = exc
        outcomes = iter(await self.front.schedule_many(checked))
        return [refused[index] if index in refused else next(outcomes) for index in range(len(requests))]

    async def infer(self, model: str, inputs: Any, *, timeout: float | None = None, **options: Any) -> Any:
        job_id = await self.schedule(JobRequest(model=model, inputs=inputs, **options), waited=True)
        return result_of(await self.front.wait(job_id, timeout), self.admission.accepting)

    async def infer_many(
        self, model: str, inputs: Iterable[Any], *, timeout: float | None = None, **options: Any
    ) -> list[Any]:
        ids = await self.schedule_many([JobRequest(model=model, inputs=one, **options) for one in inputs])
        if refused := next((one for one in ids if isinstance(one, SchedulerError)), None):
            raise refused
        results = []
        for job_id in ids:
            results.append(result_of(await self.front.wait(str(job_id), timeout), self.admission.accepting))
        return results
