"""Readiness and the preloader, over the core's real collaborators and fake workers: no process."""

from __future__ import annotations

import time

from scheduler.core.models import resolve_spec
from scheduler.core.placement import GpuCapacity, LoadedModel, ModelDemand, Wait, WorkerSlot, place
from scheduler.core.readiness import ModelState, Preloader, Readiness
from tests.support.fakes import LOAD_BACKOFF_S, Core, fake, make_core, make_worker
from workers import protocol as m

KEPT = {"name": "kept", "adapter": "echo"}


def preloaded_core(*worker_ids: str) -> tuple[Core, Preloader, Readiness]:
    core = make_core([make_worker(worker_id) for worker_id in worker_ids], models=[])
    core.registry.register(*resolve_spec(KEPT), preload=True)
    core.registry.register(*resolve_spec({"name": "lazy", "adapter": "echo"}))
    preloader = Preloader(core.registry, core.workers, core.dispatcher, lambda: core.dispatcher.enabled)
    readiness = Readiness(
        lambda: core.admission.accepting, lambda: True, lambda: None, core.registry, core.workers, {}
    )
    return core, preloader, readiness


def loads_sent(core: Core) -> list[tuple[str, str]]:
    return [
        (worker_id, message.model)
        for worker_id, worker in core.workers.items()
        for message in fake(worker).messages()
        if isinstance(message, m.LoadModel)
    ]


def test_a_preloaded_model_is_loaded_once_pinned_and_readiness_waits_for_it() -> None:
    core, preloader, readiness = preloaded_core("cpu-w0", "cpu-w1")
    problem = readiness.problem()
    assert problem is not None and problem.status == "models not ready" and problem.reason == "kept unloaded"
    preloader.tick(time.monotonic())
    preloader.tick(time.monotonic())  # a load under way is not asked for twice
    assert loads_sent(core) == [("cpu-w0", "kept")]
    assert core.workers["cpu-w0"].models["kept"].pinned
    assert readiness.of("kept").state is ModelState.LOADING
    problem = readiness.problem()
    assert problem is not None and [model.model for model in problem.models] == ["kept"]
    core.say(core.workers["cpu-w0"], m.ModelLoaded("kept", 0, 0.1))
    assert readiness.of("kept").state is ModelState.READY and readiness.of("kept").ready_on == ["cpu-w0"]
    assert readiness.problem() is None
    assert readiness.of("lazy").state is ModelState.UNLOADED  # not preloaded: not waited for


def test_a_failed_preload_is_failed_then_tried_again_once_its_backoff_has_passed() -> None:
    core, preloader, readiness = preloaded_core("cpu-w0")
    worker = core.workers["cpu-w0"]
    preloader.tick(time.monotonic())
    core.say(worker, m.ModelLoadFailed("kept", "OSError: no weights", []))
    failed = readiness.of("kept")
    assert failed.state is ModelState.FAILED and failed.error == "OSError: no weights"
    problem = readiness.problem()
    assert problem is not None and problem.reason == "kept failed: OSError: no weights"
    preloader.tick(time.monotonic())  # within the back-off: no new load
    assert loads_sent(core) == [("cpu-w0", "kept")]
    preloader.tick(time.monotonic() + LOAD_BACKOFF_S + 0.1)
    assert loads_sent(core) == [("cpu-w0", "kept"), ("cpu-w0", "kept")]
    assert (
        readiness.of("kept").state is ModelState.LOADING
        and readiness.of("kept").error == "OSError: no weights"
    )
    core.say(worker, m.ModelLoaded("kept", 0, 0.1))
    assert readiness.of("kept").state is ModelState.READY and readiness.of("kept").error is None


def test_a_preloaded_copy_lost_with_its_worker_is_loaded_again_and_a_lazy_copy_is_adopted() -> None:
    core, preloader, readiness = preloaded_core("cpu-w0", "cpu-w1")
    preloader.tick(time.monotonic())
    core.say(core.workers["cpu-w0"], m.ModelLoaded("kept", 0, 0.1))
    core.workers["cpu-w0"].forget_work()  # its worker died: what it held is gone
    assert readiness.of("kept").state is ModelState.UNLOADED
    core.workers["cpu-w1"].models["kept"] = LoadedModel(0.0)  # a job's lazy load, under way there
    preloader.tick(time.monotonic())
    assert core.workers["cpu-w1"].models["kept"].pinned  # adopted: no second load
    assert loads_sent(core) == [("cpu-w0", "kept")]


def test_nothing_is_preloaded_before_the_start_or_during_the_shutdown() -> None:
    core, preloader, _ = preloaded_core("cpu-w0")
    core.dispatcher.stop()
    preloader.tick(time.monotonic())
    assert loads_sent(core) == []


def test_a_pinned_copy_is_never_evicted() -> None:
    card = [GpuCapacity(0, 1000.0)]
    kept = WorkerSlot("gpu0-w0", 0, models={"kept": LoadedModel(800.0, loading=False, pinned=True)})
    decision = place(ModelDemand("other", 800.0), [kept], card, max_models_per_worker=4, pipeline_items=8)
    assert isinstance(decision, Wait)
    kept.models["kept"].pinned = False  # an ordinary idle copy would make room
    decision = place(ModelDemand("other", 800.0), [kept], card, max_models_per_worker=4, pipeline_items=8)
    assert not isinstance(decision, Wait) and decision.evict == (("gpu0-w0", "kept"),)


def test_the_preload_setting_off_preloads_nothing() -> None:
    from scheduler.assembly import assemble
    from scheduler.settings import Settings

    for allowed in (True, False):
        parts = assemble(Settings(journal_path="", preload=allowed))
        parts.catalog.register({"name": "kept", "adapter": "echo", "preload": True})
        assert parts.registry.models["kept"].preload is allowed
