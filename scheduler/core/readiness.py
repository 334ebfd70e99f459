"""Models' readiness, and the preload that keeps chosen models loaded.

A model's state (`model_readiness`, pure): `ready` when it is loaded on at least one worker,
`loading` while a load is under way (and none has it), `failed` when its last load failed (with that
failure's message; its load is tried again after the back-off), else `unloaded`.

`Preloader.tick` (on the supervision tick): every model registered with `preload = true` is kept
loaded on at least one worker. At start, and whenever its copy is gone (the worker died, the card
was lost), it is loaded where placement puts it, as `POST /models/{m}/load` would; that copy is
*pinned*, so neither eviction nor the idle unload takes it. A failed load is tried again once the
model's load back-off has passed (`model_load_backoff_s`, doubling per failure in a row up to
300 s), for as long as the daemon runs: a preload that fails is a state (`failed`, in `/readyz` with
the reason), never a stop. A model unloaded by request stops being preloaded (and waited for by
readiness) until it is loaded again by request.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from scheduler.core.dispatch import Dispatcher
from scheduler.core.models import ModelRegistry, RegisteredModel
from scheduler.core.ports import JobExecutor
from scheduler.core.workers import Worker

log = logging.getLogger("modelsched.scheduler")


class ModelState(enum.StrEnum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class ModelReadiness:
    """One model's state; `ready_on`: the workers that have it loaded; `error`: its last failed load."""

    model: str
    state: ModelState
    ready_on: list[str]
    loading_on: list[str]
    error: str | None
    preload: bool

    @property
    def awaited(self) -> bool:
        """`/readyz` waits for it: preloaded (and not unloaded by request), and not ready."""
        return self.preload and self.state is not ModelState.READY

    def describe(self) -> str:
        """`minilm loading`, `big failed: CUDA out of memory`: what `/readyz` says of it."""
        if self.state is ModelState.FAILED and self.error:
            return f"{self.model} failed: {self.error}"
        return f"{self.model} {self.state.value}"


def model_readiness(
    registered: RegisteredModel, workers: Iterable[Worker], elsewhere: JobExecutor | None = None
) -> ModelReadiness:
    """`elsewhere`: the executor of a model whose jobs run outside the workers (the render process):
    ready when it says it is, else loading (its process starts or restarts)."""
    name = registered.spec.name
    if elsewhere is not None:
        ready = elsewhere.status().get("state") == "ready"
        state = ModelState.READY if ready else ModelState.LOADING
        return ModelReadiness(name, state, [], [], None, False)
    ready_on: list[str] = []
    loading_on: list[str] = []
    for worker in workers:
        loaded = worker.models.get(name)
        if loaded is not None:
            (loading_on if loaded.loading else ready_on).append(worker.worker_id)
    error = registered.failed_error or (registered.no_fit if registered.preload else None)
    if ready_on:
        state = ModelState.READY
    elif loading_on:
        state = ModelState.LOADING
    elif error is not None:
        state = ModelState.FAILED
    else:
        state = ModelState.UNLOADED
    preload = registered.preload and not registered.preload_paused
    return ModelReadiness(name, state, ready_on, loading_on, error, preload)


def awaited_models(registry: ModelRegistry, workers: Mapping[str, Worker]) -> list[ModelReadiness]:
    """The preloaded models not ready yet: what `/readyz` waits for."""
    return [
        readiness
        for registered in registry.models.values()
        if registered.preload
        for readiness in [model_readiness(registered, workers.values())]
        if readiness.awaited
    ]


class Preloader:
    """registry, workers: the models and the worker records; dispatcher: places and sends the loads;
    loading_allowed: False before the start and from the start of the shutdown; clock: monotonic."""

    def __init__(
        self,
        registry: ModelRegistry,
        workers: Mapping[str, Worker],
        dispatcher: Dispatcher,
        loading_allowed: Callable[[], bool],
    ) -> None:
        self.registry = registry
        self.workers = workers
        self.dispatcher = dispatcher
        self.loading_allowed = loading_allowed
        self._told: dict[str, str] = {}  # model -> the last reason logged for not loading it

    def tick(self, now: float) -> None:
        if not self.loading_allowed():
            return
        for name, registered in self.registry.models.items():
            if registered.preload and not registered.preload_paused:
                self.keep_loaded(name, registered, now)

    def keep_loaded(self, name: str, registered: RegisteredModel, now: float) -> None:
        copies = [worker for worker in self.workers.values() if name in worker.models]
        if any(worker.models[name].pinned for worker in copies):
            return
        if copies:  # a job's lazy load got there first: that copy is the one kept
            best = min(copies, key=lambda worker: (worker.models[name].loading, worker.worker_id))
            best.models[name].pinned = True
            return
        if now < registered.failed_until:
            return  # its last load failed: tried again once the back-off has passed
        placed = self.dispatcher.place_load(registered)
        if isinstance(placed, Worker):
            placed.models[name].pinned = True
            self._told.pop(name, None)
            log.info("preloading %s on %s", name, placed.worker_id)
            return
        reason = placed if isinstance(placed, str) else placed.message
        if self._told.get(name) != reason:  # said once, not every tick
            self._told[name] = reason
            level = logging.DEBUG if isinstance(placed, str) else logging.ERROR
            log.log(level, "preload of %s waits: %s", name, reason)


@dataclass(frozen=True)
class Unready:
    """Why a load balancer should send jobs elsewhere now: `status` is `not accepting` (not started,
    or shutting down), `starting` (no worker ready yet), `journal unavailable` (commits fail, or it is
    full; `reason`) or `models not ready` (`models`: each preloaded model not ready, with its state)."""

    status: str
    reason: str | None = None
    models: tuple[ModelReadiness, ...] = ()


class Readiness:
    """accepting: admission is open; any_worker_ready: the worker set's; journal_problem: why the
    journal takes no jobs (None: it does); registry, workers, executors: for the models."""

    def __init__(
        self,
        accepting: Callable[[], bool],
        any_worker_ready: Callable[[], bool],
        journal_problem: Callable[[], str | None],
        registry: ModelRegistry,
        workers: Mapping[str, Worker],
        executors: Mapping[str, JobExecutor],
    ) -> None:
        self.executors = executors
        self.accepting = accepting
        self.any_worker_ready = any_worker_ready
        self.journal_problem = journal_problem
        self.registry = registry
        self.workers = workers

    def problem(self) -> Unready | None:
        if not self.accepting():
            return Unready("not accepting")
        if not self.any_worker_ready():
            return Unready("starting")
        problem = self.journal_problem()
        if problem is not None:
            return Unready("journal unavailable", problem)
        # (no worker past the check above: a cluster's pure front, which runs no model to preload)
        awaited = awaited_models(self.registry, self.workers) if self.workers else []
        if awaited:
            return Unready(
                "models not ready", "; ".join(model.describe() for model in awaited), tuple(awaited)
            )
        return None

    def of(self, model: str) -> ModelReadiness:
        """One model's state (ModelNotFoundError for an unknown one)."""
        return self.state_of(self.registry.get(model))

    def state_of(self, registered: RegisteredModel) -> ModelReadiness:
        elsewhere = self.executors.get(registered.spec.name)
        return model_readiness(registered, self.workers.values(), elsewhere)
