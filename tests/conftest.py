"""Fixtures shared by the rooms' tests: a scheduler factory that makes sure nothing it built
outlives the test, a fresh event loop, and the pages on loopback that the render tests render."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from scheduler import Scheduler
from scheduler.settings import Settings
from tests.support.pages import PageServer, page_server
from tests.support.polling import until_sync

CPU_ONLY = {"MODELSCHED_FORCE_CPU": "1"}


def child_pids() -> set[int]:
    """Live child processes of this test process, less multiprocessing's resource tracker (`spawn`
    starts it once per interpreter and it ends with the interpreter, not with a scheduler)."""
    pids = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE and "multiprocessing.resource_tracker" not in " ".join(
                child.cmdline()
            ):
                pids.add(child.pid)
    return pids


@pytest.fixture
def make_scheduler() -> Iterator[Callable[..., Scheduler]]:
    """`make_scheduler(settings, environ=..., scheduler_type=...)` -> a Scheduler (CPU only unless
    `environ` says otherwise). After the test, every child process that appeared during it must be
    gone: one still running is killed (by pid: ours) and fails the test."""
    before = child_pids()

    def make(settings: Settings, **options: Any) -> Scheduler:
        options.setdefault("environ", CPU_ONLY)
        return Scheduler(settings, **options)

    yield make
    with contextlib.suppress(AssertionError):  # a child may take a moment to exit after stop()
        until_sync(lambda: not child_pids() - before, timeout=10, message="children gone")
    leftover = child_pids() - before
    for pid in leftover:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not leftover, f"the test left child processes running: {sorted(leftover)}"


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh event loop, closed after the test (nothing runs it unless the test does)."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def server() -> Iterator[PageServer]:
    """The render tests' pages, served on 127.0.0.1 (see `tests.support.pages`)."""
    with page_server() as running:
        yield running
