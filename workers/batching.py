"""The micro-batcher's decision, as a pure function over the jobs a worker holds.

The policy is chosen per model (`batch_policy`):
`adaptive` (the default): a batch goes at once with every job that is waiting, up to
`max_batch_size`; jobs gather only while the worker is busy, so a lone job is never delayed and
`max_delay_ms` plays no part.
`fixed`: a batch goes when it is full or when its first job has waited `max_delay_ms`.

Sizes count items, not jobs: a job whose inputs hold many items (a list of sentences) is a unit of
that many items, and `take_units` splits a unit larger than the room left in a batch, sending the
rest to the back of the queue so that small jobs behind a large one are not held up by it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PendingJob:
    """A unit of work: a whole job (`count == 1`, `inputs` as sent) or a slice of a job's items."""

    job_id: str
    inputs: Any
    arrived_at: float
    count: int = 1
    offset: int = 0  # index of this slice's first item within its job


@dataclass(frozen=True)
class BatchKnobs:
    max_batch_size: int
    max_delay_ms: float
    policy: str = "adaptive"  # adaptive | fixed


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
        count = items_waiting(queue, max(1, knobs.max_batch_size))
        deadline = oldest + knobs.max_delay_ms / 1000.0
        if knobs.policy == "adaptive" or count >= knobs.max_batch_size or now >= deadline:
            ready.append((oldest, model, count))
        elif earliest_deadline is None or deadline < earliest_deadline:
            earliest_deadline = deadline
    if ready:
        _, model, count = min(ready)
        return RunNow(model, count)
    if earliest_deadline is not None:
        return WaitUntil(earliest_deadline)
    return None


def items_waiting(queue: deque[PendingJob], limit: int) -> int:
    """Items in the queue, counted up to `limit`."""
    total = 0
    for unit in queue:
        total += unit.count
        if total >= limit:
            return limit
    return total


def take_units(queue: deque[PendingJob], items: int) -> list[PendingJob]:
    """Take units worth `items` items from the head; a unit that does not fit is split and its rest
    goes to the back of the queue, behind the jobs that were waiting after it."""
    taken: list[PendingJob] = []
    room = items
    while queue and room > 0:
        unit = queue.popleft()
        if unit.count <= room:
            taken.append(unit)
            room -= unit.count
            continue
        head = PendingJob(unit.job_id, unit.inputs[:room], unit.arrived_at, room, unit.offset)
        rest = PendingJob(
            unit.job_id, unit.inputs[room:], unit.arrived_at, unit.count - room, unit.offset + room
        )
        taken.append(head)
        queue.append(rest)
        room = 0
    return taken
