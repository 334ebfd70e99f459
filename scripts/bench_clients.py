#!/usr/bin/env python
"""The clients' benchmark, on a real daemon (dev preset, journal on, no render process):

1. Submission: 1,000 echo jobs as one `POST /jobs/batch`, against 1,000 single `POST /jobs` from one
   client (httpx, one connection): jobs acknowledged per second (each durable in the journal), and
   until all of them completed; and single `POST /jobs` under `wrk` (1 and 64 connections, 5 s;
   httpx's own pool is the bottleneck at 64 connections, so it is not used there).
2. Embeddings: 64 sentences a request through `POST /v1/embeddings` (float, and base64 as the `openai`
   package asks) against the same through `POST /models/minilm/infer`: requests per second, 1 client
   and 4 at once (goal: within 10%).

    .venv/bin/python scripts/bench_clients.py                 # both, 5 rounds of submission, 3 of embeddings
    .venv/bin/python scripts/bench_clients.py --rounds 3 --embedding-requests 20

Rounds alternate the variants, and the medians are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.bench_rest import running_daemon  # noqa: E402 - after the path is set

JOBS = 1000
WRK = shutil.which("wrk")
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "schedulers",
    "place",
    "jobs",
    "on",
    "busy",
    "workers",
]


def sentences(count: int) -> list[str]:
    """`count` different English-like sentences of 8 to 15 words."""
    return [
        " ".join(WORDS[(i + k) % len(WORDS)] for k in range(8 + i % 8)).capitalize() + "."
        for i in range(count)
    ]


def wait_all(http: httpx.Client, ids: list[str]) -> None:
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        while True:
            views = http.get("/jobs", params={"ids": ",".join(chunk)}).json()["jobs"]
            if all(view["status"] == "completed" for view in views):
                break
            time.sleep(0.01)


def submit_batch(http: httpx.Client) -> list[str]:
    answer = http.post("/jobs/batch", json={"jobs": [{"model": "echo", "inputs": n} for n in range(JOBS)]})
    return [item["job_id"] for item in answer.json()["jobs"]]


def submit_single(http: httpx.Client) -> list[str]:
    return [http.post("/jobs", json={"model": "echo", "inputs": n}).json()["job_id"] for n in range(JOBS)]


def wrk_rate(url: str, connections: int, seconds: int = 5) -> float:
    """Single `POST /jobs` under `wrk` (`connections` at once, `seconds` long): acknowledged jobs/s."""
    body = json.dumps({"model": "echo", "inputs": 1})
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(
            f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [==[{body}]==]\n'
        )
        script.flush()
        command = [WRK, "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script.name, f"{url}/jobs"]
        report = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in report:
        raise RuntimeError(f"wrk saw errors:\n{report}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", report)
    assert match is not None, report
    return float(match.group(1))


def drained(http: httpx.Client) -> None:
    while True:
        queue = http.get("/system/status").json()["queue"]
        if queue["queued"] == 0 and queue["processing"] == 0:
            return
        time.sleep(0.05)


def bench_submission(url: str, rounds: int) -> list[tuple[str, float, float | None]]:
    variants: dict[str, Callable[[httpx.Client], list[str]]] = {
        "1,000 single `POST /jobs`, 1 client (httpx)": submit_single,
        "one `POST /jobs/batch` of 1,000 (httpx)": submit_batch,
    }
    acked: dict[str, list[float]] = {name: [] for name in variants}
    done: dict[str, list[float]] = {name: [] for name in variants}
    under_wrk: dict[int, list[float]] = {1: [], 64: []}
    with httpx.Client(base_url=url, timeout=60) as http:
        submit_batch(http)  # warm-up
        for _ in range(rounds):
            for name, submit in variants.items():
                drained(http)
                started = time.perf_counter()
                ids = submit(http)
                acked[name].append(JOBS / (time.perf_counter() - started))
                wait_all(http, ids)
                done[name].append(JOBS / (time.perf_counter() - started))
            if WRK is not None:
                for connections in under_wrk:
                    drained(http)
                    under_wrk[connections].append(wrk_rate(url, connections))
    rows: list[tuple[str, float, float | None]] = [
        (name, statistics.median(acked[name]), statistics.median(done[name])) for name in variants
    ]
    for connections, rates in under_wrk.items():
        if rates:
            rows.append(
                (
                    f"single `POST /jobs`, wrk, {connections} connection(s), 5 s",
                    statistics.median(rates),
                    None,
                )
            )
    return rows


async def drive(
    send: Callable[[httpx.AsyncClient], Awaitable[Any]], url: str, requests: int, clients: int
) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        queue = list(range(requests))

        async def worker() -> None:
            while queue:
                queue.pop()
                await send(http)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return requests / (time.perf_counter() - started)


def bench_embeddings(url: str, rounds: int, requests: int) -> list[tuple[str, int, float, float]]:
    """(variant, clients, median requests/s, median of each round's ratio to `/models/minilm/infer`
    measured next to it in the same round: the machine is shared, so rates drift between rounds)."""
    text = sentences(64)

    async def native(http: httpx.AsyncClient) -> None:
        answer = await http.post("/models/minilm/infer", json={"inputs": text})
        assert answer.status_code == 200, answer.text

    def openai(encoding: str) -> Callable[[httpx.AsyncClient], Awaitable[None]]:
        async def send(http: httpx.AsyncClient) -> None:
            body = {"model": "minilm", "input": text, "encoding_format": encoding}
            answer = await http.post("/v1/embeddings", json=body)
            assert answer.status_code == 200, answer.text

        return send

    variants = {
        "`POST /models/minilm/infer`": native,
        "`POST /v1/embeddings`, float": openai("float"),
        "`POST /v1/embeddings`, base64": openai("base64"),
    }
    rates: dict[tuple[str, int], list[float]] = {}
    ratios: dict[tuple[str, int], list[float]] = {}
    asyncio.run(drive(native, url, 4, 1))  # warm-up: the model loads
    for _ in range(rounds):
        for clients in (1, 4):
            measured = {
                name: asyncio.run(drive(send, url, requests, clients)) for name, send in variants.items()
            }
            for name, rate in measured.items():
                rates.setdefault((name, clients), []).append(rate)
                ratios.setdefault((name, clients), []).append(rate / measured["`POST /models/minilm/infer`"])
    return [
        (name, clients, statistics.median(values), statistics.median(ratios[(name, clients)]))
        for (name, clients), values in rates.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--embedding-rounds", type=int, default=3)
    parser.add_argument("--embedding-requests", type=int, default=24)
    parser.add_argument("--skip", choices=["submission", "embeddings"])
    args = parser.parse_args()
    os.environ["MODELSCHED_RENDER_ENABLED"] = "0"
    with running_daemon() as url:
        if args.skip != "submission":
            print(
                f"\n| submission ({JOBS} echo jobs, median of {args.rounds}) | acknowledged jobs/s | completed jobs/s |"
            )
            print("|---|---:|---:|")
            for name, acked, done in bench_submission(url, args.rounds):
                print(f"| {name} | {acked:,.0f} | {'' if done is None else f'{done:,.0f}'} |")
        if args.skip != "embeddings":
            rows = bench_embeddings(url, args.embedding_rounds, args.embedding_requests)
            print(
                f"\n| 64 sentences a request (median of {args.embedding_rounds}) | clients | requests/s | sentences/s | vs infer, same round |"
            )
            print("|---|---:|---:|---:|---:|")
            for name, clients, rate, ratio in sorted(rows, key=lambda row: (row[1], row[0])):
                print(f"| {name} | {clients} | {rate:.2f} | {rate * 64:,.0f} | {ratio:.1%} |")


if __name__ == "__main__":
    main()
