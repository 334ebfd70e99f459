"""Waiting for a condition in tests: poll with a deadline, never sleep a fixed time and hope."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

Value = TypeVar("Value")


async def until(
    condition: Callable[[], object], timeout: float = 30.0, interval: float = 0.02, message: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s")
        await asyncio.sleep(interval)


async def until_read(
    read: Callable[[], Awaitable[Value]],
    done: Callable[[Value], object],
    timeout: float = 30.0,
    interval: float = 0.02,
    message: str = "condition",
) -> Value:
    """`await read()` again until `done` holds of what it returned; that value."""
    deadline = time.monotonic() + timeout
    while not done(value := await read()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s (last read: {value!r})")
        await asyncio.sleep(interval)
    return value


def until_sync(
    condition: Callable[[], object], timeout: float = 30.0, interval: float = 0.02, message: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s")
        time.sleep(interval)
