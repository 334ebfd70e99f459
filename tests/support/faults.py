"""Shared by the fault tests: small settings with short timeouts, and process helpers."""

from __future__ import annotations

import os
from typing import Any

import psutil

from scheduler.settings import ModelConfig, Settings

CPU_ONLY = {"MODELSCHED_FORCE_CPU": "1"}


def fault_settings(**overrides: Any) -> Settings:
    """One CPU worker, no journal unless the test gives one, echo/sleep models, short timeouts."""
    base: dict[str, Any] = dict(
        journal_path="",
        cpu_workers=1,
        heartbeat_interval_s=0.2,
        heartbeat_timeout_s=10.0,
        worker_start_timeout_s=60.0,
        shutdown_grace_s=5.0,
        models=[ModelConfig(name="echo", adapter="echo"), ModelConfig(name="sleep", adapter="sleep")],
    )
    base.update(overrides)
    return Settings(**base)


def gone(pid: int) -> bool:
    """The process has ended (a zombie waiting for its new parent to reap it counts as ended)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def alive(pid: int) -> bool:
    return not gone(pid)


def signal_worker(pid: int, signum: int) -> None:
    """Signal a worker this test's scheduler started (by pid, never by name)."""
    assert pid != os.getpid()
    os.kill(pid, signum)
