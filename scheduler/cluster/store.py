"""`ClusterStore`: the one connection of a daemon's main process to the cluster's Redis.

It loads the job functions (`functions_*.lua`, joined into one library, `FUNCTION LOAD REPLACE`) and
calls them grouped: the calls made in one event-loop turn go out in one write on one connection (Redis
answers a connection's commands in order; no transaction: each function is atomic on its own), the way
the SQLite journal groups its commits. A turn that makes `EAGER_CALLS` calls writes them at once, so
Redis works on the first ones while this process makes the rest. Commands are packed and replies parsed
by hiredis on an asyncio protocol of its own (`_Link`): redis-py's per-command machinery cost more than
the round trip it saves. A caller that needs an order awaits the first call before it makes the next.
A call marked `retry` (an end, an attempt) waits for Redis to come back and is sent again; any other
fails with `JournalError` when Redis cannot be reached or does not answer within `ANSWER_TIMEOUT_S`
(a submission answers 503).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from importlib import resources
from typing import Any, NamedTuple, TypeVar, cast

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from scheduler.errors import JournalError

log = logging.getLogger("modelsched.cluster")

EAGER_CALLS = 32  # calls made in one turn that are written before the turn ends
RETRY_S = 0.25  # between tries of the held calls while Redis is unreachable
ANSWER_TIMEOUT_S = 5.0  # a Redis that has not answered a call for this long is taken as gone
CONNECT_TIMEOUT_S = 2.0
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


FUNCTION_PARTS = ("common", "queue", "recovery", "reads", "register")  # one Redis library, in this order


def functions_source() -> str:
    """The `modelsched` library's source: its parts (`functions_<part>.lua`), one file each, joined."""
    folder = resources.files("scheduler.cluster")
    return "\n".join(folder.joinpath(f"functions_{part}.lua").read_text() for part in FUNCTION_PARTS)


class _Call(NamedTuple):
    command: tuple[Any, ...]
    future: asyncio.Future[Any]
    retry: bool


Told = Callable[[Any, BaseException | None], None]  # a grouped call's answer, or why it has none


class _Batch:
    """The calls to one function made in one loop turn, sent as one `FCALL modelsched_many` (each
    call's arguments after a count); its answer (one per call) settles each call's future."""

    def __init__(self, function: str, retry: bool, loop: asyncio.AbstractEventLoop) -> None:
        self.function = function
        self.retry = retry
        self.args: list[tuple[Any, ...]] = []
        self.futures: list[asyncio.Future[Any] | Told] = []  # each call's future, or its callback
        self.future: asyncio.Future[Any] = loop.create_future()  # the FCALL's
        self.future.add_done_callback(self._settle)
        self.sealed = False  # sent (or sending): later calls start another batch

    def add(self, args: tuple[Any, ...], told: asyncio.Future[Any] | Told) -> None:
        self.args.append(args)
        self.futures.append(told)

    def as_call(self, prefix: str) -> _Call:
        self.sealed = True
        command: list[Any] = ["FCALL", "modelsched_many", 0, prefix, self.function]
        for args in self.args:
            command.append(len(args))
            command.extend(args)
        return _Call(tuple(command), self.future, self.retry)

    def _settle(self, done: asyncio.Future[Any]) -> None:
        self.sealed = True
        error = JournalError("the cluster call was cancelled") if done.cancelled() else done.exception()
        answers: list[Any] = [] if error is not None else done.result()
        if error is None and len(answers) != len(self.futures):
            error = JournalError(f"{self.function}: {len(answers)} answers for {len(self.futures)} calls")
        for index, future in enumerate(self.futures):
            answer = answers[index] if error is None else None
            failed: BaseException | None = error
            if isinstance(answer, hiredis.ReplyError):
                answer, failed = None, JournalError(f"{self.function}: {answer}")
            if not isinstance(future, asyncio.Future):
                try:
                    future(answer, failed)
                except Exception:  # one caller's bug must not keep the others' answers from them
                    log.exception("a grouped %s call's callback failed", self.function)
            elif future.done():
                continue
            elif failed is not None:
                future.set_exception(failed)
            else:
                future.set_result(answer)


