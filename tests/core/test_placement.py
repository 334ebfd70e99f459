"""Placement on simulated cards: a pure function, tested without processes."""

from __future__ import annotations

from scheduler.core.placement import (
    NEEDS_GPU_MESSAGE,
    NO_FIT_MESSAGE,
    Assign,
    GpuCapacity,
    LoadedModel,
    ModelDemand,
    Reject,
    Wait,
    WorkerSlot,
    place,
)

GIB_MB = 1024


def two_cards(first_gib: int = 24, second_gib: int = 24) -> list[GpuCapacity]:
    return [GpuCapacity(0, first_gib * GIB_MB), GpuCapacity(1, second_gib * GIB_MB)]


def loaded(size_mb: float, last_used: float = 0.0, in_flight: int = 0) -> LoadedModel:
    return LoadedModel(size_mb=size_mb, last_used=last_used, in_flight=in_flight, loading=False)


def decide(
    demand: ModelDemand,
    workers: list[WorkerSlot],
    gpus: list[GpuCapacity],
    max_models: int = 4,
    pipeline_items: int = 8,
):
    return place(demand, workers, gpus, max_models_per_worker=max_models, pipeline_items=pipeline_items)


def test_affinity_prefers_the_least_busy_worker_holding_the_model() -> None:
    workers = [
        WorkerSlot("gpu0-w0", 0, outstanding_items=5, models={"bert": loaded(2000)}),
        WorkerSlot("gpu1-w0", 1, outstanding_items=1, models={"bert": loaded(2000)}),
        WorkerSlot("gpu1-w1", 1, outstanding_items=0),
    ]
    assert decide(ModelDemand("bert", 2000), workers, two_cards()) == Assign("gpu1-w0")


def test_affinity_beats_an_empty_worker_while_the_holder_has_room() -> None:
    workers = [
        WorkerSlot("gpu0-w0", 0, outstanding_items=3, models={"bert": loaded(2000)}),
        WorkerSlot("gpu1-w0", 1, outstanding_items=0),
    ]
    assert decide(ModelDemand("bert", 2000), workers, two_cards()) == Assign("gpu0-w0")


def test_a_busy_holder_gets_a_copy_on_an_idle_card_with_room() -> None:
    workers = [
        WorkerSlot("gpu0-w0", 0, outstanding_items=8, models={"bert": loaded(2000)}),
        WorkerSlot("gpu1-w0", 1, outstanding_items=0),
    ]
    assert decide(ModelDemand("bert", 2000), workers, two_cards()) == Assign("gpu1-w0", load=True)


def test_a_busy_holder_and_no_idle_room_means_wait() -> None:
    workers = [
        WorkerSlot("gpu0-w0", 0, outstanding_items=8, models={"bert": loaded(2000)}),
        WorkerSlot("gpu1-w0", 1, outstanding_items=2, models={"big": loaded(23 * GIB_MB)}),
    ]
    assert isinstance(decide(ModelDemand("bert", 2000), workers, two_cards()), Wait)


def test_fit_picks_the_card_with_room() -> None:
    workers = [
        WorkerSlot("gpu0-w0", 0, models={"llm": loaded(20 * GIB_MB)}),
        WorkerSlot("gpu1-w0", 1, outstanding_items=3),
    ]
    assert decide(ModelDemand("vit", 8 * GIB_MB), workers, two_cards()) == Assign("gpu1-w0", load=True)


def test_reserve_counts_against_the_card() -> None:
    gpus = [GpuCapacity(0, 16 * GIB_MB, reserve_mb=2 * GIB_MB)]
    workers = [WorkerSlot("gpu0-w0", 0)]
    assert decide(ModelDemand("m", 15 * GIB_MB), workers, gpus) == Reject(NO_FIT_MESSAGE)
    assert decide(ModelDemand("m", 14 * GIB_MB), workers, gpus) == Assign("gpu0-w0", load=True)


def test_lru_eviction_unloads_the_least_recently_used_idle_model() -> None:
    workers = [
        WorkerSlot(
            "gpu0-w0",
            0,
            models={
                "old": loaded(10 * GIB_MB, last_used=1.0),
                "recent": loaded(10 * GIB_MB, last_used=5.0),
            },
        ),
    ]
    gpus = [GpuCapacity(0, 24 * GIB_MB)]
    decision = decide(ModelDemand("new", 8 * GIB_MB), workers, gpus)
    assert decision == Assign("gpu0-w0", load=True, evict=(("gpu0-w0", "old"),))


def test_eviction_never_touches_a_busy_model() -> None:
    workers = [
        WorkerSlot(
            "gpu0-w0",
            0,
            outstanding_items=1,
            models={
                "old_but_busy": loaded(10 * GIB_MB, last_used=1.0, in_flight=1),
                "recent": loaded(10 * GIB_MB, last_used=5.0),
            },
        ),
    ]
    gpus = [GpuCapacity(0, 24 * GIB_MB)]
    decision = decide(ModelDemand("new", 8 * GIB_MB), workers, gpus)
    assert decision == Assign("gpu0-w0", load=True, evict=(("gpu0-w0", "recent"),))


def test_eviction_may_take_several_models_and_other_workers_on_the_card() -> None:
    workers = [
        WorkerSlot("gpu0-w0", 0, models={"a": loaded(8 * GIB_MB, last_used=1.0)}),
        WorkerSlot(
            "gpu0-w1", 0, models={"b": loaded(8 * GIB_MB, last_used=2.0), "c": loaded(8 * GIB_MB, 3.0)}
        ),
    ]
    gpus = [GpuCapacity(0, 24 * GIB_MB)]
    decision = decide(ModelDemand("new", 16 * GIB_MB), workers, gpus)
    assert isinstance(decision, Assign)
    assert decision.load
    assert set(decision.evict) == {("gpu0-w0", "a"), ("gpu0-w1", "b")}


