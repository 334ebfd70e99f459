"""The CPU stage pool, elastic between `cpu_workers_min` and `cpu_workers_max`, and idle models
unloaded after `model_idle_unload_s`.

The pool has one slot per possible CPU worker (`cpu-w0` ... up to the maximum); a slot beyond the
running ones holds a parked record (`stopped`), so placement waits for it instead of refusing CPU
models. On each supervision tick `pool_change` (pure) decides: start a parked slot while CPU jobs
wait and no running worker is free (one start at a time, so a burst does not start ten interpreters
on two cores at once), or stop one worker idle for `cpu_idle_timeout_s` while nothing waits. A
stopping worker takes no new job (it is not ready) and gives back any it held without a try counted,
so no job is lost while the pool shrinks. Every change is kept, with its reason, for the status.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgspec

from scheduler.core.dispatch import Dispatcher
from scheduler.core.models import ModelRegistry
from scheduler.core.table import JobTable
from scheduler.core.workers import Worker, WorkerSet
from scheduler.errors import WorkerState

log = logging.getLogger("modelsched.pool")

CHANGES_KEPT = 20


@dataclass(frozen=True)
class SlotView:
    """A CPU slot as the decision sees it."""

    worker_id: str
    state: WorkerState
    busy: bool  # holds jobs now
    idle_s: float  # since its last job ended (or its start)


@dataclass(frozen=True)
class Grow:
    worker_id: str
    reason: str


@dataclass(frozen=True)
class Shrink:
    worker_id: str
    reason: str


def pool_change(
    slots: list[SlotView], backlog: int, low: int, high: int, idle_timeout_s: float
) -> Grow | Shrink | None:
    """One change to the pool, or none. `backlog`: CPU jobs waiting for a worker."""
    parked = [slot for slot in slots if slot.state is WorkerState.STOPPED]
    running = [slot for slot in slots if slot.state is not WorkerState.STOPPED]
    starting = [slot for slot in running if slot.state is WorkerState.STARTING]
    if len(running) < low and parked:
        return Grow(parked[0].worker_id, f"below cpu_workers_min ({low})")
    if backlog > 0:
        free = [slot for slot in running if slot.state is WorkerState.READY and not slot.busy]
        if not free and not starting and parked and len(running) < high:
            return Grow(parked[0].worker_id, f"{backlog} CPU job(s) waiting and no CPU worker free")
        return None
    if len(running) <= low:
        return None
    idle = [
        slot
        for slot in running
        if slot.state is WorkerState.READY and not slot.busy and slot.idle_s >= idle_timeout_s
    ]
    if not idle:
        return None
    slot = max(idle, key=lambda slot: (slot.idle_s, slot.worker_id))
    return Shrink(slot.worker_id, f"idle for {slot.idle_s:.1f}s (cpu_idle_timeout_s {idle_timeout_s:g})")


def idle_models(workers: Mapping[str, Worker], idle_unload_s: float, now: float) -> list[tuple[Worker, str]]:
    """(worker, model) for every loaded model without a job for `idle_unload_s` (none when 0)."""
    if idle_unload_s <= 0:
        return []
    return [
        (worker, name)
        for worker in workers.values()
        if worker.state is WorkerState.READY
        for name, loaded in worker.models.items()
        if loaded.in_flight == 0
        and not loaded.loading
        and not loaded.pinned
        and now - loaded.last_used >= idle_unload_s
    ]


class PoolChange(msgspec.Struct):
    at: float  # time.time()
    change: str  # grow | shrink | unload
    worker: str
    reason: str


class PoolStatus(msgspec.Struct):
    """The CPU stage pool in `GET /system/status`."""

    min_workers: int
    max_workers: int
    idle_timeout_s: float
    running: int
    ready: int
    backlog: int
    changes: list[PoolChange]


class CpuPool:
    """Applies `pool_change` and `idle_models` on the supervision tick.

    worker_set: starts and stops workers; registry, table: which queued jobs need a CPU worker;
    dispatcher: sends unloads; bounds: (fewest, most) CPU workers; idle_timeout_s, idle_unload_s:
    from the settings; has_gpus: whether `auto` models run on GPU workers."""

    def __init__(
        self,
        worker_set: WorkerSet,
        registry: ModelRegistry,
        table: JobTable,
        dispatcher: Dispatcher,
        bounds: tuple[int, int],
        idle_timeout_s: float,
        idle_unload_s: float,
        has_gpus: Callable[[], bool],
    ) -> None:
        self.has_gpus = has_gpus
        self.worker_set = worker_set
        self.registry = registry
        self.table = table
        self.dispatcher = dispatcher
        self.low, self.high = bounds
        self.idle_timeout_s = idle_timeout_s
        self.idle_unload_s = idle_unload_s
        self.changes: deque[PoolChange] = deque(maxlen=CHANGES_KEPT)

    @property
    def elastic(self) -> bool:
        return self.low != self.high

    def backlog(self) -> int:
        """Queued jobs of models that run on CPU workers: `cpu` ones, and `auto` ones where there is
        no GPU."""
        queued = self.table.queued_count_by_model
        on_cpu = ("cpu", "auto") if not self.has_gpus() else ("cpu",)
        return sum(
            queued.get(name, 0) for name, model in self.registry.models.items() if model.spec.device in on_cpu
        )

    def tick(self, now: float) -> None:
        for worker, model in idle_models(self.worker_set.records, self.idle_unload_s, now):
            self.dispatcher.unload_from(worker, model)
            self._note("unload", worker.worker_id, f"{model} had no job for {self.idle_unload_s:g}s")
        if not self.elastic:
            return
        slots = [
            SlotView(worker.worker_id, worker.state, bool(worker.in_flight), now - worker.last_active)
            for worker in self.worker_set.records.values()
            if worker.gpu_index is None
        ]
        change = pool_change(slots, self.backlog(), self.low, self.high, self.idle_timeout_s)
        if isinstance(change, Grow) and not self.dispatcher.enabled:
            return  # shutting down: nothing more is sent to a worker, so none is started for it
        if isinstance(change, Grow):
            self.worker_set.unpark(change.worker_id, now)
            self._note("grow", change.worker_id, change.reason)
        elif isinstance(change, Shrink):
            self.worker_set.retire(change.worker_id)
            self._note("shrink", change.worker_id, change.reason)

    def _note(self, change: str, worker_id: str, reason: str) -> None:
        log.info("CPU pool: %s %s: %s", change, worker_id, reason)
        self.changes.append(PoolChange(time.time(), change, worker_id, reason))

    def status(self) -> PoolStatus:
        cpu = [worker for worker in self.worker_set.records.values() if worker.gpu_index is None]
        return PoolStatus(
            min_workers=self.low,
            max_workers=self.high,
            idle_timeout_s=self.idle_timeout_s,
            running=sum(1 for worker in cpu if worker.state is not WorkerState.STOPPED),
            ready=sum(1 for worker in cpu if worker.state is WorkerState.READY),
            backlog=self.backlog(),
            changes=list(self.changes),
        )
