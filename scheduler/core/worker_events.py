"""`WorkerEvents`: what the model workers tell the main process, and what their deaths mean for jobs.

Messages (`workers.protocol`): `Ready` and `Heartbeat` feed supervision; `JobResults` end jobs
(results of jobs cancelled or timed out meanwhile are dropped); `ModelLoaded` puts the measured size
in the ledger (on a real card); `ModelLoadFailed` fails the jobs of that model for a back-off that
doubles per consecutive failure.

A death. Every job in flight on a worker that dies has its try counted (before it ran) and goes back
to the head of its queue as a suspect; a suspect runs alone (`scheduler.core.dispatch`), so a job
that merely shared a worker with a poison job is blamed once at most, and only a job that really
kills workers reaches `max_attempts` and fails as a poison job. A worker restarted on purpose (a
timeout) or stopped gives its jobs back without a try counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from scheduler.core.costs import CostLedger
from scheduler.core.devices import MIB, Inventory
from scheduler.core.dispatch import Dispatcher
from scheduler.core.endings import JobEndings
from scheduler.core.jobs import Job, JobStatus
from scheduler.core.models import ModelRegistry
from scheduler.core.ports import JobJournal
from scheduler.core.table import JobTable
from scheduler.core.workers import Worker
from scheduler.errors import ErrorKind, WorkerState
from scheduler.pool.supervisor import is_poison
from workers import protocol as m
from workers.backoff import Backoff
from workers.logs import about_job

log = logging.getLogger("modelsched.scheduler")

BatchObserver = Callable[[str, str, int, float], None]  # (worker id, model, batch size, run seconds)
LoadObserver = Callable[[str, str, float | None], None]  # (model, worker id, seconds it took; None: failed)
RequeueObserver = Callable[[Job, bool], None]  # (the job queued again, whether its worker died)


class WorkerEvents:
    """registry, table, endings: models and jobs; dispatcher: scheduled after anything that frees
    room; inventory: which cards are real; journal: keeps a job's try count across restarts;
    max_attempts: deaths a job may cause; load_backoff: how long a model whose load failed is left alone."""

    def __init__(
        self,
        registry: ModelRegistry,
        table: JobTable,
        endings: JobEndings,
        dispatcher: Dispatcher,
        inventory: Inventory,
        journal: JobJournal | None,
        *,
        max_attempts: int,
        load_backoff: Backoff,
        costs: CostLedger,
    ) -> None:
        self.registry = registry
        self.table = table
        self.endings = endings
        self.dispatcher = dispatcher
        self.inventory = inventory
        self.journal = journal
        self.max_attempts = max_attempts
        self.load_backoff = load_backoff
        self.costs = costs
        self.load_failures: dict[str, int] = {}  # model -> consecutive failed loads
        self.batch_observers: list[BatchObserver] = []
        self.load_observers: list[LoadObserver] = []  # each model load a worker reports
        self.requeue_observers: list[RequeueObserver] = []  # each job a gone worker gives back

    # ---- messages ------------------------------------------------------------------------------

    def on_message(self, worker: Worker, data: bytes) -> None:
        message = m.decode_from_worker(data)
        if isinstance(message, m.JobResults):
            self._on_results(worker, message)
        elif isinstance(message, m.Heartbeat):
            worker.watch.heartbeat(time.monotonic())
            worker.last_heartbeat_wall = message.sent_at
            worker.rss_bytes = message.rss_bytes
        elif isinstance(message, m.Ready):
            worker.watch.ready(time.monotonic())
            worker.cuda_visible_devices = message.cuda_visible_devices
            log.info("worker %s ready (pid %s, %s)", worker.worker_id, message.pid, worker.device_label)
            self.dispatcher.schedule()
        elif isinstance(message, m.ModelLoaded):
            self._on_model_loaded(worker, message)
        elif isinstance(message, m.ModelLoadFailed):
            self._on_model_load_failed(worker, message)
        elif isinstance(message, m.ModelUnloaded):
            self.dispatcher.schedule()

    def _on_results(self, worker: Worker, message: m.JobResults) -> None:
        loaded = worker.models.get(message.model)
        now = worker.last_active = time.monotonic()
        finish = self.endings.finish
        gpu_name = self.inventory.name_of(worker.gpu_index)
        rate = self.costs.rate(gpu_name)
        spent_s = 0.0
        # The worker's counts first, for the whole message; then the ends (their observers see them).
        in_flight, jobs_get, worker_id = worker.in_flight, self.table.jobs.get, worker.worker_id
        returned = []
        items_back = 0
        for outcome in message.outcomes:
            items = in_flight.pop(outcome.job_id, None)
            if items is None:
                continue
            items_back += items
            spent_s += outcome.compute_s  # paid for, even if the result is dropped
            returned.append(outcome)
        worker.outstanding_items -= items_back
        worker.jobs_done += len(returned)
        if loaded is not None and returned:
            loaded.in_flight -= len(returned)
            loaded.last_used = now
        for outcome in returned:
            job = jobs_get(outcome.job_id)
            if job is None or job.status is not JobStatus.PROCESSING or job.worker_id != worker_id:
                continue  # cancelled or timed out meanwhile: the result is dropped
            job.compute_s += outcome.compute_s
            job.cost_usd += rate * outcome.compute_s
            if outcome.error is None:
                finish(job, JobStatus.COMPLETED, result=outcome.output)
            else:
                finish(job, JobStatus.ERROR, error=outcome.error, error_kind=outcome.error_kind)
        self.costs.charge(message.model, gpu_name, spent_s)  # once per message, for the totals
        if message.progress and self.endings.events.listening:
            for progress in message.progress:
                job = self.table.jobs.get(progress.job_id)
                if job is not None and job.status is JobStatus.PROCESSING:
                    self.endings.events.progress(job, progress.done, progress.total)
        worker.release_solo_if_done()
        for observer in self.batch_observers:
            observer(worker.worker_id, message.model, message.batch_size, message.run_s)
        self.dispatcher.schedule()

    def _on_model_loaded(self, worker: Worker, message: m.ModelLoaded) -> None:
        loaded = worker.models.get(message.model)
        worker.measured_bytes[message.model] = message.memory_bytes
        if loaded is not None:
            loaded.loading = False
            if message.memory_bytes > 0 and self.inventory.is_real(worker.gpu_index):
                loaded.size_mb = message.memory_bytes / MIB  # measured replaces declared on a real card
        registered = self.registry.models.get(message.model)
        if registered is not None:
            registered.failed_error = None
        self.load_failures.pop(message.model, None)
        for observer in self.load_observers:
            observer(message.model, worker.worker_id, message.load_s)

    def _on_model_load_failed(self, worker: Worker, message: m.ModelLoadFailed) -> None:
        worker.models.pop(message.model, None)
        failures = self.load_failures[message.model] = self.load_failures.get(message.model, 0) + 1
        backoff_s = self.load_backoff.delay(failures)
        registered = self.registry.models.get(message.model)
        if registered is not None:
            registered.failed_error = message.error
            registered.failed_until = time.monotonic() + backoff_s
        log.error(
            "model %s failed to load on %s (%d time(s) in a row); its jobs fail for %.1fs: %s",
            message.model,
            worker.worker_id,
            failures,
            backoff_s,
            message.error,
        )
        for observer in self.load_observers:
            observer(message.model, worker.worker_id, None)
        error = f"model {message.model!r} failed to load: {message.error}"
        for job_id in message.job_ids:
            items = worker.in_flight.pop(job_id, None)
            if items is not None:
                worker.outstanding_items -= items
            job = self.table.get(job_id)
            if job is not None and job.status is JobStatus.PROCESSING and job.worker_id == worker.worker_id:
                self.endings.finish(job, JobStatus.ERROR, error=error, error_kind=ErrorKind.LOAD)
        worker.release_solo_if_done()
        # Jobs of this model still waiting (suspects too) fail with the same error: no load is tried
        # again before the back-off ends.
        queued = self.table.pop_queued(message.model, self.table.queued_count_by_model.get(message.model, 0))
        suspects = [job for job in self.table.waiting_suspects() if job.model == message.model]
        self.endings.fail(queued + suspects, error, ErrorKind.LOAD)
        self.dispatcher.schedule()

    # ---- deaths --------------------------------------------------------------------------------

    def on_exit(self, worker: Worker) -> None:
        """The worker's process (or thread) is gone: it is dead, and the jobs it held go back."""
        if worker.state is WorkerState.DEAD:
            return
        exit_code = worker.channel.exit_code if worker.channel is not None else None
        was = worker.watch.exited(time.monotonic(), exit_code, held_work=bool(worker.in_flight))
        if was is not WorkerState.STOPPING:
            log.warning(
                "worker %s (pid %s) exited (%s) while %s; %d job(s) in flight%s",
                worker.worker_id,
                worker.pid,
                "exit code not known yet" if exit_code is None else f"exit code {exit_code}",
                was,
                len(worker.in_flight),
                f" (job {worker.solo_job_id} alone)" if worker.solo_job_id else "",
            )
        self.requeue_in_flight(worker, penalize=not worker.no_penalty and was is not WorkerState.STOPPING)
        if worker.channel is not None:
            worker.channel.close()
        self.dispatcher.schedule()

    def requeue_in_flight(self, worker: Worker, penalize: bool) -> None:
        """The worker is gone: its jobs go back to the queue, in their order (as suspects when `penalize`)."""
        back: list[Job] = []
        for job_id in worker.forget_work():
            job = self.table.get(job_id)
            if job is None or job.status is not JobStatus.PROCESSING or job.worker_id != worker.worker_id:
                continue
            if penalize and is_poison(job.attempts, self.max_attempts):
                log.warning(
                    "poison job: %d worker process(es) died while running it; it fails",
                    job.attempts,
                    extra=about_job(job.id),
                )
                self.endings.finish(
                    job,
                    JobStatus.ERROR,
                    error_kind=ErrorKind.POISON,
                    error=f"poison job: {job.attempts} worker process(es) died while running it, the last "
                    f"time with no other job on the worker (max_attempts {self.max_attempts})",
                )
                continue
            back.append(job)
        self.table.requeue_all(back, penalize)
        for observer in self.requeue_observers:
            for job in back:
                observer(job, penalize)
        if penalize and self.journal is not None:
            for job in back:
                if job.parent_id is None:  # a stage's job is not journaled (its pipeline job is)
                    self.journal.record_attempts(job)
