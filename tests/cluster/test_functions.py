"""The cluster's Redis functions against a real redis-server: idempotency, strict priority across
models, cancel of a queued and of a running job, reclaim after idle, refresh keeping a live host's
jobs, poison at max_attempts, the deadline of a job nobody claims, exactly one end record."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from scheduler.cluster.records import claimed_jobs, finish_args, page_args, page_of, submit_args, view_of
from scheduler.cluster.store import ClusterStore
from scheduler.core.jobs import Job, JobStatus, Priority
from tests.support.redis_server import RedisServer

RETENTION = 60


def job(job_id: str, model: str = "echo", priority: Priority = Priority.NORMAL, **fields: Any) -> Job:
    return Job(id=job_id, model=model, inputs={"n": job_id}, priority=priority, **fields)


def run(server: RedisServer, body: Callable[[ClusterStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = ClusterStore(server.url, "test")
        await store.open()
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


async def submit(store: ClusterStore, one: Job) -> tuple[int, str]:
    created, job_id = await store.call("submit", *submit_args(one))
    return int(created), job_id.decode()


async def claim(store: ClusterStore, host: str, rooms: dict[str, int], total: int = 100) -> list[Job]:
    args: list[Any] = []
    for model, room in rooms.items():
        args += [model, room, 0]
    now = time.time()
    return claimed_jobs(await store.call("claim", host, repr(now), int(now * 1000), total, 0, *args))


async def hash_of(store: ClusterStore, job_id: str) -> dict[str, Any]:
    return view_of(await store.redis.hgetall(f"{store.prefix}job:{job_id}"))


async def finish(store: ClusterStore, one: Job, host: str, status: JobStatus = JobStatus.COMPLETED) -> int:
    one.status = status
    one.result = {"done": one.id}
    one.ended_at = time.time()
    return int(await store.call("finish", *finish_args(one, host, RETENTION)))


def test_idempotency_key_names_the_first_job(redis_server: RedisServer) -> None:
    async def body(store: ClusterStore) -> None:
        first = await asyncio.gather(
            submit(store, job("a", idempotency_key="k1")), submit(store, job("b", idempotency_key="k1"))
        )
        assert first == [(1, "a"), (0, "a")]
        assert (await claim(store, "h1", {"echo": 10}))[0].id == "a"
        assert await claim(store, "h1", {"echo": 10}) == []  # "b" was never queued

    run(redis_server, body)


def test_strict_priority_across_models_and_room(redis_server: RedisServer) -> None:
    async def body(store: ClusterStore) -> None:
        await submit(store, job("low-echo", "echo", Priority.LOW))
        await submit(store, job("normal-mlp", "mlp", Priority.NORMAL))
        await submit(store, job("high-echo", "echo", Priority.HIGH))
        await submit(store, job("high-mlp", "mlp", Priority.HIGH))
        taken = await claim(store, "h1", {"echo": 5, "mlp": 5}, total=3)
        assert [one.id for one in taken] == ["high-echo", "high-mlp", "normal-mlp"]
        assert taken[0].inputs == {"n": "high-echo"} and taken[0].priority is Priority.HIGH
        taken = await claim(store, "h1", {"mlp": 5})  # no room for echo: its low job stays
        assert taken == []
        assert [one.id for one in await claim(store, "h2", {"echo": 1})] == ["low-echo"]
        view = await hash_of(store, "low-echo")
        assert view["status"] == "processing" and view["host"] == "h2"

    run(redis_server, body)


def test_cancel_of_a_queued_and_of_a_running_job(redis_server: RedisServer) -> None:
    async def body(store: ClusterStore) -> None:
        await submit(store, job("queued"))
        await submit(store, job("running"))
        assert [one.id for one in await claim(store, "h1", {"echo": 1})] == ["queued"]
        # "queued" is claimed now; submit order: cancel the second before anyone claims it
        assert list(await store.call("cancel", "running", repr(time.time()), RETENTION)) == [1, b""]
        assert await claim(store, "h1", {"echo": 5}) == []  # its entry is gone
        assert list(await store.call("cancel", "queued", repr(time.time()), RETENTION)) == [1, b"h1"]
        assert list(await store.call("cancel", "queued", repr(time.time()), RETENTION)) == [0, b"cancelled"]
        assert list(await store.call("cancel", "nope", repr(time.time()), RETENTION)) == [-1, b""]
        held = job("queued")
        assert await finish(store, held, "h1") == 0  # the result after the cancel is dropped
        view = await hash_of(store, "queued")
        assert view["status"] == "cancelled" and view["result"] is None
        depth = await store.call("depth")
        assert sum(depth[2::4]) == 0 and sum(depth[3::4]) == 0  # nothing waits, nothing held

    run(redis_server, body)


def test_exactly_one_end_record(redis_server: RedisServer) -> None:
    async def body(store: ClusterStore) -> None:
        await submit(store, job("j"))
        held = (await claim(store, "h1", {"echo": 1}))[0]
        assert await finish(store, held, "h2") == 0  # not this host's
        ends = await asyncio.gather(*(finish(store, job("j"), "h1") for _ in range(5)))
        assert sorted(ends) == [0, 0, 0, 0, 1]
        view = await hash_of(store, "j")
        assert view["status"] == "completed" and view["result"] == {"done": "j"}
        assert await store.redis.ttl(f"{store.prefix}job:j") > 0  # kept for result_retention_s

    run(redis_server, body)


def test_reclaim_after_idle_and_refresh_keeps_a_live_hosts_jobs(redis_server: RedisServer) -> None:
    async def body(store: ClusterStore) -> None:
        await submit(store, job("live"))
        await submit(store, job("dead"))
        live = (await claim(store, "alive", {"echo": 1}))[0]
        await claim(store, "gone", {"echo": 1})
        stream, entry = await store.redis.hmget(f"{store.prefix}job:{live.id}", "stream", "entry")
        (dead_entry,) = await store.redis.hmget(f"{store.prefix}job:dead", "entry")
        pubsub = store.redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(f"{store.prefix}reclaimed")
        deadline = time.monotonic() + 10
        reclaimed = 0
        while reclaimed == 0:  # "gone" never refreshes; "alive" does, as its heartbeat would
            assert time.monotonic() < deadline, "nothing reclaimed"
            assert await store.call("refresh", "alive", stream, entry, "live") == 1
            reclaimed = await store.call("reclaim", 300, repr(time.time()), 3, RETENTION, "")
            await asyncio.sleep(0.05)
        assert reclaimed == 1
        # the news names the entry taken back: a host that has claimed the job again since keeps it
        told = None
        while told is None:  # None: the subscription's own confirmation, skipped
            told = await asyncio.wait_for(pubsub.get_message(timeout=None), 5)
        assert told["data"] == b"dead " + dead_entry + b" idle"
        await pubsub.aclose()
        assert (await hash_of(store, "live"))["status"] == "processing"
        dead = await hash_of(store, "dead")
        assert dead["status"] == "queued" and dead["attempts"] == 1
        again = await claim(store, "alive", {"echo": 5})
        assert [one.id for one in again] == ["dead"] and again[0].attempts == 1  # the re-queue stream
        assert await finish(store, job("live"), "alive") == 1

    run(redis_server, body)


def test_restarted_host_reclaims_its_old_jobs_and_poison_at_max_attempts(redis_server: RedisServer) -> None:
    async def body(store: ClusterStore) -> None:
        await submit(store, job("p"))
        for attempt in range(1, 3):
            assert [one.id for one in await claim(store, "h1", {"echo": 1})] == ["p"]
            assert await store.call("reclaim", 0, repr(time.time()), 3, RETENTION, "h1") == 1  # restart
            view = await hash_of(store, "p")
            assert view["status"] == "queued" and view["attempts"] == attempt
        await claim(store, "h1", {"echo": 1})
        assert await store.call("reclaim", 0, repr(time.time()), 3, RETENTION, "h1") == 1
        view = await hash_of(store, "p")
        assert view["status"] == "error" and view["error_kind"] == "poison" and view["attempts"] == 3
        assert await claim(store, "h2", {"echo": 5}) == []

    run(redis_server, body)


def test_deadline_of_a_job_nobody_claims(redis_server: RedisServer) -> None:
    async def body(store: ClusterStore) -> None:
        await submit(store, job("late", timeout_s=0.2))
        await submit(store, job("later", timeout_s=60))
        assert await store.call("expire", repr(time.time()), RETENTION, 2) == 0
        assert await store.call("expire", repr(time.time() + 1), RETENTION, 2) == 1
        view = await hash_of(store, "late")
        assert view["status"] == "error" and view["error_kind"] == "timeout"
        assert [one.id for one in await claim(store, "h1", {"echo": 5})] == ["later"]

    run(redis_server, body)


def test_job_list_pages_filters_and_forgets_expired_jobs(redis_server: RedisServer) -> None:
    async def body(store: ClusterStore) -> None:
        ids = [f"{n:032x}" for n in range(1, 8)]
        for job_id in ids:
            await submit(store, job(job_id, model="echo" if int(job_id, 16) % 2 else "mlp"))
        for taken in await claim(store, "a", {"echo": 2}):
            assert await finish(store, taken, "a") == 1
        cursor, page = page_of(await store.call("jobs", *page_args(None, None, None, None, 3, False)))
        assert cursor is None and [one.id for one, _ in page] == ids[::-1][:3]
        cursor, page = page_of(await store.call("jobs", *page_args(ids[4], ids[1], None, "echo", 10, False)))
        assert [one.id for one, _ in page] == [ids[2]]  # below ids[4], at or above ids[1], echo
        cursor, page = page_of(await store.call("jobs", *page_args(None, None, "completed", None, 10, False)))
        assert [one.id for one, _ in page] == [ids[2], ids[0]]
        _, ended = page_of(await store.call("jobs", *page_args(None, None, None, None, 10, True)))
        assert [one.id for one, _ in ended] == [ids[2], ids[0]]
        # a walk that looked at its most ids answers a cursor to page on from
        reply = await store.call("jobs", ids[6], "", "", "", 10, 0, 2)
        cursor, page = page_of(reply)
        assert cursor == ids[4] and [one.id for one, _ in page] == [ids[5], ids[4]]
        # an expired job's id leaves the index (the sweep, and a page that meets it)
        await store.redis.delete(f"{store.prefix}job:{ids[0]}", f"{store.prefix}job:{ids[1]}")
        assert await store.call("sweep", 1000) == 2
        assert await store.redis.zcard(f"{store.prefix}jobs") == 5
        await store.redis.delete(f"{store.prefix}job:{ids[6]}")
        _, page = page_of(await store.call("jobs", *page_args(None, None, None, None, 10, False)))
        assert [one.id for one, _ in page] == ids[2:6][::-1]
        assert await store.redis.zcard(f"{store.prefix}jobs") == 4

    run(redis_server, body)


def test_an_end_is_told_to_the_hosts_that_want_it_and_not_to_its_writer(redis_server: RedisServer) -> None:
    async def body(store: ClusterStore) -> None:
        heard: list[tuple[str, str]] = []
        pubsub = store.redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(*(f"{store.prefix}ends:{host}" for host in ("a", "b", "c")))

        async def drain(count: int) -> None:
            while len(heard) < count:
                message = await asyncio.wait_for(pubsub.get_message(timeout=None), 5)
                if message is not None and message["type"] == "message":
                    heard.append((message["channel"].decode().rsplit(":", 1)[1], message["data"].decode()))

        for job_id in ("j1", "j2", "j3"):
            await store.call("submit", *submit_args(job(job_id), "", "b"))  # submitted on front b
        taken = {one.id: one for one in await claim(store, "a", {"echo": 3})}  # held by a
        assert (await store.call("watch", "j2", "c"))[:2] == [b"id", b"j2"]  # c reads j2 while it runs
        assert await store.call("watch", "nope", "c") == []
        assert await finish(store, taken["j1"], "a") == 1  # a wrote it: b is told, a is not
        assert await finish(store, taken["j2"], "a") == 1  # b and c are told
        await store.call("cancel", "j3", repr(time.time()), RETENTION)  # a (its holder) and b are told
        await drain(5)
        assert sorted(heard) == sorted([("b", "j1"), ("b", "j2"), ("c", "j2"), ("a", "j3"), ("b", "j3")])
        await store.call("watch", "j1", "c")  # an ended job: watching it adds no watcher
        assert await store.redis.hget(f"{store.prefix}job:j1", "watchers") == b"b"
        await pubsub.aclose()

    run(redis_server, body)
