#!/usr/bin/env python
"""The cluster benchmark: what running on Redis costs per job, against the single host on SQLite.

    .venv/bin/python scripts/bench_cluster.py                    # echo and mlp, API and REST
    .venv/bin/python scripts/bench_cluster.py --models echo --seconds 5 --json out.json
    .venv/bin/python scripts/bench_cluster.py --models echo --no-rest --rounds 3   # API only, 3 rounds
    .venv/bin/python scripts/bench_cluster.py --models echo --no-rest --call infer  # clients call infer

Three set-ups, each with one CPU worker per daemon: `sqlite` (one daemon, its SQLite journal), `redis-1`
(one daemon on a Redis: Redis is its queue and journal), `redis-2` (two daemons on one Redis, the load
split over both fronts). The Python API figures are jobs/s of 64 clients in a closed loop (submit, wait
for the end) in one process (for `redis-2`, two schedulers in that process); the REST figures are `wrk`
at 64 connections on `POST /models/{model}/infer` (for `redis-2`, 32 on each daemon at once). With
`--rounds N` the API runs of all set-ups are made N times in turn and the median is reported, with each
round's ratio (a shared machine's load moves between rounds), and the CPU µs per job of the main process
(with the clients, as on SQLite) and of Redis, and the µs per job Redis spent in its functions (`FCALL`:
a grouped one runs a turn's calls). At 1 client, the median latency of a job, and what Redis adds to it.
On this 2-core machine the point is the per-job overhead, not scaling: two daemons share the same cores.
Redis runs on a unix socket with `appendfsync always` (the durability promise: every write on disk
before its answer, as SQLite's `synchronous=FULL`); `redis-1-everysec` is one daemon on a Redis with
`appendfsync everysec`, whose promise matches the SQLite journal's default `NORMAL` (a crash of the
process loses nothing; a power loss may lose the last second).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.bench import ECHO_INPUT, MLP_ROW  # noqa: E402 - after the path is set
from scripts.bench_rest import WRK, lua_script, parse_wrk, wrk_report  # noqa: E402
from scripts.chaos import Daemon, free_port  # noqa: E402
from scripts.redis_server import RedisServer  # noqa: E402

INPUTS: dict[str, Any] = {"echo": ECHO_INPUT, "mlp": MLP_ROW}
SETUPS = ("sqlite", "redis-1", "redis-2", "redis-1-everysec")


def settings_for(setup: str, model: str, redis_url: str, host: str, folder: Path) -> Any:
    from scheduler.settings import ModelConfig, Settings

    return Settings(
        journal_path=str(folder / f"{host}.db") if setup == "sqlite" else "",
        cluster_url="" if setup == "sqlite" else redis_url,
        cluster_name=f"bench-{int(time.time() * 1000)}",
        cluster_host=host,
        cpu_workers=1,
        torch_threads=1,
        log_level="warning",
        render_enabled=False,
        models=[ModelConfig(name=model, adapter=model)],
    )


def cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user and system) of this process (its threads, not its children), or of `pid`."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def api_run(
    setup: str,
    model: str,
    clients: int,
    seconds: float,
    redis_url: str,
    folder: Path,
    redis_pid: int | None = None,
    call: str = "wait_for",
) -> dict[str, float]:
    """Jobs/s of `clients` closed-loop clients through the Python API (one scheduler, or two), and the
    CPU µs per job of this process (the schedulers' main processes and the clients, as on SQLite) and
    of Redis (`redis_pid`) while they ran. `call`: each job as `schedule_job` then `wait_for`
    (acknowledged once durable, then waited for), or as one `infer` (submit and wait in one call)."""
    from scheduler import JobRequest, Scheduler

    hosts = ["a", "b"] if setup == "redis-2" else ["a"]
    schedulers = [
        Scheduler(
            settings_for(setup, model, redis_url, host, folder),
            environ={**os.environ, "MODELSCHED_FORCE_CPU": "1"},
        )
        for host in hosts
    ]
    for scheduler in schedulers:
        await scheduler.start()
        await scheduler.wait_ready(120)
    try:
        for scheduler in schedulers:
            await scheduler.infer(model, INPUTS[model], timeout=60)
        done = 0
        stop_at = time.perf_counter() + seconds

        async def client(index: int) -> None:
            nonlocal done
            scheduler = schedulers[index % len(schedulers)]
            while time.perf_counter() < stop_at:
                if call == "infer":
                    await scheduler.infer(model, INPUTS[model], timeout=60)
                else:
                    job_id = await scheduler.schedule_job(JobRequest(model=model, inputs=INPUTS[model]))
                    await scheduler.wait_for(job_id, 60)
                done += 1

        started = time.perf_counter()
        main_before, redis_before = cpu_s(), cpu_s(redis_pid) if redis_pid else 0.0
        await asyncio.gather(*(client(index) for index in range(clients)))
        figures = {"jobs_per_s": done / (time.perf_counter() - started)}
        figures["main_cpu_us_per_job"] = (cpu_s() - main_before) / max(done, 1) * 1e6
        journals = [scheduler.cluster.journal for scheduler in schedulers if scheduler.cluster is not None]
        if journals:  # the share of jobs whose submission was written with the end (infers run at once)
            figures["held_share"] = sum(journal.held_ends for journal in journals) / max(done, 1)
        if redis_pid:
            figures["redis_cpu_us_per_job"] = (cpu_s(redis_pid) - redis_before) / max(done, 1) * 1e6
        return figures
    finally:
        for scheduler in schedulers:
            await scheduler.stop()


async def api_latency(setup: str, model: str, jobs: int, redis_url: str, folder: Path) -> float:
    """Median ms of one job (submit, wait for its end) at 1 client, one daemon."""
    from scheduler import Scheduler

    scheduler = Scheduler(
        settings_for("redis-1" if setup == "redis-2" else setup, model, redis_url, "a", folder),
        environ={**os.environ, "MODELSCHED_FORCE_CPU": "1"},
    )
    async with scheduler:
        await scheduler.wait_ready(120)
        await scheduler.infer(model, INPUTS[model], timeout=60)
        times = []
        for _ in range(jobs):
            started = time.perf_counter()
            await scheduler.infer(model, INPUTS[model], timeout=60)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


@contextlib.contextmanager
def daemons(setup: str, model: str, redis_url: str, folder: Path) -> Iterator[list[str]]:
    count = 2 if setup == "redis-2" else 1
    started: list[Daemon] = []
    try:
        for index in range(count):
            home = folder / f"{setup}-{model}-{index}"
            home.mkdir(parents=True, exist_ok=True)
            env = {"MODELSCHED_LOG_LEVEL": "warning", "HF_HUB_OFFLINE": "1", "MODELSCHED_TORCH_THREADS": "1"}
            if setup != "sqlite":
                env |= {
                    "MODELSCHED_CLUSTER_URL": redis_url,
                    "MODELSCHED_CLUSTER_NAME": f"bench-{model}",
                    "MODELSCHED_CLUSTER_HOST": f"h{index}",
                }
            daemon = Daemon(home, free_port(), 1, env)
            daemon.start()
            started.append(daemon)
        urls = [f"http://127.0.0.1:{daemon.port}" for daemon in started]
        for daemon, url in zip(started, urls, strict=True):
            _wait_ready(daemon, url)
        yield urls
    finally:
        for daemon in started:
            daemon.stop(30)


def _wait_ready(daemon: Daemon, url: str) -> None:
    from scripts.bench_rest import post_once, wait_until_ready

    wait_until_ready(
        url, lambda: daemon.process is not None and daemon.process.poll() is not None, daemon.log_tail
    )
    post_once(f"{url}/models/echo/infer", {"inputs": ECHO_INPUT})


def rest_run(urls: list[str], model: str, clients: int, seconds: float) -> dict[str, float]:
    """wrk on every daemon at once, `clients` connections in all: requests/s summed, p50 of the first."""
    lua = lua_script({"inputs": INPUTS[model]})
    reports: list[str] = [""] * len(urls)

    def drive(index: int) -> None:
        url = f"{urls[index]}/models/{model}/infer"
        reports[index] = wrk_report(url, lua, max(1, clients // len(urls)), seconds, 1)

    threads = [threading.Thread(target=drive, args=(index,)) for index in range(len(urls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    figures = [parse_wrk(report) for report in reports]
    return {
        "requests_per_s": sum(one["requests_per_s"] for one in figures),
        "p50_ms": figures[0].get("p50_ms", 0.0),
        "errors": sum(one["non_2xx"] + one["socket_errors"] for one in figures),
    }


def redis_command(url: str, *command: str) -> Any:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return client.execute_command(*command)
    finally:
        client.close()


def api_rounds(
    model: str,
    seconds: float,
    clients: int,
    rounds: int,
    urls: dict[str, str],
    pids: dict[str, int],
    folder: Path,
    call: str = "wait_for",
) -> dict[str, dict[str, Any]]:
    """The API figures of every set-up, `rounds` times in turn (so that each round's set-ups ran close
    together on a shared machine): per set-up the jobs/s of each round, and (medians) the CPU µs per
    job of the main process and of Redis, and Redis's µs in its functions per job (`FCALL`s)."""
    rows: dict[str, dict[str, Any]] = {setup: {"api_rounds": []} for setup in SETUPS}
    cpu: dict[str, dict[str, list[float]]] = {setup: {} for setup in SETUPS}
    for _ in range(rounds):
        for setup in SETUPS:
            url = urls[setup]
            if setup != "sqlite":
                redis_command(url, "CONFIG", "RESETSTAT")
            pid = pids.get(setup) if setup != "sqlite" else None
            figures = asyncio.run(api_run(setup, model, clients, seconds, url, folder, pid, call))
            rows[setup]["api_rounds"].append(round(figures.pop("jobs_per_s"), 1))
            if setup != "sqlite":  # (a grouped FCALL runs a turn's calls: its time per job, not per call)
                stats = redis_command(url, "INFO", "commandstats").get("cmdstat_fcall", {})
                jobs = rows[setup]["api_rounds"][-1] * seconds
                figures["redis_fcall_us_per_job"] = stats.get("usec", 0) / max(jobs, 1)
            for name, value in figures.items():
                cpu[setup].setdefault(name, []).append(value)
    for setup, row in rows.items():
        row["api_jobs_per_s"] = statistics.median(row["api_rounds"])
        row |= {name: round(statistics.median(values), 1) for name, values in cpu[setup].items()}
    return rows


def run(
    models: list[str], seconds: float, clients: int, rest: bool, rounds: int = 1, call: str = "wait_for"
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as scratch:
        folder = Path(scratch)
        redis = RedisServer(folder)
        redis.start()
        lazy = RedisServer(folder / "everysec", appendfsync="everysec")
        (folder / "everysec").mkdir()
        lazy.start()
        try:
            redis_urls = {setup: lazy.url if setup.endswith("everysec") else redis.url for setup in SETUPS}
            redis_pids = {
                setup: server.process.pid
                for setup in SETUPS
                if (server := lazy if setup.endswith("everysec") else redis).process is not None
            }
            for model in models:
                api = api_rounds(model, seconds, clients, rounds, redis_urls, redis_pids, folder, call)
                for setup in SETUPS:
                    url = redis_urls[setup]
                    row = api[setup]
                    if setup != "redis-2":  # the latency of one job: one daemon
                        row["api_p50_ms_1_client"] = round(
                            asyncio.run(api_latency(setup, model, 200, url, folder)), 3
                        )
                    if rest and WRK is not None:
                        with daemons(setup, model, url, folder) as urls:
                            row["rest_64"] = rest_run(urls, model, clients, seconds)
                            if setup != "redis-2":  # (the latency of one job: one daemon)
                                row["rest_1"] = rest_run(urls[:1], model, 1, seconds)
                    results[f"{model}/{setup}"] = row
                    print(model, setup, json.dumps(row), flush=True)
                base = results[f"{model}/sqlite"]
                one = results[f"{model}/redis-1"]
                results[f"{model}/ratios"] = {
                    "api_redis1_vs_sqlite": round(one["api_jobs_per_s"] / base["api_jobs_per_s"], 3),
                    "api_redis1_vs_sqlite_rounds": [
                        round(mine / theirs, 3)
                        for mine, theirs in zip(one["api_rounds"], base["api_rounds"], strict=True)
                    ],
                    "api_ms_added_1_client": round(
                        one["api_p50_ms_1_client"] - base["api_p50_ms_1_client"], 3
                    ),
                }
                if "rest_64" in one:
                    results[f"{model}/ratios"] |= {
                        "rest_redis1_vs_sqlite": round(
                            one["rest_64"]["requests_per_s"] / base["rest_64"]["requests_per_s"], 3
                        ),
                        "rest_ms_added_1_client": round(
                            one["rest_1"]["p50_ms"] - base["rest_1"]["p50_ms"], 3
                        ),
                    }
        finally:
            redis.stop()
            lazy.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="echo,mlp")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--no-rest", action="store_true")
    parser.add_argument(
        "--rounds", type=int, default=1, help="API runs of every set-up, in turn; the median is reported"
    )
    parser.add_argument(
        "--call",
        choices=("wait_for", "infer"),
        default="wait_for",
        help="the API clients' call: schedule_job then wait_for, or infer (submit and wait in one call)",
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    results = run(
        args.models.split(","), args.seconds, args.clients, not args.no_rest, args.rounds, args.call
    )
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
