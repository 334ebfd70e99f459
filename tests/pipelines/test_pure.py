"""The pure parts of pipelines and costs, checked exactly: a pipeline's definition, a job's share of
its batch as the worker measures it, cost arithmetic from batch to job to totals, the elastic pool's
decision, and which idle models are unloaded."""

from __future__ import annotations

import pytest

from scheduler.core.costs import DEFAULT_RATES, CostLedger, rate_per_s
from scheduler.core.cpu_pool import Grow, Shrink, SlotView, idle_models, pool_change
from scheduler.core.models import ModelRegistry, resolve_spec
from scheduler.core.pipelines import pipeline_from
from scheduler.core.placement import LoadedModel
from scheduler.core.workers import Worker
from scheduler.errors import ConfigError, WorkerState
from scheduler.pool.supervisor import ChildWatch
from workers import protocol as m
from workers.runtime import WorkerRuntime


def registry_with(*names: str) -> ModelRegistry:
    registry = ModelRegistry()
    for name in names:
        registry.register(*resolve_spec({"name": name, "adapter": "echo"}))
    return registry


def test_a_pipeline_definition_is_checked() -> None:
    registry = registry_with("a", "b")
    pipeline = pipeline_from(
        {"name": "p", "stages": ["a", {"model": "b", "name": "second", "timeout_s": 2}]}, registry
    )
    assert [(stage.name, stage.model, stage.timeout_s) for stage in pipeline.stages] == [
        ("a", "a", None),
        ("second", "b", 2.0),
    ]
    with pytest.raises(ConfigError, match=r"pipelines.p.stages\[1\]: no model 'nope' is registered"):
        pipeline_from({"name": "p", "stages": ["a", "nope"]}, registry)
    with pytest.raises(ConfigError, match="at least one stage"):
        pipeline_from({"name": "p", "stages": []}, registry)
    with pytest.raises(ConfigError, match="unique"):
        pipeline_from({"name": "p", "stages": ["a", "a"]}, registry)
    with pytest.raises(ConfigError, match="timeout_s"):
        pipeline_from({"name": "p", "stages": [{"model": "a", "timeout_s": 0}]}, registry)


def test_each_job_gets_its_share_of_the_batch_it_ran_in() -> None:
    """Four whole jobs and one job split over two batches: each item's share is the batch's run
    time over its items, so the shares of one batch add up to its run time."""
    sent: list[m.FromWorker] = []
    spec = m.ModelSpec(name="split", adapter="tests.support.core_adapters:SplitAdapter", max_batch_size=8)
    runtime = WorkerRuntime(
        "w", "cpu", [spec], lambda _: None, lambda data: sent.append(m.decode_from_worker(data))
    )
    runtime.enqueue(
        m.RunJobs("split", [m.JobItem(f"j{i}", [i]) for i in range(4)] + [m.JobItem("big", list(range(6)))])
    )
    runtime.run_batch("split", 8)  # the four jobs and 4 of big's 6 items
    runtime.run_batch("split", 8)  # big's last 2 items
    first, second = (message for message in sent if isinstance(message, m.JobResults))
    assert first.batch_size == 8 and second.batch_size == 2
    shares = {outcome.job_id: outcome.compute_s for outcome in first.outcomes + second.outcomes}
    for index in range(4):
        assert shares[f"j{index}"] == first.run_s / 8
    assert shares["big"] == pytest.approx(4 * first.run_s / 8 + 2 * second.run_s / 2, rel=1e-12)
    assert sum(shares.values()) == pytest.approx(first.run_s + second.run_s, rel=1e-12)


