"""`ModelCatalog`: the models as the running scheduler serves them. Registering one (live workers
hear of it at once, an older version of it is unloaded), which models no worker of this daemon can
ever run (`no_fit`: their submissions get `NoFitError`), and explicit loads and unloads."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from adapters.call import CPU_CALL_MODEL
from scheduler.core.devices import Inventory
from scheduler.core.dispatch import Dispatcher, demand_of
from scheduler.core.models import ModelRegistry, model_config, resolve_spec
from scheduler.core.placement import refusal
from scheduler.core.workers import Worker
from scheduler.errors import NoFitError, SchedulerError, WorkerState
from scheduler.settings import ModelConfig
from workers import protocol as m

log = logging.getLogger("modelsched.scheduler")


class ModelCatalog:
    """registry: the models; workers: the live worker records by id; dispatcher: places explicit
    loads and sends unloads; inventory: the cards; run_elsewhere: models whose jobs run outside the
    workers (never refused here); vram_scale: what each declared `vram_mb` counts for in the ledger;
    allow_preload: the `preload` setting (False: no model is preloaded)."""

    def __init__(
        self,
        registry: ModelRegistry,
        workers: Mapping[str, Worker],
        dispatcher: Dispatcher,
        inventory: Inventory,
        run_elsewhere: Mapping[str, Any],
        vram_scale: float,
        allow_preload: bool = True,
    ) -> None:
        self.allow_preload = allow_preload
        self.registry = registry
        self.workers = workers
        self.dispatcher = dispatcher
        self.inventory = inventory
        self.run_elsewhere = run_elsewhere
        self.vram_scale = vram_scale

    def register(self, config: ModelConfig | dict[str, Any]) -> m.ModelSpec:
        """Register (or replace) a model; live workers learn of it at once, and unload the old one."""
        config = model_config(config)
        spec, adapter = resolve_spec(config, self.vram_scale)
        replacing = spec.name in self.registry
        preload = config.preload and self.allow_preload and spec.name not in self.run_elsewhere
        self.registry.register(spec, adapter, preload=preload)
        for worker in self.workers.values():
            if worker.state in (WorkerState.STARTING, WorkerState.READY):
                worker.send(m.RegisterModel(spec))
                if replacing and spec.name in worker.models:
                    self.dispatcher.unload_from(worker, spec.name)
        if self.workers:
            self.refresh_fit()
        return spec

    def needs_cpu_workers(self, has_gpus: bool) -> bool:
        """CPU workers are started when there is no GPU, or a model (a CPU stage) runs on `cpu`; the
        `cpu-call` model of `run_cpu` alone does not start them (an elastic pool parks slots for it)."""
        return not has_gpus or any(
            model.spec.device == "cpu" and name != CPU_CALL_MODEL
            for name, model in self.registry.models.items()
        )

    def refresh_fit(self) -> None:
        """Which models no worker can ever run: at start (the workers are known) and on each registration."""
        workers = list(self.workers.values())
        capacities = self.inventory.capacities()
        for name, registered in self.registry.models.items():
            if name in self.run_elsewhere:
                registered.no_fit = None
            else:
                registered.no_fit = refusal(demand_of(registered), workers, capacities)

    def load(self, name: str) -> list[str]:
        """Load `name` now, where placement would put its first job; returns the worker ids."""
        registered = self.registry.get(name)
        self._on_workers(name)
        if registered.preload_paused:
            registered.preload_paused = False
            log.info("model %s is loaded by request: its preload is back on", name)
        holders = [worker_id for worker_id, worker in self.workers.items() if name in worker.models]
        if holders:
            return holders
        placed = self.dispatcher.place_load(registered)
        if isinstance(placed, Worker):
            return [placed.worker_id]
        if isinstance(placed, str):
            raise SchedulerError(f"cannot load {name} now: {placed}")
        raise NoFitError(f"model {name!r} cannot run here: {placed.message}")

    def _on_workers(self, name: str) -> None:
        if name in self.run_elsewhere:
            raise SchedulerError(
                f"model {name!r} does not run on the model workers: there is nothing to load"
            )

    def unload(self, name: str) -> list[str]:
        """Unload `name` from every worker where it is idle; returns those workers' ids."""
        registered = self.registry.get(name)
        self._on_workers(name)
        if registered.preload and not registered.preload_paused:
            registered.preload_paused = True
            log.warning(
                "model %s is preloaded and unloaded by request: it stays unloaded, and readiness no "
                "longer waits for it, until it is loaded again",
                name,
            )
        unloaded = []
        for worker in self.workers.values():
            loaded = worker.models.get(name)
            if loaded is not None and loaded.in_flight == 0:
                self.dispatcher.unload_from(worker, name)
                unloaded.append(worker.worker_id)
        return unloaded
