#!/usr/bin/env python
"""The HTTP fronts' benchmark: `POST /models/{model}/infer` driven by `wrk` at 64 clients on a daemon
with `http_workers` 0, 1 and 2, and the main process's CPU time per request.

    .venv/bin/python scripts/bench_front.py                       # echo and mlp; 0, 1, 2 fronts; 10 s each
    .venv/bin/python scripts/bench_front.py --fronts 0,2 --duration 5 --rounds 3
    .venv/bin/python scripts/bench_front.py --profile 0,2         # also cProfile the main process
    .venv/bin/python scripts/bench_front.py --baseline ../old     # and a checkout without fronts, first
    .venv/bin/python scripts/bench_front.py --baseline ../old --fronts 1 --interleave 6 --duration 4
    .venv/bin/python scripts/bench_front.py --baseline ../before --baseline-fronts 1 --fronts 1 --interleave 6

Each row: requests/s and p99 (wrk's report, via `scripts/bench_rest.wrk_report`), and the main
process's user + system CPU seconds (psutil; its threads, the journal's writer among them) over the
run divided by the requests wrk counted. The fronts and the worker are other processes: their CPU is
shown apart (`fronts`, `others`). On a small machine wrk, the fronts, the main process and the worker
share the cores, so requests/s moves little; the main process's CPU per request is the figure that
says how many requests one main process could feed on a machine with the cores for its fronts.
`--profile` runs the daemon under cProfile, enabled in its main thread for the echo run alone
(SIGUSR1, SIGUSR2; CPU time of that thread: the journal's writer thread is not in it), and prints
the top functions by own time per request. `loop` is the main thread's share of the main CPU.

`--interleave N` starts every daemon at once (the baseline's too) and runs N slices of `--duration`
seconds, each slice one wrk run against each daemon in turn (the order reversed every other slice).
The machine's load drifts by more than a factor of two within minutes (it is shared), and a daemon's
CPU per request follows it; slices a few seconds apart see the same load. It prints each daemon's
totals over all its slices and, per slice, the main CPU per request with fronts over the baseline's
(and their median): the ratio the fronts' goal is stated in. `--warmup S` first loads each daemon
for S seconds, not counted: a daemon's first `max_finished_in_memory` (100,000) jobs also pay for the
memory the table keeps of them (page faults); after them the table stops growing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.bench_rest import (  # noqa: E402 - after the path is set
    BODIES,
    WRK,
    free_port,
    lua_script,
    parse_wrk,
    post_once,
    stop_daemon,
    wait_until_ready,
    wrk_report,
)

PROFILE_GROUPS = (  # where a profiled function lives -> the row it counts in
    ("uvicorn", "uvicorn (HTTP parsing, the protocol)"),
    ("starlette", "starlette/fastapi"),
    ("fastapi", "starlette/fastapi"),
    ("prometheus_client", "prometheus_client (counters, histograms)"),
    ("scheduler/http/metrics", "prometheus_client (counters, histograms)"),
    ("scheduler/http/fronts", "http/fronts (frames, the main side)"),
    ("scheduler/http", "http (hot path, answers, body)"),
    ("scheduler/journal", "journal (records handed to the writer)"),
    ("scheduler/core", "core (admission, table, dispatch, results, endings)"),
    ("scheduler/", "scheduler (submissions, the rest)"),
    ("scheduler/pool", "pool (pipes)"),
    ("asyncio", "asyncio"),
)
PROFILER = """
import cProfile, signal, sys, time
sys.argv = ["modelsched", "serve", "--preset", "dev"]
import server
profile = cProfile.Profile(time.thread_time)
signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
signal.signal(signal.SIGUSR2, lambda *_: (profile.disable(), profile.dump_stats({path!r})))
sys.exit(server.main())
"""


@dataclass
class Daemon:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def fronts_and_others(self) -> tuple[list[psutil.Process], list[psutil.Process]]:
        """The front processes and the other children (the workers, named by `/system/status`)."""
        import json
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/system/status", timeout=10) as answer:  # noqa: S310
            worker_pids = {worker["pid"] for worker in json.loads(answer.read())["workers"]}
        fronts, others = [], []
        for child in psutil.Process(self.process.pid).children():
            with contextlib.suppress(psutil.Error):
                if "resource_tracker" in " ".join(child.cmdline()):
                    continue
                (others if child.pid in worker_pids else fronts).append(child)
        return fronts, others


def _main_thread_cpu(process: psutil.Process) -> float:
    """CPU seconds of the process's main thread (the event loop), its other threads left out."""
    with contextlib.suppress(psutil.Error):
        for thread in process.threads():
            if thread.id == process.pid:
                return thread.user_time + thread.system_time
    return 0.0


