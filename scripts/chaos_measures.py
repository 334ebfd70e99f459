"""What a chaos run measures of its own surroundings, so that a late figure can be told apart from a
stalled client or a stalled Redis: the client's event-loop lag, and Redis's latency monitor."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from scripts.redis_server import RedisServer


async def loop_lag(stop: asyncio.Event, tick_s: float = 0.05) -> float:
    """The longest this client's event loop was late for a tick, until `stop`."""
    worst = 0.0
    while not stop.is_set():
        asked = time.monotonic()
        await asyncio.sleep(tick_s)
        worst = max(worst, time.monotonic() - asked - tick_s)
    return worst


async def redis_stalls(redis: RedisServer, threshold_ms: int | None = None) -> dict[str, int]:
    """Redis's latency monitor: with `threshold_ms`, turned on; else the longest stall of each kind it
    saw (`aof-fsync-always`: an append-only file sync that held every client), in ms."""
    client = aioredis.from_url(redis.url)
    try:
        if threshold_ms is not None:
            await client.config_set("latency-monitor-threshold", threshold_ms)
            return {}
        latest = await client.execute_command("LATENCY", "LATEST")
        return {event[0].decode(): int(event[3]) for event in latest}
    finally:
        await client.aclose()
