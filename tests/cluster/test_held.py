"""Held submissions in a cluster (an infer that runs where it was submitted is written with its end):
`modelsched_record` and a released `modelsched_submit` against a real redis-server, in either order;
then a daemon on a real Redis with its worker processes: a quick infer is one hash written at its
end, a long one is in Redis (held by its host, refreshed) once the hold has run out, a read or a
cancel of a held job writes it first, and a keyed infer is never held."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from scheduler import Scheduler
from scheduler.cluster.journal import RedisJournal
from scheduler.cluster.records import page_args, page_of, record_args, stream_name, submit_args
from scheduler.cluster.store import ClusterStore
from scheduler.core.jobs import Job, JobRequest, JobStatus
from scheduler.settings import ModelConfig, Settings
from tests.cluster.test_functions import RETENTION, finish, hash_of, job, run
from tests.support.polling import until, until_read
from tests.support.redis_server import RedisServer


def ended(one: Job, host: str) -> Job:
    one.status = JobStatus.COMPLETED
    one.started_at = one.created_at
    one.result = {"done": one.id}
    one.ended_at = time.time()
    one.worker_id = f"{host}-w0"
    return one


async def record(store: ClusterStore, one: Job, host: str) -> int:
    return int(await store.call("record", *record_args(one, host, RETENTION)))


async def release(store: ClusterStore, one: Job, host: str) -> list[Any]:
    answer = await store.call("submit", *submit_args(one, host, host, released=True))
    return [int(answer[0]), *(value.decode() for value in answer[1:])]


async def raw(store: ClusterStore, job_id: str) -> dict[bytes, bytes]:
    return dict(await store.redis.hgetall(f"{store.prefix}job:{job_id}"))


def test_record_writes_a_held_job_with_its_end_as_one_hash(redis_server: RedisServer) -> None:
    async def body(store: ClusterStore) -> None:
        listener = store.redis.pubsub()
        await listener.subscribe(f"{store.prefix}ends")
        await listener.get_message(timeout=1)  # (the subscription's confirmation)
        one = ended(job("h1", timeout_s=30.0), "a")
        assert await record(store, one, "a") == 1
        view = await hash_of(store, "h1")
        assert view["status"] == "completed" and view["result"] == {"done": "h1"} and view["host"] == "a"
        assert view["model"] == "echo" and view["timeout_s"] == 30.0 and view["worker"] == "a-w0"
        fields = await raw(store, "h1")
        assert b"stream" not in fields and b"entry" not in fields  # never queued, never held
        assert b"inputs" not in fields and b"cost_usd" not in fields  # never read again; 0: missing
        assert await store.redis.ttl(f"{store.prefix}job:h1") > 0  # kept for result_retention_s
        assert await store.redis.zscore(f"{store.prefix}deadlines", "h1") is None
        _, listed = page_of(await store.call("jobs", *page_args(None, None, None, None, 10, False)))
        assert [found.id for found, _ in listed] == ["h1"]  # in the job list
        told = await listener.get_message(timeout=2)
        assert told is not None and told["data"] == b"h1"
        # written once: the same end again, or another host's, is not written
        assert await record(store, ended(job("h1"), "a"), "a") == 0
        assert await record(store, ended(job("h1"), "b"), "b") == 0
        await listener.aclose()

    run(redis_server, body)


def test_a_released_submission_and_the_end_in_either_order(redis_server: RedisServer) -> None:
    async def body(store: ClusterStore) -> None:
        stream = stream_name(store.prefix, "echo", 1).decode()
        held = f"{stream}:held"
        # released first (the hold ran out): held by its host, no stream entry; the end finishes it
        one = job("r1")
        assert await release(store, one, "a") == [1, "r1", stream, ""]
        view = await hash_of(store, "r1")
        assert view["status"] == "processing" and view["host"] == "a"
        assert await store.redis.zscore(held, "r1") is not None
        assert await release(store, one, "a") == [2, "r1"]  # a retried release changes nothing
        assert await record(store, ended(one, "b"), "b") == 0  # not b's
        assert await record(store, ended(one, "a"), "a") == 1
        assert (await hash_of(store, "r1"))["status"] == "completed"
        assert await store.redis.zscore(held, "r1") is None
        # the end first (a release's answer lost and sent again after it): the release writes nothing
        two = job("r2")
        assert await record(store, ended(two, "a"), "a") == 1
        assert await release(store, two, "a") == [2, "r2"]
        assert (await hash_of(store, "r2"))["status"] == "completed"
        assert await store.redis.zscore(held, "r2") is None
        # released, then cancelled by a client: the host's end comes too late
        three = job("r3")
        await release(store, three, "a")
        cancelled = await store.call("cancel", "r3", repr(time.time()), RETENTION)
        assert int(cancelled[0]) == 1
        assert await record(store, ended(three, "a"), "a") == 0
        assert await finish(store, three, "a") == 0
        assert (await hash_of(store, "r3"))["status"] == "cancelled"
        # a released submission is held by its host even when jobs of its model wait in the queue
        await store.call("submit", *submit_args(job("queued")))
        assert (await release(store, job("r4"), "a"))[:2] == [1, "r4"]
        assert (await hash_of(store, "r4"))["status"] == "processing"

    run(redis_server, body)


def held_settings(server: RedisServer) -> Settings:
    return Settings(
        cluster_url=server.url,
        cluster_name="t",
        cluster_host="a",
        cpu_workers=1,
        journal_path="",
        render_enabled=False,
        models=[ModelConfig(name="echo", adapter="echo"), ModelConfig(name="sleep", adapter="sleep")],
        cluster_heartbeat_s=30.0,  # no tick while the test runs: nothing says a job may wait
        reclaim_idle_s=90.0,
        shutdown_grace_s=2.0,
    )


@pytest.mark.timeout(120)
def test_an_infer_run_here_is_written_with_its_end(
    make_scheduler: Callable[..., Scheduler], redis_server: RedisServer
) -> None:
    async def main() -> None:
        scheduler = make_scheduler(held_settings(redis_server))
        await scheduler.start()
        await scheduler.wait_ready(60)
        cluster = scheduler.cluster
        assert cluster is not None
        store, backend, journal = cluster.store, cluster.backend, cluster.journal
        prefix = store.prefix

        async def fields(job_id: str) -> dict[bytes, bytes]:
            return dict(await store.redis.hgetall(f"{prefix}job:{job_id}"))

        try:
            # cold models: their first jobs go through the queue (no room to run one at once)
            for model in ("echo", "sleep"):
                warming = await scheduler.schedule_job(JobRequest(model=model, inputs={"ms": 1}), waited=True)
                assert not journal.is_held(warming) and b"stream" in await fields(warming)
                assert (await scheduler.wait_for(warming, 30))["status"] == "completed"
            await until(
                lambda: backend.none_waiting >= {"echo", "sleep"},
                timeout=10,
                message="a claim found none waiting",
            )
            # a quick infer: one hash, written with its end (no stream, no hold)
            before = set(scheduler.table.jobs)
            assert await scheduler.infer("echo", {"x": 1}, timeout=20) == {"x": 1}
            recorded = set(scheduler.table.jobs) - before
            assert len(recorded) == 1
            written = await fields(recorded.pop())
            assert written[b"status"] == b"completed" and written[b"host"] == b"a"
            assert b"stream" not in written
            # a long infer: in Redis, held by this host, once the hold has run out; refreshed as a hold
            long_run = asyncio.ensure_future(scheduler.infer("sleep", {"ms": 1500}, timeout=20))
            known = before | {written[b"id"].decode()}
            await until(lambda: len(scheduler.table.jobs) > len(known))
            long_id = next(job_id for job_id in scheduler.table.jobs if job_id not in known)
            assert journal.is_held(long_id)
            written_while_running = await until_read(
                lambda: fields(long_id), bool, timeout=10, message="the hold ran out: written"
            )
            assert (
                written_while_running[b"status"] == b"processing" and written_while_running[b"host"] == b"a"
            )
            assert backend.held[long_id] == (stream_name(prefix, "sleep", 1), b"")
            assert await long_run == {"slept_ms": 1500}
            assert (await fields(long_id))[b"status"] == b"completed"
            assert long_id not in backend.held and not journal.holds.held and not journal.holds.released
            # a held job read or cancelled here is written first: the cancel ends it
            cancelled_id = await scheduler.schedule_job(
                JobRequest(model="sleep", inputs={"ms": 3000}), waited=True
            )
            assert journal.is_held(cancelled_id)
            view = await scheduler.cancel_job(cancelled_id)
            assert view["status"] == "cancelled", view
            assert (await fields(cancelled_id))[b"status"] == b"cancelled"
            await until(lambda: scheduler.table.jobs[cancelled_id].ended, timeout=10, message="dropped here")
            read_id = await scheduler.schedule_job(JobRequest(model="sleep", inputs={"ms": 500}), waited=True)
            assert journal.is_held(read_id)
            assert (await scheduler.get_job_status(read_id))["status"] in {"queued", "processing"}
            assert not journal.is_held(read_id) and (await fields(read_id))[b"host"] == b"a"
            assert (await scheduler.wait_for(read_id, 20))["result"] == {"slept_ms": 500}
            # a keyed infer is never held (the key is Redis's to check), nor one not waited for
            keyed = await scheduler.schedule_job(
                JobRequest(model="echo", inputs=3, idempotency_key="k"), waited=True
            )
            plain = await scheduler.schedule_job(JobRequest(model="echo", inputs=4))
            assert not journal.is_held(keyed) and not journal.is_held(plain)
            assert (await fields(keyed))[b"idem"] == b"k" and b"stream" in await fields(plain)
        finally:
            await scheduler.stop()

    asyncio.run(main())


def test_a_closing_journal_writes_what_it_still_holds(redis_server: RedisServer) -> None:
    async def body(store: ClusterStore) -> None:
        journal = RedisJournal(ClusterStore(redis_server.url, "test"), "a", RETENTION, 3)
        released: list[tuple[str, bytes]] = []
        journal.on_released = lambda one, stream: released.append((one.id, stream))
        await journal.open(lambda ids: None)
        running, quick = job("c1"), job("c2")
        journal.record_submitted_held(running)
        journal.record_submitted_held(quick)
        await journal.record_ended(ended(quick, "a"))  # ended while held: one hash, nothing released
        assert (await hash_of(store, "c2"))["status"] == "completed" and journal.held_ends == 1
        assert await store.redis.exists(f"{store.prefix}job:c1") == 0  # held: not in Redis
        await journal.close()
        view = await hash_of(store, "c1")  # written as held by this host: the stop hands it back
        assert view["status"] == "processing" and view["host"] == "a"
        stream = stream_name(store.prefix, "echo", 1)
        assert released == [("c1", stream)]
        assert await store.redis.zscore(stream + b":held", "c1") is not None

    run(redis_server, body)
