"""The micro-batcher's decision, as a pure function over the jobs a worker holds.

`adaptive` (the default): a batch goes at once with every job that is waiting, up to
`max_batch_size`; jobs gather only while the worker is busy, so a lone job is never delayed.
`fixed`: a batch goes when it is full or when its first job has waited `max_delay_ms`.
Either way a batch never waits longer than `max_delay_ms` after its first job.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PendingJob:
    job_id: str
    inputs: Any
    arrived_at: float


@dataclass(frozen=True)
class BatchKnobs:
    max_batch_size: int
    max_delay_ms: float


@dataclass(frozen=True)
class RunNow:
    model: str
    count: int


@dataclass(frozen=True)
class WaitUntil:
    deadline: float


def next_batch(
    pending_by_model: dict[str, deque[PendingJob]],
    knobs_by_model: dict[str, BatchKnobs],
    now: float,
    policy: str = "adaptive",
) -> RunNow | WaitUntil | None:
    """Which model to run now and how many of its jobs; or until when to wait; None when idle.

    The model whose oldest job has waited longest goes first, so no model starves another.
    """
    ready: list[tuple[float, str, int]] = []
    earliest_deadline: float | None = None
    for model, queue in pending_by_model.items():
        if not queue:
            continue
        knobs = knobs_by_model[model]
        oldest = queue[0].arrived_at
        count = min(len(queue), max(1, knobs.max_batch_size))
        deadline = oldest + knobs.max_delay_ms / 1000.0
        if policy == "adaptive" or count >= knobs.max_batch_size or now >= deadline:
            ready.append((oldest, model, count))
        elif earliest_deadline is None or deadline < earliest_deadline:
            earliest_deadline = deadline
    if ready:
        _, model, count = min(ready)
        return RunNow(model, count)
    if earliest_deadline is not None:
        return WaitUntil(earliest_deadline)
    return None
