"""Supervision decisions as pure functions: which workers to run, how long to wait before a respawn
so that a worker that cannot boot does not turn into a restart storm, and how long a model whose load
failed is left alone before its next job may try again."""

from __future__ import annotations

FAILED_LOAD_BACKOFF_S = 5.0
MAX_LOAD_BACKOFF_S = 300.0
MAX_BACKOFF_S = 30.0


def worker_plan(
    gpu_indices: list[int], workers_per_gpu: int, cpu_workers: int, needs_cpu_workers: bool
) -> list[tuple[str, int | None]]:
    """(worker id, GPU index or None) for every worker the pool should hold."""
    plan: list[tuple[str, int | None]] = [
        (f"gpu{index}-w{slot}", index) for index in gpu_indices for slot in range(workers_per_gpu)
    ]
    if needs_cpu_workers:
        plan += [(f"cpu-w{slot}", None) for slot in range(max(1, cpu_workers))]
    return plan


def respawn_delay(consecutive_boot_failures: int) -> float:
    """At once after a death in service; exponential back-off while the worker keeps failing to boot."""
    if consecutive_boot_failures <= 0:
        return 0.0
    return min(MAX_BACKOFF_S, 0.25 * (2 ** min(consecutive_boot_failures - 1, 8)))


def load_backoff(consecutive_failures: int, base_s: float = FAILED_LOAD_BACKOFF_S) -> float:
    """Seconds during which a model whose load failed fails its jobs at once: base, 2x, 4x ... capped."""
    if consecutive_failures <= 0:
        return 0.0
    return min(MAX_LOAD_BACKOFF_S, base_s * (2 ** min(consecutive_failures - 1, 16)))
