#!/usr/bin/env python
"""The cluster chaos run: one Redis, three daemons, one daemon's main process SIGKILLed mid-run,
then Redis itself SIGKILLed and restarted on its data.

    .venv/bin/python scripts/chaos_cluster.py                  # 600 jobs
    .venv/bin/python scripts/chaos_cluster.py --jobs 300 --json out.json

It starts a redis-server (unix socket, append-only file, fsync always) and three `modelsched serve`
daemons on loopback ports joined to it (`--cluster`), each with one CPU worker. Jobs (`sleep` of a
few ms, `mlp` of 256 floats, one worker-killing `{"exit": 1}`) are submitted round-robin over the
three fronts; every third carries an idempotency key, and some keyed ones are sent twice (the same
id must come back); a third are infers (`scripts/chaos_cluster_jobs.py`), acknowledged by their
answer. Each acknowledged job is long-polled (`GET /jobs/{id}?wait=5`) on a daemon other than the
one it was submitted to. When a third is acknowledged, one daemon is frozen (SIGSTOP), the
jobs it holds are read from Redis, and it is SIGKILLed with its workers. Then a second batch is
submitted, Redis is SIGKILLed while those jobs run and restarted on its append-only file.

Figures: acknowledged; lost (acknowledged, not ended or gone at the end; an infer whose answered end no
other daemon read); duplicate_ends (an end published twice on the cluster's `ends` channel while Redis
lived, or an end a client saw that later changed); keys_split (one idempotency key answered with two
ids); reclaimed_not_held (a job taken back from a dead host that the killed host did not hold); the
poison job's end; wake_late (long polls that returned more than 1 s after the job's end) and the slowest
wake; this client's own longest event-loop delay and Redis's longest stalls (its latency monitor), which
a late wake may come from.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis.asyncio as aioredis

if __package__ in (None, ""):  # run as a file: the repository's root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.chaos import Daemon, _end_of, free_port, wait_ready
from scripts.chaos_cluster_jobs import Tracked, make_jobs, written_with_end
from scripts.chaos_measures import loop_lag, redis_stalls
from scripts.redis_server import RedisServer

CLUSTER = "chaos"
PREFIX = f"ms:{CLUSTER}:"
ENDED = {"completed", "error", "cancelled"}
RETRY_STATUS = {429, 502, 503, 504}


class ClusterChaos:
    def __init__(self, daemons: list[Daemon], redis: RedisServer, deadline_s: float) -> None:
        self.daemons = daemons
        self.redis = redis
        self.deadline = time.monotonic() + deadline_s
        self.dead: set[int] = set()
        self.held_by_killed: set[str] = set()
        self.reclaimed: dict[str, str] = {}
        self.end_counts: Counter[str] = Counter()
        self.acknowledged = 0
        self.kill_at = 0
        self.killed = asyncio.Event()
        self.clients = [
            httpx.AsyncClient(  # a connection per request in flight: no poll waits for one (a late "wake")
                base_url=f"http://127.0.0.1:{daemon.port}",
                timeout=30.0,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            )
            for daemon in daemons
        ]
        self.rng = random.Random(3)
        self.began = time.time()
        self.killed_at = 0.0
        self.late: list[str] = []
        self.began = time.time()
        self.killed_at = 0.0

    def live_fronts(self, avoid: int | None = None) -> list[int]:
        fronts = [index for index in range(len(self.daemons)) if index not in self.dead]
        others = [index for index in fronts if index != avoid]
        return others or fronts

    async def submit(self, job: Tracked) -> None:
        body: dict[str, Any] = {"model": job.model, "inputs": job.inputs}
        if job.key:
            body["idempotency_key"] = job.key
        front = job.front
        for attempt in range(200):
            if time.monotonic() > self.deadline:
                return
            if front in self.dead:  # its front died before it was sent: another front takes it
                front = self.rng.choice(self.live_fronts())
            try:
                if job.infer:  # acknowledged by its answer, its end (200)
                    response = await self.clients[front].post(
                        f"/models/{job.model}/infer", json={"inputs": job.inputs}
                    )
                else:
                    response = await self.clients[front].post("/jobs", json=body)
            except httpx.HTTPError:
                if job.key is None:
                    return  # without a key a retry could make a second job: not counted
                await asyncio.sleep(0.05 * (1 + attempt % 5))
                continue
            if response.status_code == (200 if job.infer else 202):
                job.ids.add(response.json()["job_id"])
                if job.infer:
                    job.answered = response.json()
                if job.job_id is None:
                    job.job_id = response.json()["job_id"]
                    job.front = front
                    self.acknowledged += 1
                    if self.acknowledged == self.kill_at:
                        asyncio.get_running_loop().create_task(self.kill_one())
                if job.resend and len(job.ids) < 2 and attempt < 100:
                    job.resend = False
                    front = (front + 1) % len(self.daemons)
                    continue  # the same key again on another front: the same id must come back
                return
            if response.status_code not in RETRY_STATUS or (job.infer and response.status_code == 504):
                raise RuntimeError(  # (an infer's 504: its wait ran out, the job goes on: not expected here)
                    f"job {job.index}: {response.request.url.path} answered {response.status_code}: "
                    f"{response.text}"
                )
            await asyncio.sleep(0.05 * (1 + attempt % 5))

    async def poll(self, job: Tracked) -> None:
        while job.job_id is not None and time.monotonic() < self.deadline:
            front = self.rng.choice(self.live_fronts(avoid=job.front))
            asked = time.time()
            try:
                response = await self.clients[front].get(f"/jobs/{job.job_id}", params={"wait": 5})
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
                continue
            if response.status_code != 200:
                await asyncio.sleep(0.1)  # 503 while Redis is away; a 404 would be a loss: ask again
                continue
            view = response.json()
            self.observe(job, view)
            if view["status"] in ENDED:
                if view.get("ended_at") and view["ended_at"] > asked:  # it ended while this poll waited
                    job.wake_s.append(time.time() - view["ended_at"])
                    if job.wake_s[-1] > 1.0:
                        self.late.append(
                            f"{job.wake_s[-1]:.2f}s at +{view['ended_at'] - self.began:.2f}s on host{front} "
                            f"(ran on {view.get('host')}; the poll took {time.time() - asked:.2f}s of 5)"
                        )
                return

    def observe(self, job: Tracked, view: dict[str, Any]) -> None:
        if job.first_end is not None and _end_of(view) != _end_of(job.first_end):
            job.end_changed = True
        if job.answered is not None and view.get("status") in ENDED:  # the end its infer answered
            same = (view["status"], view.get("result")) == (job.answered["status"], job.answered["result"])
            job.confirmed = job.confirmed or same
            job.end_changed = job.end_changed or not same
        if job.first_end is None and view.get("status") in ENDED:
            job.first_end = view

    async def _held(self, victim: int) -> list[bytes]:
        """The jobs the frozen daemon holds (its pending entries, and its direct holds: the members of
        `<stream>:held` whose host it is), into `held_by_killed`."""
        self.dead.add(victim)  # no client sends it anything from now on
        client = aioredis.from_url(self.redis.url)
        try:
            models = list(await client.smembers(PREFIX + "models"))
            for model in models:
                for level in ("rq", "0", "1", "2"):
                    stream = PREFIX + (
                        f"rq:{model.decode()}" if level == "rq" else f"q:{model.decode()}:{level}"
                    )
                    for entry in await client.xpending_range(
                        stream, "hosts", "-", "+", 10_000, f"host{victim}"
                    ):
                        found = await client.xrange(stream, entry["message_id"], entry["message_id"])
                        if found:
                            self.held_by_killed.add(found[0][1][b"job"].decode())
                    for job_id in await client.zrange(stream + ":held", 0, -1):  # run where submitted
                        if (
                            await client.hget(PREFIX + "job:" + job_id.decode(), "host")
                            == f"host{victim}".encode()
                        ):
                            self.held_by_killed.add(job_id.decode())
        finally:
            await client.aclose()
        return models

    async def kill_one(self, victim: int = 1) -> None:
        """Freeze the daemon, read what it holds, SIGKILL it and its workers."""
        daemon = self.daemons[victim]
        workers = daemon.worker_pids()
        assert daemon.pid is not None
        models: list[bytes] = []
        for _ in range(40):  # freeze it at a moment it holds jobs (else thaw it and try again)
            os.kill(daemon.pid, signal.SIGSTOP)
            self.killed_at = time.time()
            await asyncio.sleep(0.3)  # what it sent before it froze reaches Redis first
            models = await self._held(victim)
            if self.held_by_killed:
                break
            os.kill(daemon.pid, signal.SIGCONT)
            await asyncio.sleep(0.05)
        print(f"held by host{victim} at its kill: {len(self.held_by_killed)} ({len(models)} models)")
        daemon.kill()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError, psutil.Error):
                os.kill(pid, signal.SIGKILL)
        self.killed.set()

    async def listen(self, stop: asyncio.Event) -> None:
        """Count the ends and reclaims published (while Redis lives)."""
        client = aioredis.from_url(self.redis.url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(PREFIX + "ends", PREFIX + "reclaimed")
        try:
            while not stop.is_set():
                message = await pubsub.get_message(timeout=0.2)
                if message is None:
                    continue
                data = message["data"].decode()
                if message["channel"] == (PREFIX + "ends").encode():
                    for job_id in data.split(" "):  # (a grouped call's ends come in one message)
                        self.end_counts[job_id] += 1
                else:
                    job_id, _, why = data.partition(" ")
                    self.reclaimed[job_id] = why
        finally:
            await pubsub.aclose()
            await client.aclose()

    async def run_batch(self, jobs: list[Tracked], concurrency: int) -> None:
        queue = list(reversed(jobs))
        polls: list[asyncio.Task[None]] = []

        async def submitter() -> None:
            while queue:
                job = queue.pop()
                await self.submit(job)
                if job.job_id is not None:
                    polls.append(asyncio.create_task(self.poll(job)))

        await asyncio.gather(*(submitter() for _ in range(concurrency)))
        await asyncio.gather(*polls)

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


async def _run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    started = time.monotonic()
    run_id = f"{args.seed}-{int(time.time())}"
    redis = RedisServer(work)
    redis.start()
    daemons = []
    try:
        for index in range(3):
            folder = work / f"host{index}"
            folder.mkdir()
            env = {
                "MODELSCHED_CLUSTER_URL": redis.url,
                "MODELSCHED_CLUSTER_NAME": CLUSTER,
                "MODELSCHED_CLUSTER_HOST": f"host{index}",
                "MODELSCHED_CLUSTER_HEARTBEAT_S": "0.3",
                "MODELSCHED_RECLAIM_IDLE_S": "1.5",
                "MODELSCHED_COLD_CLAIM_DELAY_MS": "100",
                "MODELSCHED_MAX_ATTEMPTS": "3",
            }
            daemons.append(Daemon(folder, free_port(), 1, env))
        for daemon in daemons:
            daemon.start()
        chaos = ClusterChaos(daemons, redis, args.deadline)
        for daemon, client in zip(daemons, chaos.clients, strict=True):
            await wait_ready(client, daemon, 180)
        ready_s = time.monotonic() - started
        stop = asyncio.Event()
        listener = asyncio.create_task(chaos.listen(stop))
        lag = asyncio.create_task(loop_lag(stop))  # this client's own delays (a late wake may be its)
        await redis_stalls(redis, threshold_ms=100)
        first = make_jobs(args.jobs, args.seed, run_id)
        chaos.kill_at = max(1, args.jobs // 3)
        phase_began = time.monotonic()
        await chaos.run_batch(first, args.concurrency)
        phase1_s = time.monotonic() - phase_began
        stop.set()
        await listener
        client_lag_max_s = await lag
        stalls = await redis_stalls(redis)
        # Redis SIGKILLed while a second batch runs, restarted on its append-only file
        second = make_jobs(args.jobs // 10, args.seed, run_id, start=args.jobs, poison=False)
        for job in second:
            job.inputs = {"ms": 200} if job.model == "sleep" else job.inputs
        for job in second:
            await chaos.submit(job)
        redis.kill()
        await asyncio.sleep(0.5)
        redis.start()
        await asyncio.gather(*(chaos.poll(job) for job in second if job.job_id is not None))
        everything = first + second
        infers_held = await written_with_end(redis.url, PREFIX, [job for job in everything if job.infer])
        acknowledged = [job for job in everything if job.job_id is not None]
        poison = next(job for job in first if job.poison)
        innocent_reruns = [
            job_id
            for job_id, why in chaos.reclaimed.items()
            if why == "idle" and job_id not in chaos.held_by_killed
        ]
        wakes = [wake for job in first for wake in job.wake_s]
        figures = {
            "jobs": len(everything),
            "acknowledged": len(acknowledged),
            "lost": sum(
                1 for job in acknowledged if job.first_end is None or (job.infer and not job.confirmed)
            ),
            "infers_acknowledged": sum(1 for job in acknowledged if job.infer),
            "infers_written_with_end": infers_held,  # (held back: the rest ran elsewhere or queued)
            "duplicate_ends": sum(1 for count in chaos.end_counts.values() if count > 1)
            + sum(1 for job in acknowledged if job.end_changed),
            "keys_split": sum(1 for job in everything if len(job.ids) > 1),
            "held_by_killed": len(chaos.held_by_killed),
            "reclaimed": len(chaos.reclaimed),
            "reclaimed_not_held": len(innocent_reruns),
            "poison_status": (poison.first_end or {}).get("status"),
            "poison_error_kind": (poison.first_end or {}).get("error_kind"),
            "completed": sum(1 for job in acknowledged if (job.first_end or {}).get("status") == "completed"),
            "not_completed": [  # (the poison job aside) what ended otherwise, and why
                f"{job.job_id}: {end.get('status')} {end.get('error_kind')} {end.get('error')}"
                for job in acknowledged
                if not job.poison and (end := job.first_end or {}).get("status") not in (None, "completed")
            ][:10],
            "second_batch_completed": sum(
                1 for job in second if (job.first_end or {}).get("status") == "completed"
            ),
            "second_batch_acknowledged": sum(1 for job in second if job.job_id is not None),
            "wakes_measured": len(wakes),
            "wake_late": sum(1 for wake in wakes if wake > 1.0),
            "wake_max_s": round(max(wakes, default=0.0), 3),
            "wake_median_s": round(sorted(wakes)[len(wakes) // 2], 3) if wakes else None,
            "late_wakes": chaos.late[:10],
            "client_loop_lag_max_s": round(client_lag_max_s, 3),
            "redis_stalls_max_ms": stalls,
            "killed_at_s": round(chaos.killed_at - chaos.began, 2),
            "ready_s": round(ready_s, 1),
            "phase1_s": round(phase1_s, 1),
            "total_s": round(time.monotonic() - started, 1),
        }
        await chaos.close()
        return figures
    finally:
        for daemon in daemons:
            daemon.stop(20)
        redis.stop()


def run_cluster_chaos(
    jobs: int = 600, concurrency: int = 24, seed: int = 5, deadline: float = 240.0, folder: str | None = None
) -> dict[str, Any]:
    args = argparse.Namespace(jobs=jobs, concurrency=concurrency, seed=seed, deadline=deadline)
    with contextlib.ExitStack() as stack:
        work = (
            Path(folder) if folder else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cc-")))
        )
        return asyncio.run(_run(args, work))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--deadline", type=float, default=240.0)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    figures = run_cluster_chaos(args.jobs, args.concurrency, args.seed, args.deadline)
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
