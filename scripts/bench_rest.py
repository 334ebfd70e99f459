#!/usr/bin/env python
"""The REST benchmark: `POST /models/{model}/infer` on a real daemon, driven by `wrk`.

    .venv/bin/python scripts/bench_rest.py --direct             # echo and mlp, 64 clients and 1 client, 10 s each
    .venv/bin/python scripts/bench_rest.py --models echo --duration 5

It starts `modelsched serve --preset dev` on a free loopback port with a fresh journal file, warms
each model up with one request, then runs `wrk --latency` (a Lua script carries the POST body) and
reads requests/s, p50 and p99 from its report; without `wrk` on the PATH, an asyncio httpx client with
the same number of connections stands in (slower: it shares the cores with the daemon). With
direct rates (items/s of the model's adapter called in this process at batch 32, `--direct`), each
row also gets the ratio of the two.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.bench import ECHO_INPUT, MLP_ROW  # noqa: E402 - after the path is set

BODIES: dict[str, Any] = {"echo": {"inputs": ECHO_INPUT}, "mlp": {"inputs": MLP_ROW}}
WRK = shutil.which("wrk") or ("/usr/bin/wrk" if os.path.exists("/usr/bin/wrk") else None)
READY_TIMEOUT_S = 180.0
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def stop_daemon(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the daemon drains), then SIGKILL to its process group after 60 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, exited: Callable[[], bool], log: Callable[[], str]) -> None:
    """Poll `url`'s `/readyz` until it answers 200 (RuntimeError, with the daemon's `log()`, when it
    exits first or is not ready within `READY_TIMEOUT_S`)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while _get_status(f"{url}/readyz") != 200:
        if exited():
            raise RuntimeError(f"the daemon exited:\n{log()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the daemon was not ready within {READY_TIMEOUT_S:g} s")
        time.sleep(0.1)


def _get_status(url: str) -> int | None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - loopback only
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@contextlib.contextmanager
def running_daemon(preset: str = "dev") -> Iterator[str]:
    """A `modelsched serve` subprocess on a free loopback port; yields its base URL once ready."""
    port = free_port()
    journal_dir = Path(tempfile.mkdtemp(prefix="modelsched-bench-rest-"))
    env = {
        **os.environ,
        "MODELSCHED_JOURNAL_PATH": str(journal_dir / "journal.db"),
        "MODELSCHED_LOG_LEVEL": "warning",
        "HF_HUB_OFFLINE": "1",
    }
    env.setdefault("MODELSCHED_TORCH_THREADS", "1")
    log_path = journal_dir / "daemon.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server",
                "serve",
                "--preset",
                preset,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, lambda: process.poll() is not None, lambda: log_path.read_text())
        yield url
    finally:
        stop_daemon(process)
        shutil.rmtree(journal_dir, ignore_errors=True)


def post_once(url: str, body: Any) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310 - loopback only
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def lua_script(body: Any) -> str:
    """A wrk script that POSTs `body` as JSON on every request."""
    text = json.dumps(body, separators=(",", ":"))
    return (
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [==[{text}]==]\n'
    )


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_wrk(report: str) -> dict[str, float]:
    """Requests/s, latency percentiles (ms), request and error counts from `wrk --latency` output."""
    figures: dict[str, float] = {}
    rate = re.search(r"Requests/sec:\s*([\d.]+)", report)
    if rate is None:
        raise ValueError(f"no Requests/sec in wrk's report:\n{report}")
    figures["requests_per_s"] = float(rate.group(1))
    distribution = report.split("Latency Distribution", 1)[-1]
    for percent, value in re.findall(r"^\s*(50|75|90|99)%\s+(\S+)", distribution, re.MULTILINE):
        figures[f"p{percent}_ms"] = _duration_ms(value)
    total = re.search(r"(\d+) requests in", report)
    figures["requests"] = float(total.group(1)) if total else 0.0
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", report)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report)
    figures["non_2xx"] = float(non_2xx.group(1)) if non_2xx else 0.0
    figures["socket_errors"] = float(sum(int(n) for n in socket_errors.groups())) if socket_errors else 0.0
    return figures


def run_wrk(url: str, body: Any, clients: int, duration_s: float, threads: int) -> dict[str, float]:
    return parse_wrk(wrk_report(url, lua_script(body), clients, duration_s, threads))


def wrk_report(url: str, lua: str, clients: int, duration_s: float, threads: int) -> str:
    """wrk's report (stdout) for `clients` connections over `duration_s`, driven by the Lua `lua`."""
    assert WRK is not None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    try:
        command = [
            WRK,
            f"-t{max(1, min(threads, clients))}",
            f"-c{clients}",
            f"-d{duration_s:g}s",
            "--latency",
            "--timeout",
            "30s",
            "-s",
            script.name,
            url,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
        return done.stdout
    finally:
        os.unlink(script.name)


async def _client_loop(
    url: str, body: bytes, stop_at: float, latencies_ms: list[float], codes: list[int]
) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=1)) as client:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                answer = await client.post(url, content=body, headers={"Content-Type": "application/json"})
                codes.append(answer.status_code)
            except httpx.HTTPError:
                codes.append(0)
            latencies_ms.append((time.perf_counter() - started) * 1000)


