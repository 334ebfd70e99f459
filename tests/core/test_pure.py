"""Pure pieces of the core: the batcher's decision, devices, settings, job states, messages."""

from __future__ import annotations

from collections import deque

import pytest

from scheduler.core.devices import NoGpuError, discover_gpus, parse_simulated, parse_size
from scheduler.core.jobs import Job, JobStatus, Priority, can_transition
from scheduler.core.table import JobTable
from scheduler.errors import ConfigError
from scheduler.pool.supervisor import RESPAWN_BACKOFF, worker_plan
from scheduler.settings import load_settings, settings_from_dict
from workers import protocol as m
from workers.batching import BatchKnobs, PendingJob, RunNow, WaitUntil, next_batch

GIB = 1024**3


def pending(model_jobs: dict[str, list[float]]) -> dict[str, deque[PendingJob]]:
    return {
        model: deque(PendingJob(f"{model}{i}", i, t) for i, t in enumerate(times))
        for model, times in model_jobs.items()
    }


def test_fixed_batch_goes_when_full_or_after_max_delay() -> None:
    knobs = {"a": BatchKnobs(max_batch_size=4, max_delay_ms=10.0, policy="fixed")}
    assert next_batch(pending({"a": [0.0, 0.0]}), knobs, now=0.005) == WaitUntil(0.010)
    assert next_batch(pending({"a": [0.0, 0.0]}), knobs, now=0.010) == RunNow("a", 2)
    assert next_batch(pending({"a": [0.0] * 6}), knobs, now=0.0) == RunNow("a", 4)


def test_adaptive_batch_goes_at_once_with_everything_waiting() -> None:
    knobs = {"a": BatchKnobs(max_batch_size=4, max_delay_ms=10.0)}
    assert next_batch(pending({"a": [0.0]}), knobs, now=0.0) == RunNow("a", 1)
    assert next_batch(pending({"a": [0.0] * 3}), knobs, now=0.0) == RunNow("a", 3)
    assert next_batch(pending({"a": [0.0] * 9}), knobs, now=0.0) == RunNow("a", 4)
    assert next_batch(pending({}), knobs, now=0.0) is None


def test_the_model_waiting_longest_goes_first() -> None:
    knobs = {"a": BatchKnobs(8, 0.0), "b": BatchKnobs(8, 0.0)}
    assert next_batch(pending({"a": [2.0], "b": [1.0]}), knobs, now=3.0) == RunNow("b", 1)


def test_parse_simulated_cards() -> None:
    cards = parse_simulated("1x80GiB,1x16GiB")
    assert [(c.index, c.total_bytes, c.simulated) for c in cards] == [
        (0, 80 * GIB, True),
        (1, 16 * GIB, True),
    ]
    assert len(parse_simulated("2x24GiB")) == 2
    assert parse_size("512MiB") == 512 * 1024**2
    with pytest.raises(ValueError, match="COUNTxSIZE"):
        parse_simulated("24GiB")


def test_force_cpu_and_force_gpu() -> None:
    assert discover_gpus({"MODELSCHED_FORCE_CPU": "1", "MODELSCHED_SIMULATED_GPUS": "2x24GiB"}) == []
    assert len(discover_gpus({"MODELSCHED_SIMULATED_GPUS": "2x24GiB"})) == 2
    with pytest.raises(NoGpuError, match="MODELSCHED_FORCE_GPU=1 but no GPU is visible"):
        discover_gpus({"MODELSCHED_FORCE_GPU": "1", "MODELSCHED_FORCE_CPU": "1"})


def test_settings_presets_env_overrides_and_errors_naming_the_key() -> None:
    dev = load_settings("dev", environ={})
    assert dev.preset == "dev" and {model.name for model in dev.models} >= {"echo", "sleep", "mlp"}
    prod = load_settings("prod", environ={})
    assert prod.max_workers_per_gpu == 2 and prod.journal_synchronous == "FULL"
    tuned = load_settings("dev", environ={"MODELSCHED_MAX_QUEUE": "50", "MODELSCHED_TOKEN": "s3cret"})
    assert tuned.max_queue == 50 and tuned.token == "s3cret"
    with pytest.raises(ConfigError, match="max_queue"):
        load_settings("dev", environ={"MODELSCHED_MAX_QUEUE": "many"})
    with pytest.raises(ConfigError, match="max_queue"):
        settings_from_dict({"max_queue": 0})
    with pytest.raises(ConfigError, match="unknown_key"):
        settings_from_dict({"unknown_key": 1})
    with pytest.raises(ConfigError, match="preset"):
        load_settings("nonsense", environ={})


