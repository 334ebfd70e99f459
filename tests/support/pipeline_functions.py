"""Module-level functions and adapters for the pipeline tests: `run_cpu` refuses what a worker could
not import, so what it runs lives here; `TallyAdapter` appends one line per run to a file, so a
test can count how often each stage ran each job (across daemon restarts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.base import BaseAdapter


def square(value: float) -> float:
    return value * value


def add(left: float, right: float, *, scale: float = 1.0) -> float:
    return (left + right) * scale


def fail(message: str) -> None:
    raise ValueError(message)


class TallyAdapter(BaseAdapter):
    """Inputs `{"key": str, ...}` pass through unchanged, with `stages` (the stage names seen so far)
    extended by this model's `label` option; every run appends `label key` to `options.path`."""

    name = "tally"
    device = "cpu"
    max_batch_size = 16
    max_delay_ms = 1.0

    def validate(self, inputs: Any) -> None:
        if not isinstance(inputs, dict) or not isinstance(inputs.get("key"), str):
            raise ValueError("inputs must be {'key': str, ...}")

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        label = self.options["label"]
        with open(Path(self.options["path"]), "a") as tally:
            tally.writelines(f"{label} {item['key']}\n" for item in batch)
        return [{**item, "stages": [*item.get("stages", []), label]} for item in batch]


class SlowTallyAdapter(TallyAdapter):
    """A `TallyAdapter` that sleeps `sleep_ms` (option, default 0) before each batch: a slow stage,
    so a test has a window in which jobs are between stages."""

    name = "slow-tally"

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        import time

        time.sleep(float(self.options.get("sleep_ms", 0)) / 1000)
        return super().predict(state, batch)


class BuggyValidateAdapter(BaseAdapter):
    """Its `validate` reads `inputs["x"]` without checking: a KeyError, not the ValueError the
    protocol asks for (a model author's bug the scheduler must survive)."""

    name = "buggy-validate"
    device = "cpu"
    max_batch_size = 8

    def validate(self, inputs: Any) -> None:
        inputs["x"]

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        return list(batch)
