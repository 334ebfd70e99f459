"""Placement: a pure function from (model, workers, VRAM ledger) to a decision.

In order: a worker that has the model loaded and room in its pipeline (least busy first); else,
when every holder is busy, an idle worker whose GPU has room for another copy; else a worker whose
GPU has room (it loads the model lazily); else evict the least recently used idle models where that
frees enough; else wait. A model larger than every GPU's usable memory is rejected at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

NO_FIT_MESSAGE = "No GPU has enough memory for this model"
NEEDS_GPU_MESSAGE = "This model needs a GPU and the daemon has none"


@dataclass
class LoadedModel:
    size_mb: float
    last_used: float = 0.0
    in_flight: int = 0
    loading: bool = True
    pinned: bool = False  # the copy that keeps a preloaded model loaded: never evicted nor unloaded when idle


class Slot(Protocol):
    """What placement needs to know of one worker (`scheduler.core.workers.Worker` is one)."""

    worker_id: str
    gpu_index: int | None  # None: a CPU worker
    outstanding_items: int
    models: dict[str, LoadedModel]

    @property
    def ready(self) -> bool: ...


@dataclass
class WorkerSlot:
    """A plain `Slot`, for tests and callers without a live worker."""

    worker_id: str
    gpu_index: int | None  # None: a CPU worker
    ready: bool = True
    outstanding_items: int = 0
    models: dict[str, LoadedModel] = field(default_factory=dict)


@dataclass(frozen=True)
class GpuCapacity:
    index: int
    total_mb: float
    reserve_mb: float = 0.0

    @property
    def usable_mb(self) -> float:
        return max(0.0, self.total_mb - self.reserve_mb)


@dataclass(frozen=True)
class ModelDemand:
    name: str
    vram_mb: float
    device: str = "auto"  # gpu | cpu | auto


@dataclass(frozen=True)
class Assign:
    worker_id: str
    load: bool = False  # the worker must load the model first (lazily, on this job)
    evict: tuple[tuple[str, str], ...] = ()  # (worker_id, model) to unload first


@dataclass(frozen=True)
class Wait:
    reason: str


@dataclass(frozen=True)
class Reject:
    message: str


Decision = Assign | Wait | Reject


def used_mb_by_gpu(workers: Sequence[Slot]) -> dict[int, float]:
    used: dict[int, float] = {}
    for worker in workers:
        if worker.gpu_index is None:
            continue
        used[worker.gpu_index] = used.get(worker.gpu_index, 0.0) + sum(
            loaded.size_mb for loaded in worker.models.values()
        )
    return used


def eligible_workers(demand: ModelDemand, workers: Sequence[Slot]) -> list[Slot] | Reject:
    gpu_workers = [worker for worker in workers if worker.gpu_index is not None]
    cpu_workers = [worker for worker in workers if worker.gpu_index is None]
    if demand.device == "cpu":
        return (
            cpu_workers
            if cpu_workers
            else Reject("This model runs on the CPU and the daemon has no CPU worker")
        )
    if demand.device == "gpu":
        return gpu_workers if gpu_workers else Reject(NEEDS_GPU_MESSAGE)
    return gpu_workers or cpu_workers


def refusal(demand: ModelDemand, workers: Sequence[Slot], gpus: Sequence[GpuCapacity]) -> str | None:
    """Why no worker of this pool can ever run the model (no worker of its device class, or larger
    than every card's usable memory), or None. Before any worker exists nothing is refused."""
    candidates = eligible_workers(demand, workers)
    if isinstance(candidates, Reject):
        return candidates.message
    return _too_large(demand, candidates, gpus)


def _too_large(demand: ModelDemand, candidates: Sequence[Slot], gpus: Sequence[GpuCapacity]) -> str | None:
    on_gpu = bool(candidates) and candidates[0].gpu_index is not None
    if on_gpu and not any(gpu.usable_mb >= demand.vram_mb for gpu in gpus):
        return NO_FIT_MESSAGE
    return None


def place(
    demand: ModelDemand,
    workers: Sequence[Slot],
    gpus: Sequence[GpuCapacity],
    *,
    max_models_per_worker: int,
    pipeline_items: int,
) -> Decision:
    """Where the next job of `demand` goes. `pipeline_items` caps the items in flight per worker."""
    candidates = eligible_workers(demand, workers)
    if isinstance(candidates, Reject):
        return candidates
    too_large = _too_large(demand, candidates, gpus)
    if too_large is not None:
        return Reject(too_large)
    capacity_by_gpu = {gpu.index: gpu for gpu in gpus}
    ready = [worker for worker in candidates if worker.ready]
    if not ready:
        return Wait("no worker is ready yet")

    def busy(worker: Slot) -> tuple[int, int, str]:
        # Of two equally busy workers, the one not loading a model (a load holds a worker as a job does).
        loads = sum(1 for loaded in worker.models.values() if loaded.loading)
        return (worker.outstanding_items, loads, worker.worker_id)

    holders = [worker for worker in ready if demand.name in worker.models]
    with_room = [worker for worker in holders if worker.outstanding_items < pipeline_items]
    if with_room:
        return Assign(min(with_room, key=busy).worker_id)

    used_by_gpu = used_mb_by_gpu(workers)

    def fits(worker: Slot) -> bool:
        if len(worker.models) >= max_models_per_worker:
            return False
        if worker.gpu_index is None:
            return True
        gpu = capacity_by_gpu.get(worker.gpu_index)
        return gpu is not None and gpu.usable_mb - used_by_gpu.get(worker.gpu_index, 0.0) >= demand.vram_mb

    non_holders = [worker for worker in ready if demand.name not in worker.models]
    if holders:
        # Every holder is busy: add a copy on an idle worker that has room, so no card idles.
        idle_fitting = [worker for worker in non_holders if worker.outstanding_items == 0 and fits(worker)]
        if idle_fitting:
            return Assign(min(idle_fitting, key=busy).worker_id, load=True)
        return Wait("every worker holding the model is busy")

    fitting = [worker for worker in non_holders if fits(worker)]
    if fitting:
        return Assign(min(fitting, key=busy).worker_id, load=True)

    plan = eviction_plan(demand, non_holders, workers, capacity_by_gpu, used_by_gpu, max_models_per_worker)
    if plan is not None:
        return plan
    return Wait("no GPU has room now and no idle model can be evicted to make it")


def _idle(loaded: LoadedModel) -> bool:
    return loaded.in_flight == 0 and not loaded.loading and not loaded.pinned


def eviction_plan(
    demand: ModelDemand,
    targets: Sequence[Slot],
    workers: Sequence[Slot],
    capacity_by_gpu: dict[int, GpuCapacity],
    used_by_gpu: dict[int, float],
    max_models_per_worker: int,
) -> Assign | None:
    """The target worker and least recently used idle models to unload so the model fits; fewest wins."""
    best: tuple[tuple[int, float, int, str], Assign] | None = None
    for target in targets:
        own_idle = sorted(
            (
                (loaded.last_used, target.worker_id, name, loaded.size_mb)
                for name, loaded in target.models.items()
                if _idle(loaded)
            ),
        )
        must_free_slots = len(target.models) - max_models_per_worker + 1
        if must_free_slots > len(own_idle):
            continue
        chosen = own_idle[: max(0, must_free_slots)]
        if target.gpu_index is not None:
            gpu = capacity_by_gpu.get(target.gpu_index)
            if gpu is None:
                continue
            free_mb = gpu.usable_mb - used_by_gpu.get(target.gpu_index, 0.0) + sum(item[3] for item in chosen)
            others_idle = sorted(
                (loaded.last_used, worker.worker_id, name, loaded.size_mb)
                for worker in workers
                if worker.gpu_index == target.gpu_index
                for name, loaded in worker.models.items()
                if _idle(loaded) and (loaded.last_used, worker.worker_id, name, loaded.size_mb) not in chosen
            )
            for item in others_idle:
                if free_mb >= demand.vram_mb:
                    break
                chosen.append(item)
                free_mb += item[3]
            if free_mb < demand.vram_mb:
                continue
        if not chosen:
            continue  # it fits without eviction: `place` would have assigned it already
        newest_evicted = max(item[0] for item in chosen)
        rank = (len(chosen), newest_evicted, target.outstanding_items, target.worker_id)
        decision = Assign(target.worker_id, load=True, evict=tuple((item[1], item[2]) for item in chosen))
        if best is None or rank < best[0]:
            best = (rank, decision)
    return best[1] if best else None
