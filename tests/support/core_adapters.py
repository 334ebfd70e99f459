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


class GatedLoadAdapter(BaseAdapter):
    """A model whose load takes as long as the test wants: `load` returns once the file named by the
    `gate` option exists (it gives up after 120 s). Echoes its inputs."""

    name = "gated-load"
    device = "cpu"
    max_batch_size = 4
    max_delay_ms = 0.0

    def load(self, device: str) -> Any:
        import time
        from pathlib import Path

        gate = Path(self.options["gate"])
        deadline = time.monotonic() + 120
        while not gate.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test never opened {gate}")
            time.sleep(0.02)
        return {"opened": True}

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        return list(batch)


class EnvironmentAdapter(BaseAdapter):
    """Answers with what the worker's environment says of its GPU (`CUDA_VISIBLE_DEVICES`,
    `CUDA_DEVICE_ORDER`)."""

    name = "environment"
    device = "gpu"
    max_batch_size = 4
    max_delay_ms = 0.0

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        import os

        seen = {name: os.environ.get(name) for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
        return [seen for _ in batch]
