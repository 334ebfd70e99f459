#!/usr/bin/env python
"""A closed-loop HTTP/1.1 load generator that needs nothing but the standard library (uvloop when
it is there): `--connections` keep-alive connections spread over `--processes` processes, each
sending the same POST again as soon as its answer is in. For machines without `wrk` (the GPU
machine of `scripts/bench_gpu.sh`).

    python3 scripts/load_http.py --url http://127.0.0.1:8000/models/minilm/infer \\
        --body '{"inputs": "A sentence."}' --connections 256 --processes 8 --duration 20

Prints one JSON line: requests, requests_per_s, p50_ms, p99_ms, non_2xx, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import time
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


async def _connection(
    host: str, port: int, request: bytes, stop_at: float, latencies: list[float], codes: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            latencies.append((time.perf_counter() - started) * 1000)
            codes.append(status)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        codes.append(0)
    finally:
        writer.close()


def _process(args: tuple[str, int, bytes, int, float], results: Queue[Any]) -> None:
    host, port, request, connections, stop_at = args
    latencies: list[float] = []
    codes: list[int] = []

    async def drive() -> None:
        await asyncio.gather(
            *(_connection(host, port, request, stop_at, latencies, codes) for _ in range(connections))
        )

    try:
        import uvloop

        uvloop.run(drive())
    except ImportError:
        asyncio.run(drive())
    results.put((latencies, codes))


def run(url: str, body: bytes, connections: int, processes: int, duration_s: float) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    processes = max(1, min(processes, connections))
    results: Queue[Any] = multiprocessing.Queue()
    started = time.perf_counter()
    stop_at = time.perf_counter() + duration_s
    shares = [
        connections // processes + (1 if index < connections % processes else 0) for index in range(processes)
    ]
    workers = [
        multiprocessing.Process(target=_process, args=((host, port, request, share, stop_at), results))
        for share in shares
    ]
    for worker in workers:
        worker.start()
    latencies: list[float] = []
    codes: list[int] = []
    for _ in workers:
        got_latencies, got_codes = results.get(timeout=duration_s + 120)
        latencies += got_latencies
        codes += got_codes
    for worker in workers:
        worker.join(10)
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    answered = [code for code in codes if code]
    return {
        "requests": float(len(answered)),
        "requests_per_s": len(answered) / min(elapsed, duration_s + 0.5),
        "p50_ms": cuts[49],
        "p99_ms": cuts[98],
        "non_2xx": float(sum(1 for code in answered if not 200 <= code < 300)),
        "errors": float(codes.count(0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="the JSON body, or @FILE")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    body = Path(args.body[1:]).read_bytes() if args.body.startswith("@") else args.body.encode()
    print(json.dumps(run(args.url, body, args.connections, args.processes, args.duration)))


if __name__ == "__main__":
    main()
