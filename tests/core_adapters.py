"""Adapters used by the core tests; workers import them by path (`tests.core_adapters:Class`)."""

from __future__ import annotations

from typing import Any

from adapters.base import BaseAdapter


class PickyAdapter(BaseAdapter):
    """Doubles numbers, but its batched `predict` raises when any input is negative: the worker
    must isolate the bad item so its batch-mates still complete."""

    name = "picky"
    device = "cpu"
    max_batch_size = 16
    max_delay_ms = 50.0

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        if any(item < 0 for item in batch):
            raise ValueError("negative input")
        return [item * 2 for item in batch]


class RecordingAdapter(BaseAdapter):
    """Returns the size of the batch each item ran in."""

    name = "recording"
    device = "cpu"
    max_batch_size = 64
    max_delay_ms = 20.0

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        return [len(batch)] * len(batch)