def run_httpx(url: str, body: Any, clients: int, duration_s: float) -> dict[str, float]:
    """The same figures as `run_wrk`, from `clients` asyncio httpx clients (one connection each)."""
    latencies_ms: list[float] = []
    codes: list[int] = []
    payload = json.dumps(body).encode()

    async def drive() -> float:
        started = time.perf_counter()
        await asyncio.gather(
            *(_client_loop(url, payload, started + duration_s, latencies_ms, codes) for _ in range(clients))
        )
        return time.perf_counter() - started

    elapsed = asyncio.run(drive())
    cuts = statistics.quantiles(latencies_ms, n=100) if len(latencies_ms) > 1 else latencies_ms * 99
    return {
        "requests_per_s": len(codes) / elapsed,
        "p50_ms": cuts[49],
        "p75_ms": cuts[74],
        "p90_ms": cuts[89],
        "p99_ms": cuts[98],
        "requests": float(len(codes)),
        "non_2xx": float(sum(1 for code in codes if not 200 <= code < 300 and code != 0)),
        "socket_errors": float(codes.count(0)),
    }


def direct_rate(model: str, batch_size: int = 32, seconds: float = 3.0) -> float:
    """Items/s of the model's adapter called in this process on batches of `batch_size` (CPU): what
    the daemon's figures are held against."""
    from adapters.registry import build_adapter

    adapter = build_adapter(model)
    state = adapter.load("cpu")
    inputs = BODIES.get(model, {"inputs": ECHO_INPUT})["inputs"]
    batch = [adapter.preprocess(inputs) for _ in range(batch_size)]
    adapter.predict(state, batch)  # warm up
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        adapter.predict(state, batch)
        count += batch_size
    return count / (time.perf_counter() - started)


def run_rest_bench(
    models: tuple[str, ...] = ("echo", "mlp"),
    clients: int = 64,
    duration_s: float = 10,
    *,
    direct_rates: dict[str, float] | None = None,
    single_client: bool = True,
    wrk_threads: int = 1,
) -> list[dict[str, Any]]:
    """One row per (model, clients): requests/s, p50/p99 in ms, the driver (wrk or httpx), and
    `over_direct` where a direct rate is given. `single_client` adds a row at 1 client per model
    (the latency figure)."""
    rows: list[dict[str, Any]] = []
    with running_daemon() as base_url:
        for model in models:
            url = f"{base_url}/models/{model}/infer"
            body = BODIES.get(model, {"inputs": ECHO_INPUT})
            status, answer = post_once(url, body)  # loads the model before the clock starts
            if status != 200:
                raise RuntimeError(f"warm-up request to {model} answered {status}: {answer}")
            for concurrency in (clients, 1) if single_client and clients != 1 else (clients,):
                if WRK is not None:
                    figures = run_wrk(url, body, concurrency, duration_s, wrk_threads)
                else:
                    figures = run_httpx(url, body, concurrency, duration_s)
                row: dict[str, Any] = {
                    "model": model,
                    "clients": concurrency,
                    "driver": "wrk" if WRK is not None else "httpx",
                    **figures,
                }
                if direct_rates and model in direct_rates:
                    row["direct_items_per_s"] = direct_rates[model]
                    row["over_direct"] = figures["requests_per_s"] / direct_rates[model]
                rows.append(row)
    return rows


def format_row(row: dict[str, Any]) -> str:
    ratio = (
        f"  = {row['over_direct']:.2%} of direct ({row['direct_items_per_s']:,.0f} items/s at batch 32)"
        if "over_direct" in row
        else ""
    )
    return (
        f"{row['model']:>6} {row['clients']:>3} clients: {row['requests_per_s']:>9,.0f} req/s  "
        f"p50 {row.get('p50_ms', float('nan')):.2f} ms  p99 {row.get('p99_ms', float('nan')):.2f} ms  "
        f"non-2xx {row['non_2xx']:.0f}  socket errors {row['socket_errors']:.0f}{ratio}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="echo,mlp", help="comma-separated models (default echo,mlp)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--no-single-client", action="store_true", help="skip the 1-client latency runs")
    parser.add_argument(
        "--direct",
        action="store_true",
        help="also measure each model's adapter called directly at batch 32 and print the ratio",
    )
    parser.add_argument("--json", type=Path, help="write the rows to this file")
    args = parser.parse_args()
    models = tuple(args.models.split(","))
    rates = None
    if args.direct:
        import torch

        torch.set_num_threads(int(os.environ.get("MODELSCHED_TORCH_THREADS", "1")))
        rates = {model: direct_rate(model) for model in models}
    rows = run_rest_bench(
        models,
        args.clients,
        args.duration,
        direct_rates=rates,
        single_client=not args.no_single_client,
        wrk_threads=args.wrk_threads,
    )
    print(f"driver: {rows[0]['driver'] if rows else '-'}")
    for row in rows:
        print(format_row(row))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
