"""How many jobs of each model this host may claim now: a pure function over the same view the
dispatch pass uses (`scheduler.core.placement`), so a host takes only what it would run at once.

A model loaded on a ready worker gets that worker's pipeline room (`PIPELINE_BATCHES` batches of
items, less what it has in flight); one loaded nowhere here gets the room of the worker placement
would load it on, marked `cold` (the cluster lets a warm host take it first, `cold_claim_delay_ms`);
nothing while placement says wait. Jobs claimed and not yet sent to a worker count against the room,
and the total is bounded by the workers' free pipeline room, so nothing is hoarded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scheduler.core.placement import Assign, GpuCapacity, ModelDemand, Slot, place


@dataclass(frozen=True)
class ClaimRoom:
    model: str
    room: int
    cold: bool  # no worker here has the model loaded: claiming it means a load


@dataclass(frozen=True)
class Claimable:
    demand: ModelDemand
    pipeline_items: int  # what one worker holds of it at most (`max_batch_size` x batches)


def claim_rooms(
    models: Sequence[Claimable],
    workers: Sequence[Slot],
    gpus: Sequence[GpuCapacity],
    waiting: Mapping[str, int],
    *,
    max_models_per_worker: int,
) -> tuple[int, list[ClaimRoom]]:
    """(total room, room per model) for `models` on `workers`; `waiting`: jobs claimed here per model
    that no worker has yet."""
    if not models:
        return 0, []
    ready = [worker for worker in workers if worker.ready]
    widest = max(model.pipeline_items for model in models)
    total = sum(max(0, widest - worker.outstanding_items) for worker in ready) - sum(waiting.values())
    rooms: list[ClaimRoom] = []
    by_id = {worker.worker_id: worker for worker in workers}
    for model in models:
        name, items = model.demand.name, model.pipeline_items
        queued_here = waiting.get(name, 0)
        holders = [worker for worker in ready if name in worker.models]
        free = sum(max(0, items - worker.outstanding_items) for worker in holders) - queued_here
        if free > 0:
            rooms.append(ClaimRoom(name, free, False))
            continue
        decision = place(
            model.demand, workers, gpus, max_models_per_worker=max_models_per_worker, pipeline_items=items
        )
        if isinstance(decision, Assign):
            room = items - by_id[decision.worker_id].outstanding_items - queued_here
            if room > 0:
                rooms.append(ClaimRoom(name, room, decision.load))
    return max(0, total), rooms
