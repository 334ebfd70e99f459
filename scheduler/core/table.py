"""The job table: every job by id, the queued ones per model and priority, counts per state.

Only the main process's event loop touches it. Queues hold job records and skip ones that left
`queued` meanwhile (cancelled, timed out), so removal from the middle of a queue is O(1).
Queued jobs with `attempts > 0` (they were on a worker that died) wait apart, in `suspects`: the
scheduler runs each of them alone (see `scheduler.core.dispatch` and `scheduler.core.worker_events`).
A pipeline's job waits in no queue (its stages' jobs do); a stage's job, once ended, is dropped at
once (`discard`): the pipeline job keeps what it did. `count_by_status` counts the jobs clients see:
not the stages' jobs nor `run_cpu`'s (`parent_id` set), so a pipeline job counts once.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from typing import Any

from scheduler.core.jobs import NEXT_STATUSES, Job, JobStatus, Priority
from workers.logs import about_job

log = logging.getLogger("modelsched.jobs")

TRIM_CHUNK = 1024


class JobTable:
    def __init__(self, max_finished_in_memory: int = 100_000) -> None:
        self.jobs: dict[str, Job] = {}
        self.queued_by_model: dict[str, list[deque[Job]]] = {}
        self.count_by_status: dict[JobStatus, int] = {status: 0 for status in JobStatus}
        self.queued_count_by_model: dict[str, int] = {}
        self.finished_order: deque[str] = deque()
        self.max_finished_in_memory = max_finished_in_memory
        # trimmed in chunks of a 64th of the bound (at most TRIM_CHUNK): a loop over many, not a call per end
        self._trim_past = max_finished_in_memory + min(TRIM_CHUNK, max_finished_in_memory // 64)
        self.by_idempotency_key: dict[str, str] = {}
        self.suspects: deque[Job] = deque()
        self._seq = itertools.count()

    # ---- adding and reading --------------------------------------------------------------------

    def add(self, job: Job) -> None:
        job.seq = next(self._seq)
        replaced = self.jobs.get(job.id)
        if replaced is not None and replaced is not job and replaced.ended and replaced.parent_id is None:
            # The same job again (a cluster host that dropped it has claimed it back): the ended record
            # is counted no more, and its place in `finished_order` is skipped (`_trim`).
            self.count_by_status[replaced.status] -= 1
        self.jobs[job.id] = job
        if job.parent_id is None:
            self.count_by_status[job.status] += 1
        if job.idempotency_key:
            self.by_idempotency_key[job.idempotency_key] = job.id
        if job.status is JobStatus.QUEUED:
            self._push(job, front=False)
        elif job.ended and job.parent_id is None:
            self.finished_order.append(job.id)

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def queued_models(self) -> list[str]:
        """Models with queued jobs, the one whose head job should run first first."""
        heads: list[tuple[int, int, str]] = []
        for model, count in self.queued_count_by_model.items():
            if count <= 0:
                continue
            head = self.peek(model)
            if head is not None:
                heads.append((int(head.priority), head.seq, model))
        heads.sort()
        return [model for _, _, model in heads]

    def peek(self, model: str) -> Job | None:
        for lane in self.queued_by_model.get(model, ()):
            while lane and lane[0].status is not JobStatus.QUEUED:
                lane.popleft()
            if lane:
                return lane[0]
        return None

    def waiting_suspects(self) -> list[Job]:
        """Queued suspects, in the order they were queued again (each once)."""
        seen: set[str] = set()
        kept: deque[Job] = deque()
        for job in self.suspects:
            if job.status is JobStatus.QUEUED and job.attempts > 0 and job.id not in seen:
                seen.add(job.id)
                kept.append(job)
        self.suspects = kept
        return list(kept)

    def pop_queued(self, model: str, limit: int) -> list[Job]:
        """Up to `limit` queued jobs of `model`, high priority first, FIFO within a priority."""
        taken: list[Job] = []
        for lane in self.queued_by_model.get(model, ()):
            while lane and len(taken) < limit:
                job = lane.popleft()
                if job.status is JobStatus.QUEUED:
                    taken.append(job)
            if len(taken) >= limit:
                break
        return taken

    # ---- state changes -------------------------------------------------------------------------

    def _set_status(self, job: Job, status: JobStatus) -> None:
        current = job.status
        if status not in NEXT_STATUSES[current]:  # `can_transition`, without a call (once per change)
            raise ValueError(f"job {job.id}: {current.value} -> {status.value} is not allowed")
        if current is JobStatus.QUEUED and job.pipeline is None:
            self.queued_count_by_model[job.model] -= 1
        if job.parent_id is None:
            counts = self.count_by_status
            counts[current] -= 1
            counts[status] += 1
        job.status = status

    def _push(self, job: Job, front: bool) -> None:
        if job.pipeline is not None:
            return  # its stages wait in their models' queues
        self.queued_count_by_model[job.model] = self.queued_count_by_model.get(job.model, 0) + 1
        if job.attempts > 0:
            self.suspects.append(job)
            return
        lanes = self.queued_by_model.get(job.model)
        if lanes is None:
            lanes = self.queued_by_model[job.model] = [deque() for _ in Priority]
        lane = lanes[int(job.priority)]
        if front:
            lane.appendleft(job)
        else:
            lane.append(job)

    def mark_processing(self, job: Job, worker_id: str, device: str) -> None:
        self._set_status(job, JobStatus.PROCESSING)
        job.attempts += 1  # raised before the run, so a crash mid-run still counts as a try
        job.worker_id = worker_id
        job.device = device
        job.started_at = time.time()

    def requeue_all(self, jobs: list[Job], penalize: bool) -> None:
        """`requeue` each, keeping their order: the earliest submitted ends up first."""
        for job in sorted(
            jobs, key=lambda job: job.seq, reverse=not penalize
        ):  # the head is filled from behind
            self.requeue(job, penalize)

    def requeue(self, job: Job, penalize: bool = True) -> None:
        """Back to the head of its queue (its worker died or was restarted); to `suspects` when it
        keeps a try (`penalize`: its worker died while it ran)."""
        self._set_status(job, JobStatus.QUEUED)
        if not penalize:
            job.attempts = max(0, job.attempts - 1)
        job.worker_id = None
        job.device = None
        job.started_at = None
        self._push(job, front=True)

    def finish(
        self,
        job: Job,
        status: JobStatus,
        result: Any = None,
        error: str | None = None,
        error_kind: str | None = None,
    ) -> None:
        started = job.started_at
        self._set_status(job, status)
        job.ended_at = time.time()
        job.result = result
        job.error = error
        job.error_kind = error_kind
        job.inputs = None  # the inputs are no longer needed; keep memory flat
        if job.parent_id is not None:
            return  # a stage's job: `discard`ed once its pipeline job has taken its result
        finished_order = self.finished_order
        finished_order.append(job.id)
        if log.isEnabledFor(logging.DEBUG):
            took = job.ended_at - (started or job.created_at)
            log.debug(
                "job %s after %.3fs%s",
                status.value,
                took,
                f": {error}" if error else "",
                extra=about_job(job.id),
            )
        if len(finished_order) > self._trim_past:
            self._trim()

    def mark_started(self, job: Job) -> None:
        """A pipeline's job: its first stage has begun to run."""
        self._set_status(job, JobStatus.PROCESSING)
        job.started_at = time.time()

    def discard(self, job: Job) -> None:
        """Forget an ended stage's job (its pipeline job holds what it did)."""
        self.jobs.pop(job.id, None)  # never counted in `count_by_status`

    def _trim(self) -> None:
        finished_order, jobs, counts = self.finished_order, self.jobs, self.count_by_status
        for _ in range(len(finished_order) - self.max_finished_in_memory):
            old = jobs.get(finished_order.popleft())
            if old is not None and old.ended:  # not ended: its id was added again since (`add`)
                del jobs[old.id]
                counts[old.status] -= 1
                if old.idempotency_key:
                    self.by_idempotency_key.pop(old.idempotency_key, None)

    def forget_older_than(self, cutoff_wall: float) -> int:
        """Drop ended jobs that ended before `cutoff_wall` (result retention)."""
        dropped = 0
        while self.finished_order:
            job = self.jobs.get(self.finished_order[0])
            if job is not None and job.ended_at is not None and job.ended_at >= cutoff_wall:
                break
            self.finished_order.popleft()
            if job is not None and job.ended:  # not ended: its id was added again since (`add`)
                del self.jobs[job.id]
                self.count_by_status[job.status] -= 1
                if job.idempotency_key:
                    self.by_idempotency_key.pop(job.idempotency_key, None)
                dropped += 1
        return dropped

    def counts(self) -> dict[str, int]:
        return {status.value: count for status, count in self.count_by_status.items()}

    def recent(self, status: str | None = None, model: str | None = None, limit: int = 50) -> list[Job]:
        found: list[Job] = []
        for job in sorted(self.jobs.values(), key=lambda job: job.seq, reverse=True):
            if job.parent_id is not None:
                continue  # a stage's job: shown within its pipeline job
            if status and job.status.value != status:
                continue
            if model and job.model != model:
                continue
            found.append(job)
            if len(found) >= limit:
                break
        return found