_Held = TypeVar("_Held", bound=_Call | _Batch)  # a call, or a turn's batch of calls waiting to be sent


class _Link(asyncio.Protocol):
    """One connection: commands written as they come, replies resolved in order (`waiting`)."""

    def __init__(self, on_lost: Any) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[_Call] = deque()
        self.transport: asyncio.Transport | None = None
        self.on_lost = on_lost
        self.last_answer = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(
            asyncio.Transport, transport
        )  # (uvloop's are not asyncio.Transport's subclasses)

    def send(self, calls: list[_Call]) -> None:
        assert self.transport is not None
        if not self.waiting:
            self.last_answer = time.monotonic()  # (the answer clock starts with the first call waiting)
        self.waiting.extend(calls)
        self.transport.write(b"".join(hiredis.pack_command(call.command) for call in calls))

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            self.last_answer = time.monotonic()
            call = self.waiting.popleft()
            if call.future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                call.future.set_exception(JournalError(f"{call.command[1]}: {reply}"))
            else:
                call.future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.on_lost(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class ClusterStore:
    """url: `redis://host:port/db` or `unix:///path/to/socket`; cluster: the name that prefixes every
    key (`ms:<cluster>:`), so that clusters may share one Redis."""

    def __init__(self, url: str, cluster: str = "default") -> None:
        self.url = url
        self.prefix = f"ms:{cluster}:"
        # redis-py for the rest: loading the functions, the pub/sub, scripts' and tests' own commands
        self.redis: aioredis.Redis = aioredis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0)
        self.address = parse_url(url)
        self.up = False  # the last exchange reached Redis
        self.down_since: float | None = None
        self.round_trips = 0  # writes
        self.calls = 0
        self._pending: list[_Call | _Batch] = []
        self._batches: dict[tuple[str, bool], _Batch] = {}  # this turn's open batch per function
        self._link: _Link | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
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
        while (
            (self._pending or (self._link and self._link.waiting)) and time.monotonic() < deadline and self.up
        ):
            await asyncio.sleep(0.01)
        self._closed = True
        left = self._pending + (list(self._link.waiting) if self._link else [])
        for call in left:
            if not call.future.done():
                call.future.set_exception(JournalError("the cluster connection closed"))
        self._pending.clear()
        if self._connecting is not None:
            self._connecting.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._link is not None:
            self._link.waiting.clear()
            self._link.close()
        await self.redis.aclose()

    def call(self, function: str, *args: Any, retry: bool = False) -> asyncio.Future[Any]:
        """`FCALL modelsched_<function> 0 <prefix> *args`, sent with the rest of this loop turn's calls."""
        return self.command("FCALL", f"modelsched_{function}", 0, self.prefix, *args, retry=retry)

    def batched(self, function: str, *args: Any, retry: bool = False) -> asyncio.Future[Any]:
        """`modelsched_<function>(prefix, *args)` as `call` does, but run with the rest of this loop
        turn's calls to `function` in one `FCALL modelsched_many` (each call atomic on its own, with
        its own answer). A batch of `EAGER_CALLS` calls is written at once, so Redis works on it
        while this process makes the rest (one batch a turn, half the syncs of the append-only
        file, measured slower: Redis and this process took turns instead of working together)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.batched_then(function, future, *args, retry=retry)
        return future

    def batched_then(
        self, function: str, told: asyncio.Future[Any] | Told, *args: Any, retry: bool = False
    ) -> None:
        """`batched`, its answer set on the future `told` or passed to the callback `told(answer,
        error)` (called as the answers are read: no future, no loop turn more per call)."""
        loop = asyncio.get_running_loop()
        if self._closed:
            error = JournalError("the cluster connection is closed")
            if isinstance(told, asyncio.Future):
                told.set_exception(error)
            else:
                loop.call_soon(told, None, error)
            return
        key = (function, retry)
        batch = self._batches.get(key)
        if batch is None or batch.sealed or batch.future.done():
            batch = self._batches[key] = _Batch(function, retry, loop)
            self._pending.append(batch)
            if not self._send_scheduled:
                self._send_scheduled = True
                loop.call_soon(self._send)
        batch.add(args, told)
        if len(batch.args) >= EAGER_CALLS:
            batch.sealed = True
            del self._batches[key]
            self._send()

    def command(self, *command: Any, retry: bool = False) -> asyncio.Future[Any]:
        """Any command (a read: `HGETALL`), sent with the rest of this loop turn's calls."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._closed:
            future.set_exception(JournalError("the cluster connection is closed"))
            return future
        self._pending.append(_Call(command, future, retry))
        if len(self._pending) >= EAGER_CALLS:
            self._send()
        elif not self._send_scheduled:
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

    def _send(self) -> None:
        """What is pending, in one write (connecting first when there is no connection)."""
        self._send_scheduled = False
        if not self._pending or self._closed:
            return
        if self._link is None or self._link.transport is None:
            if self._connecting is None:
                self._connecting = asyncio.get_running_loop().create_task(self._connect())
            return
        batch = [one if isinstance(one, _Call) else one.as_call(self.prefix) for one in self._pending]
        self._pending = []
        self._batches.clear()
        self._link.send(batch)
        self.round_trips += 1
        self.calls += len(batch)
        self._arm_watchdog()

    async def _connect(self, pause: float = 0.0) -> None:
        loop = asyncio.get_running_loop()
        try:
            if pause:
                await asyncio.sleep(pause)
            link = _Link(self._lost)
            path = self.address.get("path")
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                if path:
                    await loop.create_unix_connection(lambda: link, path)
                else:
                    await loop.create_connection(
                        lambda: link, self.address.get("host", "localhost"), self.address.get("port", 6379)
                    )
                for setup in self._setup_commands():
                    future: asyncio.Future[Any] = loop.create_future()
                    link.send([_Call(setup, future, False)])
                    await future
        except (OSError, TimeoutError, JournalError) as exc:
            self._connecting = None
            log.debug("cluster connection failed: %r", exc)
            self._mark(False)
            self._fail(self._pending)
            if self._pending and not self._closed:  # calls held for Redis: try again
                self._connecting = loop.create_task(self._connect(RETRY_S))
            return
        self._connecting = None
        self._link = link
        self._mark(True)
        self._send()

    def _setup_commands(self) -> list[tuple[Any, ...]]:
        commands: list[tuple[Any, ...]] = []
        password = self.address.get("password")
        if password:
            username = self.address.get("username")
            commands.append(("AUTH", username, password) if username else ("AUTH", password))
        if self.address.get("db"):
            commands.append(("SELECT", self.address["db"]))
        return commands

    def _lost(self, link: _Link) -> None:
        """The connection broke (or the watchdog cut it): its calls fail or wait to be sent again."""
        if link is self._link:
            self._link = None
        unanswered = list(link.waiting)
        link.waiting.clear()
        if self._closed:
            return
        self._mark(False)
        held = self._fail(unanswered)
        self._pending[:0] = held
        self._fail(self._pending)
        if self._pending and self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect(RETRY_S))

    def _fail(self, calls: list[_Held]) -> list[_Held]:
        """Fail the calls that are not held for Redis (in place, for `_pending`); the held ones."""
        held = [call for call in calls if call.retry and not call.future.done()]
        for call in calls:
            if not call.retry and not call.future.done():
                call.future.set_exception(self._down_error())
        calls[:] = held
        return held

    def _arm_watchdog(self) -> None:
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(1.0, self._watch_answers)

    def _watch_answers(self) -> None:
        """Cut a connection whose calls have waited `ANSWER_TIMEOUT_S` without an answer (a frozen or
        gone Redis): its calls fail, or wait for Redis if held."""
        self._watchdog = None
        link = self._link
        if link is None or not link.waiting or self._closed:
            return
        if time.monotonic() - link.last_answer > ANSWER_TIMEOUT_S:
            log.debug("the cluster's Redis has not answered for %.1fs", time.monotonic() - link.last_answer)
            link.close()
            return
        self._arm_watchdog()
