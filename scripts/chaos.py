#!/usr/bin/env python
"""The chaos run: the daemon under load while its workers are SIGKILLed and its main process once.

    .venv/bin/python scripts/chaos.py                   # 5,000 jobs, a worker killed every 2 s
    .venv/bin/python scripts/chaos.py --jobs 300 --json out.json

It starts `modelsched serve` (CPU workers, a journal in a scratch folder), submits jobs of mixed
models over REST (`sleep` with a few ms, `mlp` with 256 floats, a few poison jobs `{"exit": 1}` on
`sleep`), every submission with an idempotency key; SIGKILLs a random worker process (a child of the
daemon it started) every `--kill-every` seconds; SIGKILLs the daemon once, when a fraction of the
jobs is submitted, and starts it again on the same journal. Clients retry what fails meanwhile
(connection refused, 503, 429) with the same idempotency key, and long-poll `GET /jobs/{id}?wait=N`.

At the end it prints what it saw and what the journal holds:
- submitted: jobs acknowledged with a job id;  lost: acknowledged, and no end state at the end;
- completed, and failed by reason (the journal's `error_kind`);
- duplicated, which counts three things, each of which would be a second answer for one job:
  keys with more than one job (a retried submission made a new job), jobs with more than one end
  record in the journal, and jobs whose end as first seen by a client later changed or went back
  (status, result, error or `ended_at` differ: the job ran again after a client was told it ended);
- re-run: jobs (not poison) that a worker death made run again (`attempts` > 1); execution is at least
  once, and a job in flight when the main process was killed runs again without a try counted;
- poison jobs not in `error`, and innocent jobs failed as poison (both must be 0).
Lost and duplicated must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import random
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

if importlib.util.find_spec("sniffio") is None:
    # httpcore tries `import sniffio` for every lock it makes; without the package each try searches
    # sys.path again (a failed import is not cached). Cache the miss: it halves this client's CPU.
    sys.modules["sniffio"] = None  # type: ignore[assignment]

REPO = Path(__file__).resolve().parent.parent
ENDED = {"completed", "error", "cancelled"}
RETRY_STATUS = {429, 502, 503, 504}
MLP_INPUTS = 256


@dataclass
class TrackedJob:
    """One logical job as the client knows it."""

    index: int
    key: str
    model: str
    inputs: Any
    poison: bool
    job_id: str | None = None
    ids_returned: set[str] = field(default_factory=set)
    submit_tries: int = 0
    first_end: dict[str, Any] | None = None
    last_seen: dict[str, Any] | None = None
    end_changed: bool = False


class Daemon:
    """`modelsched serve` in a process of our own; started and killed by pid."""

    def __init__(self, folder: Path, port: int, cpu_workers: int, extra_env: dict[str, str]) -> None:
        self.folder = folder
        self.port = port
        self.journal_path = str(folder / "journal.db")
        self.env = {
            **os.environ,
            "MODELSCHED_HOST": "127.0.0.1",
            "MODELSCHED_PORT": str(port),
            "MODELSCHED_JOURNAL_PATH": self.journal_path,
            "MODELSCHED_CPU_WORKERS": str(cpu_workers),
            "MODELSCHED_FORCE_CPU": "1",
            "MODELSCHED_TORCH_THREADS": "1",
            "MODELSCHED_LOG_LEVEL": "warning",
            "MODELSCHED_SHUTDOWN_GRACE_S": "5",
            "MODELSCHED_RENDER_ENABLED": "false",
            "MODELSCHED_PRELOAD": "false",  # workers die every 2 s: a preload (minilm) would never end
            **extra_env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.folder / f"daemon-{self.starts}.log", "wb")  # noqa: SIM115 - the child keeps it
        command = [
            sys.executable,
            "-c",
            "import sys; from server import main; sys.exit(main())",
            "serve",
            "--preset",
            "dev",
        ]
        self.process = subprocess.Popen(command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def worker_pids(self) -> list[int]:
        """Worker processes: children of the daemon started by multiprocessing's spawn."""
        pid = self.pid
        if pid is None:
            return []
        try:
            children = psutil.Process(pid).children()
        except psutil.Error:
            return []
        found = []
        for child in children:
            try:
                command = " ".join(child.cmdline())
            except psutil.Error:
                continue
            if "spawn_main" in command and "resource_tracker" not in command:
                found.append(child.pid)
        return found

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM (the daemon stops gracefully), SIGKILL if it does not end in time."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def log_tail(self, lines: int = 40) -> str:
        texts = []
        for path in sorted(self.folder.glob("daemon-*.log")):
            content = path.read_text(errors="replace").splitlines()[-lines:]
            texts.append(f"--- {path.name}\n" + "\n".join(content))
        return "\n".join(texts)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_jobs(count: int, poison: int, seed: int, run_id: str) -> list[TrackedJob]:
    rng = random.Random(seed)
    poison_at = set(rng.sample(range(count), min(poison, count)))
    jobs = []
    for index in range(count):
        key = f"chaos-{run_id}-{index}"
        if index in poison_at:
            jobs.append(TrackedJob(index, key, "sleep", {"exit": 1}, poison=True))
        elif rng.random() < 0.6:
            jobs.append(TrackedJob(index, key, "sleep", {"ms": rng.randint(1, 5)}, poison=False))
        else:
            row = [round(rng.uniform(-1, 1), 4) for _ in range(MLP_INPUTS)]
            jobs.append(TrackedJob(index, key, "mlp", row, poison=False))
    return jobs


