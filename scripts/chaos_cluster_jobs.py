"""The cluster chaos run's jobs (`scripts/chaos_cluster.py`): what each one is, how it is sent, and
what its client saw of it. A third of them carry an idempotency key (some sent twice, to two
fronts); of the others, half are infers (`POST /models/{model}/infer`: submitted and answered in one
call, so a daemon that runs one at once writes it to Redis only with its end) and half go to
`POST /jobs`. One is a worker-killing job (`{"exit": 1}`), which must end as poison."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis


@dataclass
class Tracked:
    index: int
    model: str
    inputs: Any
    key: str | None
    resend: bool
    poison: bool = False
    front: int = 0
    job_id: str | None = None
    ids: set[str] = field(default_factory=set)
    first_end: dict[str, Any] | None = None
    end_changed: bool = False
    wake_s: list[float] = field(default_factory=list)
    infer: bool = False  # sent as an infer: acknowledged by its answer (200), which is its end
    answered: dict[str, Any] | None = None  # the infer's answer
    confirmed: bool = False  # an infer: another daemon read its end from Redis, the same as answered


def make_jobs(count: int, seed: int, run_id: str, start: int = 0, poison: bool = True) -> list[Tracked]:
    rng = random.Random(seed + start)
    jobs = []
    for index in range(start, start + count):
        key = f"c-{run_id}-{index}" if index % 3 == 0 else None
        resend = key is not None and index % 9 == 0
        if rng.random() < 0.6:
            jobs.append(Tracked(index, "sleep", {"ms": rng.randint(5, 60)}, key, resend))
        else:
            jobs.append(
                Tracked(index, "mlp", [round(rng.uniform(-1, 1), 3) for _ in range(256)], key, resend)
            )
        jobs[-1].front = index % 3
        jobs[-1].infer = key is None and index % 2 == 0
    if poison and jobs:
        jobs[len(jobs) // 2] = Tracked(start + len(jobs) // 2, "sleep", {"exit": 1}, None, False, poison=True)
        jobs[len(jobs) // 2].front = jobs[len(jobs) // 2].index % 3
    return jobs


async def written_with_end(redis_url: str, prefix: str, jobs: list[Tracked]) -> int:
    """How many of these jobs' hashes were written at their end (no `stream` field: an infer whose
    submission its daemon held back), as Redis holds them now."""
    client = aioredis.from_url(redis_url)
    try:
        ids = [job.job_id for job in jobs if job.job_id is not None]
        found = [await client.hexists(f"{prefix}job:{job_id}", "stream") for job_id in ids]
        return sum(1 for exists in found if not exists)
    finally:
        await client.aclose()