def test_job_state_transitions() -> None:
    assert can_transition(JobStatus.QUEUED, JobStatus.PROCESSING)
    assert can_transition(JobStatus.PROCESSING, JobStatus.QUEUED)
    assert not can_transition(JobStatus.COMPLETED, JobStatus.QUEUED)
    assert not can_transition(JobStatus.CANCELLED, JobStatus.PROCESSING)
    assert Priority.parse("high") < Priority.parse("normal") < Priority.parse("low")
    with pytest.raises(ValueError, match="priority"):
        Priority.parse("urgent")


def test_a_job_added_again_after_it_ended_is_not_trimmed_nor_counted_twice() -> None:
    """A cluster host that dropped a job (ended here) and claimed it back adds the same id again: the
    trim of ended jobs must not take the live one, nor its count stay with the ended record."""
    table = JobTable(max_finished_in_memory=1)
    first = Job(id="j", model="echo", inputs=1)
    table.add(first)
    table.finish(first, JobStatus.CANCELLED, error="taken back")
    again = Job(id="j", model="echo", inputs=1)
    table.add(again)
    assert table.count_by_status[JobStatus.CANCELLED] == 0 and table.count_by_status[JobStatus.QUEUED] == 1
    for n in range(3):  # three more ended jobs: the trim passes over the stale entry of "j"
        other = Job(id=f"o{n}", model="echo", inputs=1)
        table.add(other)
        table.finish(other, JobStatus.CANCELLED)
    assert table.jobs["j"] is again and list(table.finished_order) == ["o2"]
    assert table.forget_older_than(float("inf")) == 1 and table.jobs == {"j": again}
    table.mark_processing(again, "cpu-w0", "cpu")
    table.finish(again, JobStatus.COMPLETED, result=1)
    assert table.count_by_status[JobStatus.COMPLETED] == 1 and table.count_by_status[JobStatus.CANCELLED] == 0


def test_messages_round_trip_as_msgpack() -> None:
    run = m.RunJobs("mlp", [m.JobItem("j1", [1.0, 2.0]), m.JobItem("j2", {"text": "x"})])
    assert m.decode_to_worker(m.encode(run)) == run
    results = m.JobResults(
        "mlp", 2, 0.01, [m.JobOutcome("j1", [3.0]), m.JobOutcome("j2", None, "bad", "input")]
    )
    assert m.decode_from_worker(m.encode(results)) == results


def test_worker_plan_and_respawn_backoff() -> None:
    assert worker_plan([0, 1], 2, (1, 1), needs_cpu_workers=False) == (
        [("gpu0-w0", 0), ("gpu0-w1", 0), ("gpu1-w0", 1), ("gpu1-w1", 1)],
        [],
    )
    assert worker_plan([], 2, (2, 2), needs_cpu_workers=True) == ([("cpu-w0", None), ("cpu-w1", None)], [])
    assert worker_plan([], 2, (0, 0), needs_cpu_workers=True) == ([("cpu-w0", None)], [])  # at least one
    # an elastic pool starts its fewest and parks the rest, needed or not (run_cpu may need them)
    assert worker_plan([0], 1, (1, 3), needs_cpu_workers=False) == (
        [("gpu0-w0", 0), ("cpu-w0", None)],
        ["cpu-w1", "cpu-w2"],
    )
    assert RESPAWN_BACKOFF.delay(0) == 0.0
    assert 0 < RESPAWN_BACKOFF.delay(1) < RESPAWN_BACKOFF.delay(3) <= 30.0


def test_take_units_counts_items_and_sends_the_rest_of_a_large_job_to_the_back() -> None:
    from workers.batching import items_waiting, take_units

    queue = deque(
        [
            PendingJob("big", list(range(20)), 0.0, count=20),
            PendingJob("small1", [1], 0.0, count=1),
            PendingJob("small2", [2, 3], 0.0, count=2),
        ]
    )
    assert items_waiting(queue, 8) == 8
    first = take_units(queue, 8)
    assert [(u.job_id, u.count, u.offset) for u in first] == [("big", 8, 0)]
    assert [u.job_id for u in queue] == ["small1", "small2", "big"]
    second = take_units(queue, 8)
    assert [(u.job_id, u.count, u.offset) for u in second] == [
        ("small1", 1, 0),
        ("small2", 2, 0),
        ("big", 5, 8),
    ]
    assert second[2].inputs == list(range(8, 13))
    assert [(u.job_id, u.count, u.offset) for u in queue] == [("big", 7, 13)]
