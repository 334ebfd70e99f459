"""The cluster's grouped calls (`modelsched_many`: a loop turn's submissions, or ends, in one FCALL)
and the direct hold (a job run where it was submitted: no stream entry, a member of `<stream>:held`)
against a real redis-server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from scheduler.cluster.records import finish_args, submit_args
from scheduler.cluster.store import ClusterStore
from scheduler.core.jobs import JobStatus
from scheduler.errors import JournalError
from tests.cluster.test_functions import RETENTION, claim, hash_of, job, run, submit
from tests.support.redis_server import RedisServer


def ended(one: Any, status: JobStatus = JobStatus.COMPLETED) -> Any:
    one.status = status
    one.result = {"done": one.id}
    one.ended_at = time.time()
    return one


async def depth(store: ClusterStore, model: str = "echo", level: str = "1") -> tuple[int, int]:
    values = await store.call("depth")
    for index in range(0, len(values), 4):
        if values[index].decode() == model and values[index + 1].decode() == level:
            return int(values[index + 2]), int(values[index + 3])
    return 0, 0


def test_a_grouped_submit_answers_each_submission(redis_server: RedisServer) -> None:
    async def body(store: ClusterStore) -> None:
        assert await submit(store, job("z", idempotency_key="k0")) == (1, "z")
        bad = submit_args(job("bad"))
        bad = (*bad[:2], 7, *bad[3:])  # no such priority: refused before anything is written
        calls = [
            store.batched("submit", *submit_args(job("a", idempotency_key="k1"))),
            store.batched("submit", *submit_args(job("b", idempotency_key="k1"))),  # same key, same call
            store.batched("submit", *submit_args(job("c", idempotency_key="k0"))),  # an earlier job's key
            store.batched("submit", *bad),
            store.batched("submit", *submit_args(job("d"), "h", "h")),  # nothing waits before it? "a"
        ]
        before = store.round_trips
        answers = await asyncio.gather(*calls, return_exceptions=True)
        assert store.round_trips == before + 1  # one FCALL for the five
        assert [list(one) for one in answers[:3]] == [[1, b"a"], [0, b"a"], [0, b"z"]]
        assert isinstance(answers[3], JournalError) and "bad arguments" in str(answers[3])
        assert list(answers[4]) == [1, b"d"]  # "z" and "a" wait before it: queued, not held at once
        assert await store.redis.exists(f"{store.prefix}job:bad") == 0
        assert await store.redis.zscore(f"{store.prefix}jobs", "bad") is None
        taken = await claim(store, "h", {"echo": 10})
        assert [one.id for one in taken] == ["z", "a", "d"]  # "b" and "c" were never queued

    run(redis_server, body)


def test_a_grouped_finish_writes_only_the_ends_of_jobs_still_held(redis_server: RedisServer) -> None:
    async def body(store: ClusterStore) -> None:
        jobs = [job(name) for name in ("j1", "j2", "j3")]
        for one in jobs:
            answer = await store.call("submit", *submit_args(one, "h", "h"))
            assert list(answer)[2:] == [f"{store.prefix}q:echo:1".encode(), b""]  # held here at once
        assert await depth(store) == (0, 3)
        assert list(await store.call("cancel", "j2", repr(time.time()), RETENTION)) == [1, b"h"]
        before = store.round_trips
        written = await asyncio.gather(
            *(store.batched("finish", *finish_args(ended(one), "h", RETENTION), retry=True) for one in jobs)
        )
        assert store.round_trips == before + 1 and written == [1, 0, 1]
        views = [await hash_of(store, one.id) for one in jobs]
        assert [view["status"] for view in views] == ["completed", "cancelled", "completed"]
        assert views[0]["result"] == {"done": "j1"} and views[1]["result"] is None
        assert not await store.redis.hexists(f"{store.prefix}job:j1", "error")  # empty fields: not written
        assert await depth(store) == (0, 0)  # no hold left
        assert await store.redis.xlen(f"{store.prefix}q:echo:1") == 0  # no stream entry ever made

    run(redis_server, body)


def test_a_grouped_call_to_an_unknown_function_fails_every_call(redis_server: RedisServer) -> None:
    async def body(store: ClusterStore) -> None:
        calls = [store.batched("nope", "x"), store.batched("nope", "y")]
        for outcome in await asyncio.gather(*calls, return_exceptions=True):
            assert isinstance(outcome, JournalError) and "no such grouped function" in str(outcome)

    run(redis_server, body)


def test_a_direct_hold_is_refreshed_reclaimed_when_idle_and_at_a_restart(redis_server: RedisServer) -> None:
    async def body(store: ClusterStore) -> None:
        stream = f"{store.prefix}q:echo:1"
        await store.call("submit", *submit_args(job("live"), "alive", "alive"))
        await store.call("submit", *submit_args(job("dead"), "gone", "gone"))
        assert await depth(store) == (0, 2)
        pubsub = store.redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(f"{store.prefix}reclaimed")
        deadline = time.monotonic() + 10
        reclaimed = 0
        while reclaimed == 0:  # "gone" never refreshes; "alive" does, as its heartbeat would
            assert time.monotonic() < deadline, "nothing reclaimed"
            await asyncio.sleep(0.05)
            assert await store.call("refresh", "alive", stream, "", "live") in (0, 1)
            reclaimed = await store.call("reclaim", 300, repr(time.time()), 3, RETENTION, "")
        assert reclaimed == 1
        told = None
        while told is None:
            told = await asyncio.wait_for(pubsub.get_message(timeout=None), 5)
        assert told["data"] == b"dead  idle"  # no entry: a direct hold's reclaim
        await pubsub.aclose()
        assert (await hash_of(store, "live"))["status"] == "processing"
        dead = await hash_of(store, "dead")
        assert dead["status"] == "queued" and dead["attempts"] == 1 and dead["host"] is None
        assert await depth(store) == (0, 1) and await depth(store, level="rq") == (1, 0)
        assert (
            await store.call("refresh", "gone", stream, "", "dead") == 0
        )  # a late refresh takes nothing back
        # a restart of "alive" hands its direct hold back at once, with an attempt
        assert await store.call("reclaim", 0, repr(time.time()), 3, RETENTION, "alive") == 1
        assert (await hash_of(store, "live"))["status"] == "queued"
        assert await finish(store, job("live"), "alive") == 0  # its late result is dropped
        again = await claim(store, "other", {"echo": 5})
        assert sorted(one.id for one in again) == ["dead", "live"]
        assert await depth(store) == (0, 0) and await depth(store, level="rq") == (0, 2)

    run(redis_server, body)


async def finish(store: ClusterStore, one: Any, host: str) -> int:
    return int(await store.call("finish", *finish_args(ended(one), host, RETENTION)))


@pytest.mark.parametrize("priority_waiting", [True, False])
def test_a_direct_hold_only_when_nothing_waits_before_it(
    redis_server: RedisServer, priority_waiting: bool
) -> None:
    async def body(store: ClusterStore) -> None:
        if priority_waiting:
            await store.call("submit", *submit_args(job("first")))  # queued, nobody claims it
        answer = await store.call("submit", *submit_args(job("second"), "h", "h"))
        assert (len(answer) == 2) is priority_waiting
        view = await hash_of(store, "second")
        assert view["status"] == ("queued" if priority_waiting else "processing")

    run(redis_server, body)


def test_a_grouped_submit_sees_the_jobs_its_earlier_calls_queued(redis_server: RedisServer) -> None:
    async def body(store: ClusterStore) -> None:
        hosts = ["h", "h", "", "h", "h"]  # the third is queued (no room here): those after it wait behind it
        calls = [
            store.batched("submit", *submit_args(job(f"j{index}"), host, "h"))
            for index, host in enumerate(hosts)
        ]
        answers = [list(one) for one in await asyncio.gather(*calls)]
        assert [len(one) == 4 for one in answers] == [True, True, False, False, False]
        assert await depth(store) == (3, 2)
        # a call on its own after a grouped one knows nothing of it (a new model gets its streams)
        assert await submit(store, job("m", model="mlp")) == (1, "m")
        assert [one.id for one in await claim(store, "h", {"mlp": 1})] == ["m"]

    run(redis_server, body)


def test_a_grouped_finish_tells_its_ends_in_one_message(redis_server: RedisServer) -> None:
    async def body(store: ClusterStore) -> None:
        jobs = [job(name) for name in ("e1", "e2", "e3")]
        for one in jobs:
            await store.call("submit", *submit_args(one, "h", "h"))
        pubsub = store.redis.pubsub()
        await pubsub.subscribe(f"{store.prefix}ends")
        confirmed = await pubsub.get_message(timeout=5)
        assert confirmed is not None and confirmed["type"] == "subscribe"
        written = await asyncio.gather(
            *(store.batched("finish", *finish_args(ended(one), "h", RETENTION)) for one in jobs[:2])
        )
        assert written == [1, 1]
        await store.call("cancel", "e3", repr(time.time()), RETENTION)  # on its own: its own message
        heard: list[bytes] = []
        while len(heard) < 2:
            message = await pubsub.get_message(timeout=5)
            assert message is not None, heard
            heard.append(message["data"])
        assert heard == [b"e1 e2", b"e3"]
        await pubsub.aclose()

    run(redis_server, body)