async def wait_ready(client: httpx.AsyncClient, daemon: Daemon, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if daemon.process is not None and daemon.process.poll() is not None:
            raise RuntimeError(f"the daemon exited with {daemon.process.returncode}:\n{daemon.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get("/readyz", timeout=2.0)).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the daemon was not ready within {timeout_s}s:\n{daemon.log_tail()}")


class ChaosRun:
    def __init__(
        self,
        jobs: list[TrackedJob],
        daemon: Daemon,
        kill_every_s: float,
        restart_after: int,
        deadline_s: float,
        seed: int,
    ) -> None:
        self.jobs = jobs
        self.daemon = daemon
        self.kill_every_s = kill_every_s
        self.restart_after = restart_after
        self.deadline = time.monotonic() + deadline_s
        self.rng = random.Random(seed + 1)
        self.acknowledged = 0
        self.restarted = asyncio.Event()
        self.restarting = False
        self.worker_kills = 0
        self.main_kills = 0
        self.retries = 0
        self.to_poll: asyncio.Queue[TrackedJob | None] = asyncio.Queue()
        self.outage_s = 0.0
        self.tls = ssl.create_default_context()

    async def backoff(self, attempt: int) -> None:
        self.retries += 1
        await asyncio.sleep(min(0.5, 0.02 * (2 ** min(attempt, 5))) * (0.5 + self.rng.random()))

    async def submit(self, client: httpx.AsyncClient, job: TrackedJob) -> None:
        body = {"model": job.model, "inputs": job.inputs, "idempotency_key": job.key}
        attempt = 0
        while time.monotonic() < self.deadline:
            job.submit_tries += 1
            try:
                response = await client.post("/jobs", json=body, timeout=30.0)
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code in (200, 201, 202):
                job_id = response.json()["job_id"]
                job.ids_returned.add(job_id)
                job.job_id = job_id
                self.acknowledged += 1
                await self.to_poll.put(job)
                if self.acknowledged == self.restart_after:
                    asyncio.get_running_loop().create_task(self.restart_main())
                return
            if response is not None and response.status_code not in RETRY_STATUS:
                raise RuntimeError(
                    f"job {job.index}: POST /jobs answered {response.status_code}: {response.text}"
                )
            attempt += 1
            await self.backoff(attempt)

    async def submitter(self, pending: list[TrackedJob]) -> None:
        async with self.client() as client:
            while pending:
                await self.submit(client, pending.pop())

    def client(self) -> httpx.AsyncClient:
        """One connection per client coroutine (httpx's pool costs grow with connections x requests),
        and one TLS context for all (plain HTTP here, but each client would load the CA store)."""
        return httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.daemon.port}",
            verify=self.tls,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    async def poll(self, client: httpx.AsyncClient, job: TrackedJob) -> None:
        attempt = 0
        while time.monotonic() < self.deadline:
            try:
                response = await client.get(f"/jobs/{job.job_id}", params={"wait": 5}, timeout=30.0)
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code == 200:
                attempt = 0
                self.observe(job, response.json())
                if job.first_end is not None:
                    return
                continue
            attempt += 1  # 404 after a restart would mean the job was lost: keep asking until the deadline
            await self.backoff(attempt)

    async def poller(self) -> None:
        async with self.client() as client:
            while True:
                job = await self.to_poll.get()
                if job is None:
                    return
                await self.poll(client, job)

    def observe(self, job: TrackedJob, status: dict[str, Any]) -> None:
        job.last_seen = status
        if job.first_end is not None and _end_of(status) != _end_of(job.first_end):
            job.end_changed = True  # an end a client was shown was taken back or replaced
        if job.first_end is None and status.get("status") in ENDED:
            job.first_end = status

    async def monkey(self) -> None:
        while time.monotonic() < self.deadline:
            await asyncio.sleep(self.kill_every_s)
            if self.restarting:
                continue
            pids = self.daemon.worker_pids()
            if pids:
                victim = self.rng.choice(pids)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
                    self.worker_kills += 1

    async def restart_main(self) -> None:
        self.restarting = True
        started = time.monotonic()
        self.daemon.kill()
        self.main_kills += 1
        self.daemon.start()
        async with self.client() as probe:
            await wait_ready(probe, self.daemon, 120)
        self.outage_s = time.monotonic() - started
        self.restarting = False
        self.restarted.set()

    async def run(self, submitters: int = 32, pollers: int = 128) -> None:
        async with self.client() as client:
            await wait_ready(client, self.daemon, 120)
            monkey = asyncio.create_task(self.monkey())
            pending = list(reversed(self.jobs))
            poll_tasks = [asyncio.create_task(self.poller()) for _ in range(pollers)]
            await asyncio.gather(*(self.submitter(pending) for _ in range(submitters)))
            if self.restart_after <= len(self.jobs):
                await asyncio.wait_for(self.restarted.wait(), max(1.0, self.deadline - time.monotonic()))
            for _ in poll_tasks:
                await self.to_poll.put(None)
            await asyncio.gather(*poll_tasks)
            monkey.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monkey
            # Ask once more for every job: an end that changed since it was first seen is a duplicate.
            to_check = [job for job in self.jobs if job.job_id is not None]

            async def recheck() -> None:
                async with self.client() as own:
                    while to_check:
                        job = to_check.pop()
                        with contextlib.suppress(httpx.HTTPError):
                            response = await own.get(f"/jobs/{job.job_id}", timeout=30.0)
                            if response.status_code == 200:
                                self.observe(job, response.json())

            await asyncio.gather(*(recheck() for _ in range(16)))


