"""Adapters used by the core tests; workers import them by path (`tests.support.core_adapters:Class`)."""

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


class SplitAdapter(BaseAdapter):
    """Inputs are lists of numbers; each number is an item. Returns, per job, the doubled numbers and
    the sequence numbers of the batches its items ran in."""

    name = "split"
    device = "cpu"
    max_batch_size = 8
    max_delay_ms = 0.0

    def load(self, device: str) -> Any:
        return {"batches": 0}

    def validate(self, inputs: Any) -> None:
        if not isinstance(inputs, list) or not inputs:
            raise ValueError("inputs must be a non-empty list of numbers")

    def items(self, inputs: Any) -> list[Any]:
        return list(inputs)

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        state["batches"] += 1
        if len(batch) > self.max_batch_size:
            raise AssertionError(f"batch of {len(batch)} items exceeds {self.max_batch_size}")
        return [ValueError("bad item") if item == "bad" else (item * 2, state["batches"]) for item in batch]

    def assemble(self, inputs: Any, outputs: list[Any]) -> Any:
        return {
            "doubled": [value for value, _ in outputs],
            "batches": sorted({batch for _, batch in outputs}),
        }