def test_cost_is_the_rate_times_the_share_and_adds_up() -> None:
    # The example: a batch of 32 items over 0.1 s on a GPU at $0.0015/s.
    ledger = CostLedger({})
    share_s = 0.1 / 32
    costs = [ledger.charge("m", "NVIDIA H100 80GB HBM3", share_s) for _ in range(32)]
    assert costs[0] == 0.0015 * share_s
    assert sum(costs) == pytest.approx(0.1 * 0.0015, rel=1e-12)
    assert ledger.by_device == {"gpu": ledger.total_usd}
    # Rates: a card's own name first, then its class, then the default.
    rates = {"gpu": 0.002, "NVIDIA H100 80GB HBM3": 0.0011}
    assert rate_per_s(rates, "NVIDIA H100 80GB HBM3") == 0.0011
    assert rate_per_s(rates, "NVIDIA A10") == 0.002
    assert rate_per_s(rates, None) == DEFAULT_RATES["cpu"]
    assert rate_per_s({}, "any card") == DEFAULT_RATES["gpu"]
    # Totals: by model and device as spent; by pipeline and per 1,000 jobs as jobs end.
    ledger = CostLedger({"cpu": 0.5, "gpu": 2.0})
    assert ledger.charge("prep", None, 0.25) == 0.125
    assert ledger.charge("encode", "card", 0.5) == 1.0
    ledger.ended(1.125, "classify")
    ledger.ended(0.0, None)
    totals = ledger.totals()
    assert totals.by_model == {"prep": 0.125, "encode": 1.0}
    assert totals.by_device == {"cpu": 0.125, "gpu": 1.0}
    assert totals.seconds_by_device == {"cpu": 0.25, "gpu": 0.5}
    assert totals.by_pipeline == {"classify": 1.125}
    assert totals.total_usd == 1.125 and totals.jobs_ended == 2
    assert totals.per_1000_jobs_usd == 1000 * 1.125 / 2


def slot(worker_id: str, state: WorkerState, busy: bool = False, idle_s: float = 0.0) -> SlotView:
    return SlotView(worker_id, state, busy, idle_s)


def test_the_pool_grows_under_a_backlog_one_start_at_a_time() -> None:
    ready, stopped, starting = WorkerState.READY, WorkerState.STOPPED, WorkerState.STARTING
    parked = [slot("cpu-w1", stopped), slot("cpu-w2", stopped)]
    assert pool_change(parked, backlog=0, low=0, high=2, idle_timeout_s=3) is None
    change = pool_change(parked, backlog=5, low=0, high=2, idle_timeout_s=3)
    assert isinstance(change, Grow) and change.worker_id == "cpu-w1"
    # one is starting: wait for it before starting another
    assert pool_change([slot("cpu-w1", starting), parked[1]], 5, 0, 2, 3) is None
    # a free ready worker will take the backlog: no growth
    assert pool_change([slot("cpu-w1", ready), parked[1]], 5, 0, 2, 3) is None
    change = pool_change([slot("cpu-w1", ready, busy=True), parked[1]], 5, 0, 2, 3)
    assert isinstance(change, Grow) and change.worker_id == "cpu-w2"
    # at the maximum: no growth however long the queue
    assert pool_change([slot("cpu-w1", ready, True), slot("cpu-w2", ready, True)], 50, 0, 2, 3) is None
    # below the minimum: grow without a backlog
    assert isinstance(pool_change(parked, 0, 1, 2, 3), Grow)


def test_the_pool_shrinks_to_its_minimum_after_idling() -> None:
    ready, stopped = WorkerState.READY, WorkerState.STOPPED
    slots = [slot("cpu-w0", ready, idle_s=10), slot("cpu-w1", ready, idle_s=4), slot("cpu-w2", stopped)]
    change = pool_change(slots, backlog=0, low=1, high=3, idle_timeout_s=3)
    assert isinstance(change, Shrink) and change.worker_id == "cpu-w0"  # the longest idle first
    assert pool_change(slots, backlog=1, low=1, high=3, idle_timeout_s=3) is None  # jobs wait: keep it
    assert pool_change(slots, backlog=0, low=2, high=3, idle_timeout_s=3) is None  # at the minimum
    busy = [slot("cpu-w0", ready, busy=True, idle_s=10), slot("cpu-w1", ready, idle_s=1)]
    assert pool_change(busy, backlog=0, low=0, high=2, idle_timeout_s=3) is None


def test_models_idle_past_the_limit_are_unloaded() -> None:
    worker = Worker("w", None, "cpu", ChildWatch("w", state=WorkerState.READY))
    worker.models = {
        "old": LoadedModel(10.0, last_used=100.0, loading=False),
        "busy": LoadedModel(10.0, last_used=100.0, in_flight=1, loading=False),
        "fresh": LoadedModel(10.0, last_used=195.0, loading=False),
    }
    assert [(w.worker_id, name) for w, name in idle_models({"w": worker}, 60.0, now=200.0)] == [("w", "old")]
    assert idle_models({"w": worker}, 0.0, now=200.0) == []  # 0: never
