"""`ClusterStore`: the one connection of a daemon's main process to the cluster's Redis.

It loads the job functions (`modelsched.lua`, `FUNCTION LOAD REPLACE`) and calls them grouped per
event-loop turn: every call made in one turn goes out in one pipeline (one round trip, no
transaction: each function is atomic on its own), the way the SQLite journal groups its commits; up
to `MAX_IN_FLIGHT` pipelines are under way at once (a caller that needs an order awaits the first
call before it makes the next).
A call marked `retry` (an end, an attempt) waits for Redis to come back and is sent again; any other
fails with `JournalError` when its round trip cannot reach Redis (a submission answers 503).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from scheduler.errors import JournalError

log = logging.getLogger("modelsched.cluster")

MAX_IN_FLIGHT = 8  # pipelines under way at once (each on its own connection): round trips overlap
RETRY_S = 0.25  # between tries of the held calls while Redis is unreachable
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def functions_source() -> str:
    return resources.files("scheduler.cluster").joinpath("modelsched.lua").read_text()


@dataclass
class _Call:
    command: tuple[Any, ...]
    future: asyncio.Future[Any]
    retry: bool
    queued_at: float = field(default_factory=time.monotonic)


class ClusterStore:
    """url: `redis://host:port/db` or `unix:///path/to/socket`; cluster: the name that prefixes every
    key (`ms:<cluster>:`), so that clusters may share one Redis."""

    def __init__(self, url: str, cluster: str = "default") -> None:
        self.url = url
        self.prefix = f"ms:{cluster}:"
        # one connection carries the grouped calls (and one the pub/sub): a pipeline at a time
        self.redis: aioredis.Redis = aioredis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0)
        self.up = False  # the last round trip reached Redis
        self.down_since: float | None = None
        self.round_trips = 0
        self.calls = 0
        self._pending: list[_Call] = []
        self._trips: set[asyncio.Task[None]] = set()  # pipelines under way
        self._idle: list[AbstractConnection] = []  # connections of the round trips, between trips
        self._send_scheduled = False
        self._closed = False

    async def open(self) -> None:
        """Load the functions (raises JournalError when Redis cannot be reached)."""
        try:
            await self.redis.function_load(functions_source(), replace=True)
        except UNREACHABLE as exc:
            raise JournalError(f"the cluster's Redis at {self.url} cannot be reached: {exc}") from None
        self._mark(True)

    async def close(self) -> None:
        """Send what is waiting (one try), then close the connections."""
        deadline = time.monotonic() + 2.0
        while (self._pending or self._trips) and time.monotonic() < deadline and self.up:
            await asyncio.sleep(0.01)
        self._closed = True
        for call in self._pending:
            if not call.future.done():
                call.future.set_exception(JournalError("the cluster connection closed"))
        self._pending.clear()
        for trip in list(self._trips):
            trip.cancel()
        for connection in self._idle:
            await connection.disconnect()
        self._idle.clear()
        await self.redis.aclose()

    def call(self, function: str, *args: Any, retry: bool = False) -> asyncio.Future[Any]:
        """`FCALL modelsched_<function> 0 <prefix> *args`, sent with the rest of this loop turn's calls."""
        return self.command("FCALL", f"modelsched_{function}", 0, self.prefix, *args, retry=retry)

    def command(self, *command: Any, retry: bool = False) -> asyncio.Future[Any]:
        """Any command (a read: `HGETALL`), sent with the rest of this loop turn's calls."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._closed:
            future.set_exception(JournalError("the cluster connection is closed"))
            return future
        self._pending.append(_Call(command, future, retry))
        if not self._send_scheduled:
            self._send_scheduled = True
            loop.call_soon(self._send)
        return future

    def _down_error(self) -> JournalError:
        return JournalError(f"the cluster's Redis at {self.url} is unreachable; retry later")

    def _mark(self, up: bool) -> None:
        if up and not self.up:
            if self.down_since is not None:
                log.warning(
                    "the cluster's Redis is reachable again (%.1fs down)", time.monotonic() - self.down_since
                )
            self.down_since = None
        elif not up and self.up:
            log.error(
                "the cluster's Redis at %s is unreachable: submissions are refused, ends wait", self.url
            )
            self.down_since = time.monotonic()
        elif not up and self.down_since is None:
            self.down_since = time.monotonic()
        self.up = up

    async def _exchange(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The commands written at once (packed by hiredis), then their replies read in order: redis-py's
        pipeline packs each command in Python, which costs more than the round trip it saves. Each
        round trip under way has a connection of its own (kept for the next one)."""
        pool = self.redis.connection_pool
        connection = self._idle.pop() if self._idle else pool.connection_class(**pool.connection_kwargs)
        try:
            await connection.send_packed_command(b"".join(map(hiredis.pack_command, commands)), False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:  # one call's error (a script error): the rest go on
                    replies.append(exc)
        except BaseException:
            await connection.disconnect()  # replies may be left unread: never reuse it
            raise
        self._idle.append(connection)
        return replies

    def _send(self) -> None:
        """This loop turn's calls, in one pipeline, unless `MAX_IN_FLIGHT` are under way (then the next
        one to come back sends them, with what came meanwhile)."""
        self._send_scheduled = False
        if not self._pending or len(self._trips) >= MAX_IN_FLIGHT or self._closed:
            return
        batch, self._pending = self._pending, []
        trip = asyncio.get_running_loop().create_task(self._round_trip(batch))
        self._trips.add(trip)
        trip.add_done_callback(self._trip_done)

    def _trip_done(self, trip: asyncio.Task[None]) -> None:
        self._trips.discard(trip)
        if self._pending and not self._send_scheduled:
            self._send_scheduled = True
            asyncio.get_running_loop().call_soon(self._send)

    async def _round_trip(self, batch: list[_Call]) -> None:
        try:
            results = await self._exchange([call.command for call in batch])
        except UNREACHABLE as exc:
            self._mark(False)
            log.debug("cluster round trip failed: %r", exc)
            held = [call for call in batch if call.retry]
            for call in batch:
                if not call.retry and not call.future.done():
                    call.future.set_exception(self._down_error())
            if held:
                self._pending[:0] = held
                await asyncio.sleep(RETRY_S)  # this trip counts as under way meanwhile
            return
        self._mark(True)
        self.round_trips += 1
        self.calls += len(batch)
        for call, result in zip(batch, results, strict=True):
            if call.future.done():
                continue
            if isinstance(result, ResponseError):
                call.future.set_exception(JournalError(f"{call.command[1]}: {result}"))
            elif isinstance(result, BaseException):
                call.future.set_exception(result)
            else:
                call.future.set_result(result)
