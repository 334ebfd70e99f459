"""The daemon's answers as tables for a terminal (pure: plain values in, text out): the system
status (the scheduler, GPUs, workers, queue, models, render process, journal), the models and the
jobs. Fields are read with defaults, so a daemon of another version still prints."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

Row = Sequence[object]


def shown(value: object) -> str:
    """A cell: None is "-", a float is short, a list is comma-separated, a bool is yes/no."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    if isinstance(value, list | tuple):
        return ", ".join(shown(item) for item in value) or "-"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Row]) -> str:
    """Columns padded to their widest cell, two spaces apart; "(none)" for no rows."""
    cells = [[shown(value) for value in row] for row in rows]
    widths = [max([len(header), *(len(row[index]) for row in cells)]) for index, header in enumerate(headers)]
    lines = [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in [list(headers), *cells]
    ]
    return "\n".join(lines if cells else [*lines, "(none)"])


def duration(seconds: float | None) -> str:
    """`4.2s`, `3m 07s`, `2h 05m`, `3d 04h`; "-" for None."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def megabytes(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1024:.1f} GiB" if value >= 1024 else f"{value:.0f} MiB"


def model_state(model: Mapping[str, Any]) -> str:
    """The model's state as the daemon names it (`state`), else read off where it is loaded."""
    if model.get("state"):
        return str(model["state"])
    if model.get("failed"):
        return "failed"
    return "loaded" if model.get("loaded_on") else "unloaded"


def models_table(models: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        (
            model.get("name"),
            model.get("adapter"),
            model.get("device"),
            model.get("max_batch_size"),
            model.get("vram_mb"),
            model_state(model),
            model.get("loaded_on"),
            model.get("queued"),
            model.get("failed"),
        )
        for model in models
    ]
    headers = ("MODEL", "ADAPTER", "DEVICE", "BATCH", "VRAM MB", "STATE", "LOADED ON", "QUEUED", "FAILED")
    return table(headers, rows)


def jobs_table(jobs: Sequence[Mapping[str, Any]], now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = []
    for job in jobs:
        created, started, ended = job.get("created_at"), job.get("started_at"), job.get("ended_at")
        ran = (ended or now) - started if started else None
        rows.append(
            (
                job.get("job_id"),
                job.get("model") or job.get("pipeline"),
                job.get("status"),
                job.get("priority"),
                duration(now - created) + " ago" if created else None,
                duration(ran) if ran is not None else None,
                job.get("attempts"),
                job.get("worker"),
                job.get("error_kind") or job.get("error"),
            )
        )
    headers = ("JOB", "MODEL", "STATUS", "PRIORITY", "CREATED", "RAN", "TRIES", "WORKER", "ERROR")
    return table(headers, rows)


def _gpus(gpus: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        (
            gpu.get("index"),
            f"{gpu.get('name', '-')}" + (" (simulated)" if gpu.get("simulated") else ""),
            f"{megabytes(gpu.get('used_mb'))} / {megabytes(gpu.get('total_mb'))}",
            f"{gpu['utilization_pct']:.0f}%" if gpu.get("utilization_pct") is not None else None,
            megabytes(gpu.get("ledger_used_mb")),
            gpu.get("workers"),
        )
        for gpu in gpus
    ]
    return table(("GPU", "NAME", "MEMORY", "UTIL", "LEDGER", "WORKERS"), rows)


def _workers(workers: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        (
            worker.get("worker_id"),
            worker.get("device"),
            worker.get("state"),
            worker.get("pid"),
            [loaded.get("model") for loaded in worker.get("loaded_models") or []],
            worker.get("jobs_in_flight"),
            worker.get("jobs_done"),
            duration(worker.get("heartbeat_age_s")) if worker.get("heartbeat_age_s") is not None else None,
            worker.get("restarts"),
            megabytes(worker.get("rss_mb")),
        )
        for worker in workers
    ]
    headers = (
        "WORKER",
        "DEVICE",
        "STATE",
        "PID",
        "MODELS",
        "RUNNING",
        "DONE",
        "HEARTBEAT",
        "RESTARTS",
        "RSS",
    )
    return table(headers, rows)


def _queue(queue: Mapping[str, Any]) -> str:
    counts = ("queued", "processing", "completed", "error", "cancelled")
    line = "  ".join(f"{name} {queue.get(name, 0)}" for name in counts)
    return f"{line}  (at most {queue.get('max_queue', '-')} waiting)"


def _render(render: Mapping[str, Any] | None) -> str:
    if not render:
        return "off"
    rate = render.get("success_rate")
    parts = [
        f"state {render.get('state')}",
        f"browser {'pid ' + str(render['browser_pid']) if render.get('browser_pid') else 'none'}"
        f" ({render.get('browser_launches', 0)} launches)",
        f"pages {render.get('pages_active', 0)}/{render.get('max_pages', '-')}"
        f" (peak {render.get('peak_pages_active', 0)}, {render.get('pages_waiting', 0)} waiting)",
        f"renders {render.get('renders_done', 0)}"
        + (f" ({rate:.0%} ok)" if isinstance(rate, int | float) else ""),
        f"fallbacks {render.get('fallbacks', 0)}",
        f"restarts {render.get('restarts', 0)}",
    ]
    if render.get("browser_error"):
        parts.append(f"browser error: {render['browser_error']}")
    return "  ".join(parts)


def _journal(journal: Mapping[str, Any] | None) -> str:
    if not journal:
        return "none (nothing survives a restart)"
    bound = f"{shown(journal.get('max_mb'))} MiB" if journal.get("max_mb") else "no bound"
    text = (
        f"{journal.get('path')}  {shown(journal.get('size_mb'))} MiB on disk, {shown(journal.get('used_mb'))} MiB used"
        f" of {bound}  pruned {journal.get('pruned_for_size', 0)} for size,"
        f" {journal.get('pruned_for_age', 0)} for age"
    )
    return text + (f"  PROBLEM: {journal['problem']}" if journal.get("problem") else "")


def status_text(status: Mapping[str, Any]) -> str:
    """`GET /system/status` as sections of tables."""
    info = status.get("scheduler") or {}
    head = (
        f"modelsched: preset {info.get('preset', '-')}, "
        f"{'accepting jobs' if info.get('accepting') else 'NOT accepting jobs'}, "
        f"up {duration(info.get('uptime_s'))}"
    )
    sections = [
        head,
        "GPUS\n" + (_gpus(status["gpu"]) if status.get("gpu") else "(none: CPU workers only)"),
        "WORKERS\n" + _workers(status.get("workers") or []),
        "QUEUE\n" + _queue(status.get("queue") or {}),
        "MODELS\n" + models_table(status.get("models") or []),
        "RENDER\n" + _render(status.get("render")),
        "JOURNAL\n" + _journal(status.get("journal")),
    ]
    return "\n\n".join(sections)