def _end_of(status: dict[str, Any]) -> tuple[Any, ...]:
    return (
        status.get("status"),
        json.dumps(status.get("result"), sort_keys=True),
        status.get("error"),
        status.get("ended_at"),
    )


def journal_figures(path: str, key_prefix: str, poison_keys: set[str]) -> dict[str, Any]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        like = key_prefix + "%"
        duplicate_keys = connection.execute(
            "SELECT COUNT(*) FROM (SELECT idempotency_key FROM jobs WHERE idempotency_key LIKE ? "
            "GROUP BY idempotency_key HAVING COUNT(*) > 1)",
            (like,),
        ).fetchone()[0]
        multiple_ends = connection.execute(
            "SELECT COUNT(*) FROM jobs WHERE idempotency_key LIKE ? AND end_records > 1", (like,)
        ).fetchone()[0]
        failed_by_kind = dict(
            connection.execute(
                "SELECT COALESCE(error_kind, '?'), COUNT(*) FROM jobs WHERE idempotency_key LIKE ? AND status = 'error' "
                "GROUP BY error_kind",
                (like,),
            ).fetchall()
        )
        poisoned_keys = {
            key
            for (key,) in connection.execute(
                "SELECT idempotency_key FROM jobs WHERE idempotency_key LIKE ? AND error_kind = 'poison'",
                (like,),
            )
        }
        open_rows = connection.execute(
            "SELECT COUNT(*) FROM jobs WHERE idempotency_key LIKE ? AND ended_at IS NULL", (like,)
        ).fetchone()[0]
    finally:
        connection.close()
    return {
        "duplicate_keys": duplicate_keys,
        "multiple_end_records": multiple_ends,
        "failed_by_kind": failed_by_kind,
        "innocent_poisoned": len(poisoned_keys - poison_keys),
        "open_rows": open_rows,
    }