def _cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


@contextlib.contextmanager
def running_daemon(fronts: int, profile_path: Path | None = None, repo: Path = REPO) -> Iterator[Daemon]:
    """`modelsched serve --preset dev --http-workers N` on a free loopback port, its own journal."""
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="modelsched-bench-front-"))
    env = {
        **os.environ,
        "MODELSCHED_JOURNAL_PATH": str(folder / "journal.db"),
        "MODELSCHED_LOG_LEVEL": "warning",
        "MODELSCHED_RENDER_ENABLED": "0",
        "MODELSCHED_HTTP_WORKERS": str(fronts),
        "MODELSCHED_HOST": "127.0.0.1",
        "MODELSCHED_PORT": str(port),
        "HF_HUB_OFFLINE": "1",
    }
    env.setdefault("MODELSCHED_TORCH_THREADS", "1")
    command = [sys.executable, "-m", "server", "serve", "--preset", "dev"]
    if profile_path is not None:
        command = [sys.executable, "-c", PROFILER.format(path=str(profile_path))]
    log_path = folder / "daemon.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command, cwd=repo, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, lambda: process.poll() is not None, lambda: log_path.read_text())
        yield Daemon(url, process, log_path)
    finally:
        stop_daemon(process)
        shutil.rmtree(folder, ignore_errors=True)


def measure(
    daemon: Daemon, model: str, clients: int, duration_s: float, profiled: bool = False
) -> dict[str, Any]:
    url = f"{daemon.url}/models/{model}/infer"
    body = BODIES[model]
    status, answer = post_once(url, body)  # loads the model before the clock starts
    if status != 200:
        raise RuntimeError(f"warm-up request to {model} answered {status}: {answer}")
    main = psutil.Process(daemon.process.pid)
    fronts, others = daemon.fronts_and_others()
    before = (_cpu([main]), _cpu(fronts), _cpu(others), _main_thread_cpu(main))
    if profiled:
        main.send_signal(signal.SIGUSR1)
    figures = parse_wrk(wrk_report(url, lua_script(body), clients, duration_s, 1))
    if profiled:
        main.send_signal(signal.SIGUSR2)
    after = (_cpu([main]), _cpu(fronts), _cpu(others), _main_thread_cpu(main))
    requests = max(1.0, figures["requests"])
    return {
        "model": model,
        "clients": clients,
        **figures,
        "main_cpu_us": 1e6 * (after[0] - before[0]) / requests,
        "loop_cpu_us": 1e6 * (after[3] - before[3]) / requests,
        "fronts_cpu_us": 1e6 * (after[1] - before[1]) / requests,
        "others_cpu_us": 1e6 * (after[2] - before[2]) / requests,
    }


def format_row(fronts: int, row: dict[str, Any]) -> str:
    return (
        f"fronts {fronts}  {row['model']:>4} c={row['clients']}: {row['requests_per_s']:>7,.0f} req/s  "
        f"p99 {row.get('p99_ms', float('nan')):6.1f} ms  main CPU {row['main_cpu_us']:6.1f} µs/req "
        f"(loop {row['loop_cpu_us']:5.1f})  "
        f"fronts {row['fronts_cpu_us']:6.1f} µs/req  workers {row['others_cpu_us']:6.1f} µs/req  "
        f"non-2xx {row['non_2xx']:.0f}  errors {row['socket_errors']:.0f}"
    )


def print_profile(path: Path, requests: float, top: int = 25) -> None:
    import pstats

    stats = pstats.Stats(str(path))
    entries: list[tuple[float, int, str]] = []
    raw: dict[Any, Any] = vars(stats)["stats"]
    for (filename, line, function), (_, calls, own, _, _) in raw.items():
        where = f"{Path(filename).name}:{line} {function}" if filename != "~" else function
        entries.append((own, calls, where))
    entries.sort(reverse=True)
    total = sum(own for own, _, _ in entries)
    groups: dict[str, float] = {}
    for (filename, _, _), (_, _, own, _, _) in raw.items():
        group = next((name for marker, name in PROFILE_GROUPS if marker in filename), "other")
        groups[group] = groups.get(group, 0.0) + own
    print("  by where (share of the main thread's profiled time):")
    for group, own in sorted(groups.items(), key=lambda item: -item[1]):
        print(f"  {1e6 * own / requests:7.1f} µs/req  {own / total:6.1%}  {group}")
    print(f"  main process: {1e6 * total / requests:.1f} µs of profiled own time per request; top functions:")
    for own, calls, where in entries[:top]:
        print(
            f"  {1e6 * own / requests:7.1f} µs/req  {own / total:6.1%}  {calls / requests:6.2f} calls/req  {where}"
        )


