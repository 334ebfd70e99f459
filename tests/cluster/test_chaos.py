"""The cluster chaos run (`scripts/chaos_cluster.py`): one Redis, three daemons with CPU workers,
600 jobs round-robin over the three fronts (some with idempotency keys, some sent twice), long polls
on a daemon other than the submitter, one daemon's main process SIGKILLed mid-run; then Redis
SIGKILLed while a second batch runs and restarted on its append-only file."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.chaos_cluster import run_cluster_chaos


@pytest.mark.timeout(400)  # the run's own deadline is 300 s; on a quiet machine it takes about a minute
def test_cluster_chaos_nothing_lost_one_end_each(tmp_path: Path) -> None:
    figures = run_cluster_chaos(jobs=600, concurrency=24, seed=5, deadline=300.0, folder=str(tmp_path))
    assert figures["acknowledged"] >= 600, figures  # of 660: only a keyless send to the killed front may fail
    assert figures["lost"] == 0, figures
    assert figures["duplicate_ends"] == 0, figures
    assert figures["keys_split"] == 0, figures  # a key sent twice (to two fronts) named one job
    assert figures["reclaimed_not_held"] == 0, figures  # re-runs only of what the killed host held
    assert figures["held_by_killed"] > 0, figures  # frozen at a moment it held jobs
    assert figures["reclaimed"] == figures["held_by_killed"], figures
    assert figures["poison_status"] == "error" and figures["poison_error_kind"] == "poison", figures
    assert figures["completed"] == figures["acknowledged"] - 1, figures  # all but the poison job
    assert figures["second_batch_completed"] == figures["second_batch_acknowledged"] > 0, figures
    assert figures["wakes_measured"] > 100, figures
    # waiters on other hosts wake within 1 s of the end: at most 1% later (one in 450 was, in one of
    # six runs, unexplained: docs/performance.md), more only when this client's own loop or Redis (an
    # append-only file sync on this shared disk) stalled for half a second, which the run reports
    stalled = figures["client_loop_lag_max_s"] > 0.5 or any(
        stall_ms >= 500 for stall_ms in figures["redis_stalls_max_ms"].values()
    )
    assert figures["wake_late"] <= figures["wakes_measured"] // 100 or stalled, figures
    assert figures["wake_median_s"] < 0.5, figures