def test_nothing_idle_to_evict_means_wait() -> None:
    workers = [WorkerSlot("gpu0-w0", 0, models={"a": loaded(20 * GIB_MB, in_flight=2)}, outstanding_items=2)]
    assert isinstance(decide(ModelDemand("new", 8 * GIB_MB), workers, [GpuCapacity(0, 24 * GIB_MB)]), Wait)


def test_a_model_larger_than_every_card_is_rejected_at_once() -> None:
    workers = [WorkerSlot("gpu0-w0", 0), WorkerSlot("gpu1-w0", 1)]
    decision = decide(ModelDemand("huge", 30 * GIB_MB), workers, two_cards())
    assert decision == Reject(NO_FIT_MESSAGE)
    assert NO_FIT_MESSAGE == "No GPU has enough memory for this model"


def test_max_models_per_worker_is_honoured_by_evicting_its_own_lru_model() -> None:
    workers = [
        WorkerSlot(
            "gpu0-w0",
            0,
            models={
                "a": loaded(100, last_used=3.0),
                "b": loaded(100, last_used=1.0),
            },
        )
    ]
    gpus = [GpuCapacity(0, 80 * GIB_MB)]
    decision = decide(ModelDemand("c", 100), workers, gpus, max_models=2)
    assert decision == Assign("gpu0-w0", load=True, evict=(("gpu0-w0", "b"),))


def test_max_models_per_worker_prefers_a_worker_below_the_cap() -> None:
    workers = [
        WorkerSlot("gpu0-w0", 0, models={"a": loaded(100), "b": loaded(100)}),
        WorkerSlot("gpu0-w1", 0, outstanding_items=4, models={"x": loaded(100)}),
    ]
    decision = decide(ModelDemand("c", 100), workers, [GpuCapacity(0, 80 * GIB_MB)], max_models=2)
    assert decision == Assign("gpu0-w1", load=True)


def test_max_models_per_worker_with_every_model_busy_waits() -> None:
    workers = [
        WorkerSlot(
            "gpu0-w0",
            0,
            outstanding_items=2,
            models={
                "a": loaded(100, in_flight=1),
                "b": loaded(100, in_flight=1),
            },
        )
    ]
    assert isinstance(
        decide(ModelDemand("c", 100), workers, [GpuCapacity(0, 80 * GIB_MB)], max_models=2), Wait
    )


def test_two_gpus_filled_unevenly_by_models_of_different_sizes() -> None:
    """An 80 GiB and a 16 GiB card take models of 40, 30, 12, 9 and 3 GiB: each lands where it fits,
    no card is ever over-committed, and the next large model evicts the least recently used."""
    gpus = [GpuCapacity(0, 80 * GIB_MB), GpuCapacity(1, 16 * GIB_MB)]
    workers = [WorkerSlot("gpu0-w0", 0), WorkerSlot("gpu1-w0", 1)]
    clock = 0.0
    placed: dict[str, str] = {}
    for name, size_gib in [("m40", 40), ("m30", 30), ("m12", 12), ("m9", 9), ("m3", 3)]:
        clock += 1.0
        decision = decide(ModelDemand(name, size_gib * GIB_MB), workers, gpus)
        assert isinstance(decision, Assign), (name, decision)
        assert decision.evict == ()
        target = next(worker for worker in workers if worker.worker_id == decision.worker_id)
        target.models[name] = loaded(size_gib * GIB_MB, last_used=clock)
        placed[name] = decision.worker_id
        for gpu in gpus:
            used = sum(m.size_mb for w in workers if w.gpu_index == gpu.index for m in w.models.values())
            assert used <= gpu.usable_mb
    # 40 + 30 fill most of the 80 GiB card; 12 only fits the small card; 9 goes back to the big one
    # (10 GiB left there); 3 then fits only on the small card.
    assert placed == {"m40": "gpu0-w0", "m30": "gpu0-w0", "m12": "gpu1-w0", "m9": "gpu0-w0", "m3": "gpu1-w0"}
    # A 14 GiB model fits nowhere now: evicting the least recently used idle model of the big card
    # (one model) beats evicting both of the small card's.
    decision = decide(ModelDemand("m14", 14 * GIB_MB), workers, gpus, max_models=8)
    assert decision == Assign("gpu0-w0", load=True, evict=(("gpu0-w0", "m40"),))


def test_cpu_models_go_to_cpu_workers_and_gpu_models_need_a_gpu() -> None:
    workers = [WorkerSlot("gpu0-w0", 0), WorkerSlot("cpu-w0", None)]
    assert decide(ModelDemand("tok", 0, device="cpu"), workers, two_cards()) == Assign("cpu-w0", load=True)
    assert decide(ModelDemand("net", 100, device="gpu"), workers, two_cards()) == Assign("gpu0-w0", load=True)
    assert decide(ModelDemand("net", 100, device="auto"), workers, two_cards()) == Assign(
        "gpu0-w0", load=True
    )
    cpu_only = [WorkerSlot("cpu-w0", None)]
    assert decide(ModelDemand("net", 100, device="gpu"), cpu_only, []) == Reject(NEEDS_GPU_MESSAGE)
    assert decide(ModelDemand("net", 10**6, device="auto"), cpu_only, []) == Assign("cpu-w0", load=True)


def test_workers_not_ready_mean_wait() -> None:
    workers = [WorkerSlot("gpu0-w0", 0, ready=False)]
    assert isinstance(decide(ModelDemand("m", 100), workers, two_cards()), Wait)