def interleaved(baseline: Path, counts: list[int], models: list[str], slices: int, args: Any) -> None:
    """Every daemon up at once; `slices` wrk runs against each in turn (see the module's docstring)."""
    with contextlib.ExitStack() as stack:
        base = running_daemon(args.baseline_fronts, repo=baseline.resolve())
        daemons = [("baseline", stack.enter_context(base))]
        daemons += [(f"fronts {n}", stack.enter_context(running_daemon(n))) for n in counts]
        for name, daemon in daemons if args.warmup > 0 else ():
            warm = measure(daemon, models[0], args.clients, args.warmup)
            print(f"{name}: warmed up with {warm['requests']:,.0f} requests (not counted)", flush=True)
        for model in models:
            rows: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in daemons}
            for index in range(slices):
                for name, daemon in daemons if index % 2 == 0 else daemons[::-1]:
                    rows[name].append(measure(daemon, model, args.clients, args.duration))
            for name, measured in rows.items():
                requests = sum(row["requests"] for row in measured)
                total = {
                    "requests_per_s": requests / (args.duration * len(measured)),
                    "p99_ms": max(row["p99_ms"] for row in measured),
                    **{
                        key: sum(row[key] * row["requests"] for row in measured) / max(1.0, requests)
                        for key in ("main_cpu_us", "loop_cpu_us", "fronts_cpu_us", "others_cpu_us")
                    },
                    **{key: sum(row[key] for row in measured) for key in ("non_2xx", "socket_errors")},
                    "model": model,
                    "clients": args.clients,
                }
                label = name if name != "baseline" else "fronts 0"
                print(format_row(int(label.split()[1]), total).replace("fronts 0", name), flush=True)
            base = [row["main_cpu_us"] for row in rows["baseline"]]
            for name, measured in list(rows.items())[1:]:
                ratios = [row["main_cpu_us"] / b for row, b in zip(measured, base, strict=True)]
                shown = ", ".join(f"{ratio:.0%}" for ratio in ratios)
                print(
                    f"  {name} / baseline, main CPU per request, slice by slice: {shown}; "
                    f"median {statistics.median(ratios):.0%}",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="echo,mlp")
    parser.add_argument("--fronts", default="0,1,2", help="http_workers values to run (default 0,1,2)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole sweep (rounds alternate)")
    parser.add_argument(
        "--profile", default="", help="http_workers values to profile with cProfile (the first model)"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (e.g. the commit before the fronts) run first in each round, without fronts",
    )
    parser.add_argument(
        "--interleave", type=int, default=0, help="slices: every daemon up at once, runs alternated"
    )
    parser.add_argument(
        "--baseline-fronts", type=int, default=0, help="with --interleave: the baseline's http_workers (A/B)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        help="with --interleave: seconds of load on each daemon first, not counted (the steady state)",
    )
    args = parser.parse_args()
    if WRK is None:
        raise SystemExit("bench_front.py needs wrk on the PATH")
    counts = [int(value) for value in args.fronts.split(",") if value]
    if args.interleave:
        if args.baseline is None:
            raise SystemExit("--interleave compares with a baseline: give --baseline")
        interleaved(args.baseline, counts, args.models.split(","), args.interleave, args)
        return
    for round_index in range(args.rounds):
        print(f"round {round_index + 1}")
        if args.baseline is not None:
            with running_daemon(0, repo=args.baseline.resolve()) as daemon:
                for model in args.models.split(","):
                    row = measure(daemon, model, args.clients, args.duration)
                    print(format_row(0, row).replace("fronts 0", "baseline"), flush=True)
        for fronts in counts:
            with running_daemon(fronts) as daemon:
                for model in args.models.split(","):
                    print(format_row(fronts, measure(daemon, model, args.clients, args.duration)), flush=True)
    for fronts in [int(value) for value in args.profile.split(",") if value]:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "main.prof"
            with running_daemon(fronts, path) as daemon:
                row = measure(daemon, args.models.split(",")[0], args.clients, args.duration, profiled=True)
                until = time.monotonic() + 30
                while not path.exists() and time.monotonic() < until:
                    time.sleep(0.1)
                print("profiled (cProfile slows it):", format_row(fronts, row))
                print_profile(path, row["requests"] + 1)


if __name__ == "__main__":
    main()