def run_chaos(
    jobs: int = 5000,
    poison: int = 5,
    kill_every_s: float = 2.0,
    restart_at: float = 0.5,
    cpu_workers: int = 2,
    seed: int = 0,
    deadline_s: float = 600.0,
    folder: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run the chaos scenario; returns every figure (see the module docstring)."""
    started = time.monotonic()
    run_id = f"{seed}-{int(time.time())}"
    with contextlib.ExitStack() as stack:
        work = (
            Path(folder)
            if folder
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-")))
        )
        work.mkdir(parents=True, exist_ok=True)
        daemon = Daemon(work, free_port(), cpu_workers, extra_env or {})
        tracked = make_jobs(jobs, poison, seed, run_id)
        restart_after = max(1, int(jobs * restart_at)) if restart_at > 0 else jobs + 1
        chaos = ChaosRun(tracked, daemon, kill_every_s, restart_after, deadline_s, seed)
        daemon.start()
        try:
            asyncio.run(chaos.run())
        finally:
            exit_code = daemon.stop()
        journal = journal_figures(
            daemon.journal_path, f"chaos-{run_id}-", {job.key for job in tracked if job.poison}
        )
        logs = daemon.log_tail(60)
    final = [job.last_seen or {} for job in tracked]
    acknowledged = [job for job in tracked if job.job_id is not None]
    lost = [job for job in acknowledged if (job.last_seen or {}).get("status") not in ENDED]
    changed = [job for job in tracked if job.end_changed]
    two_ids = [job for job in tracked if len(job.ids_returned) > 1]
    poison_not_error = [
        job for job in tracked if job.poison and (job.last_seen or {}).get("status") != "error"
    ]
    figures: dict[str, Any] = {
        "jobs": jobs,
        "poison_jobs": sum(job.poison for job in tracked),
        "submitted": len(acknowledged),
        "never_acknowledged": jobs - len(acknowledged),
        "completed": sum(status.get("status") == "completed" for status in final),
        "failed": sum(status.get("status") == "error" for status in final),
        "failed_by_reason": journal["failed_by_kind"],
        "cancelled": sum(status.get("status") == "cancelled" for status in final),
        "lost": len(lost),
        "duplicated": journal["duplicate_keys"]
        + journal["multiple_end_records"]
        + len(changed)
        + len(two_ids),
        "duplicated_detail": {
            "keys_with_several_jobs": journal["duplicate_keys"],
            "jobs_with_several_end_records": journal["multiple_end_records"],
            "ends_changed_after_seen": len(changed),
            "several_ids_for_one_key": len(two_ids),
        },
        "re_run": sum((job.last_seen or {}).get("attempts", 0) > 1 for job in tracked if not job.poison),
        "poison_not_in_error": len(poison_not_error),
        "innocent_failed_as_poison": journal["innocent_poisoned"],
        "worker_kills": chaos.worker_kills,
        "main_kills": chaos.main_kills,
        "main_outage_s": round(chaos.outage_s, 2),
        "client_retries": chaos.retries,
        "submit_tries": sum(job.submit_tries for job in tracked),
        "daemon_exit_code": exit_code,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    if lost:
        figures["lost_examples"] = [(job.index, job.job_id, job.last_seen) for job in lost[:5]]
    if changed:
        figures["changed_examples"] = [(job.index, job.first_end, job.last_seen) for job in changed[:3]]
    if (
        figures["lost"]
        or figures["duplicated"]
        or figures["poison_not_in_error"]
        or figures["innocent_failed_as_poison"]
    ):
        figures["daemon_log_tail"] = logs
    return figures


def print_report(figures: dict[str, Any]) -> None:
    print(
        f"jobs submitted:            {figures['submitted']} of {figures['jobs']} "
        f"({figures['poison_jobs']} poison; never acknowledged: {figures['never_acknowledged']})"
    )
    print(f"completed:                 {figures['completed']}")
    print(f"failed:                    {figures['failed']}  by reason: {figures['failed_by_reason']}")
    print(f"cancelled:                 {figures['cancelled']}")
    print(f"lost (no end state):       {figures['lost']}")
    print(f"duplicated:                {figures['duplicated']}  {figures['duplicated_detail']}")
    print(f"poison jobs not in error:  {figures['poison_not_in_error']}")
    print(f"innocent failed as poison: {figures['innocent_failed_as_poison']}")
    print(f"re-run (attempts > 1):     {figures['re_run']}")
    print(
        f"faults: {figures['worker_kills']} worker SIGKILLs, {figures['main_kills']} main SIGKILL "
        f"({figures['main_outage_s']} s outage); {figures['client_retries']} client retries; "
        f"{figures['elapsed_s']} s in all"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--poison", type=int, default=5)
    parser.add_argument("--kill-every", type=float, default=2.0, help="seconds between worker SIGKILLs")
    parser.add_argument(
        "--restart-at",
        type=float,
        default=0.5,
        help="SIGKILL and restart the daemon when this fraction of jobs is submitted (0: never)",
    )
    parser.add_argument("--cpu-workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deadline", type=float, default=900.0)
    parser.add_argument("--folder", help="keep the journal and daemon logs here")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    figures = run_chaos(
        args.jobs,
        args.poison,
        args.kill_every,
        args.restart_at,
        args.cpu_workers,
        args.seed,
        args.deadline,
        args.folder,
    )
    print_report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    if "daemon_log_tail" in figures:
        print(figures["daemon_log_tail"])
    bad = (
        figures["lost"]
        or figures["duplicated"]
        or figures["poison_not_in_error"]
        or figures["innocent_failed_as_poison"]
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
