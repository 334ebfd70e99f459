"""The `cpu-call` model: runs an importable Python function in a CPU worker, for
`Scheduler.run_cpu` and `Scheduler.map_cpu` (the main process builds its jobs directly).

Inputs: `{"fn": "package.module:qualified.name", "args": [...], "kwargs": {...}}`, or
`{"fn": ..., "map": [item, ...]}` for one call per item (a chunk of `map_cpu`). Arguments and results
travel as msgpack values. `validate` refuses every submission: a client (REST, a pipeline stage)
can never name a function to run.
"""

from __future__ import annotations

import importlib
from typing import Any

from adapters.base import BaseAdapter, ItemError

CPU_CALL_MODEL = "cpu-call"


def resolve_function(path: str) -> Any:
    """`package.module:qualified.name` -> the object; ValueError saying why it cannot be found."""
    module_name, _, qualified = path.partition(":")
    if not module_name or not qualified:
        raise ValueError(f"{path!r} is not 'package.module:name'")
    target: Any = importlib.import_module(module_name)
    for part in qualified.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{path!r} is not callable")
    return target


class CallAdapter(BaseAdapter):
    name = CPU_CALL_MODEL
    device = "cpu"
    max_batch_size = 8
    max_delay_ms = 0.0

    def validate(self, inputs: Any) -> None:
        raise ValueError(
            f"the {CPU_CALL_MODEL} model runs only functions given to Scheduler.run_cpu or map_cpu; "
            "it takes no submissions"
        )

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        return [self._call(item) for item in batch]

    @staticmethod
    def _call(item: dict[str, Any]) -> Any:
        try:
            function = resolve_function(item["fn"])
            if "map" in item:
                return [function(value) for value in item["map"]]
            return function(*item.get("args", ()), **item.get("kwargs", {}))
        except Exception as exc:
            return ItemError(f"{type(exc).__name__}: {exc}")
