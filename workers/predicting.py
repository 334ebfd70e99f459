"""Running one batch through an adapter so that a bad item fails alone: preprocess per item, one
`predict` call, then, when the batch raises, the items again in halves (out of GPU memory) or one by
one (any other error), and `postprocess` per output. Pure of I/O: the worker's loop
(`workers.runtime`) calls it and sends what it returns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adapters.base import BaseAdapter
from workers import protocol as m

ItemResult = tuple[Any, str | None, m.ErrorKind | None]  # (output, error, error kind)


def is_out_of_memory(exc: BaseException) -> bool:
    name = type(exc).__name__
    return name in {"OutOfMemoryError", "OutOfMemory"} or "out of memory" in str(exc).lower()


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def predict_isolated(
    adapter: BaseAdapter, state: Any, items: list[Any], free_memory: Callable[[], None]
) -> list[ItemResult]:
    """Run the items as one batch; if it fails, find the failing items so the others complete.
    `free_memory` is called after an out-of-memory error, before the halves are tried."""
    results: list[ItemResult | None] = [None] * len(items)
    prepared: list[tuple[int, Any]] = []
    for position, item in enumerate(items):
        try:
            prepared.append((position, adapter.preprocess(item)))
        except Exception as exc:
            results[position] = (None, describe(exc), m.ErrorKind.INPUT)
    _predict_into(adapter, state, prepared, results, free_memory)
    return [
        result or (None, "the batch gave no result for this item", m.ErrorKind.MODEL) for result in results
    ]


def _predict_into(
    adapter: BaseAdapter,
    state: Any,
    prepared: list[tuple[int, Any]],
    results: list[ItemResult | None],
    free_memory: Callable[[], None],
) -> None:
    if not prepared:
        return
    try:
        outputs = adapter.predict(state, [item for _, item in prepared])
        if len(outputs) != len(prepared):
            raise RuntimeError(f"predict returned {len(outputs)} outputs for {len(prepared)} inputs")
    except Exception as exc:
        if is_out_of_memory(exc):
            free_memory()
            if len(prepared) == 1:
                results[prepared[0][0]] = (None, "out of GPU memory", m.ErrorKind.OOM)
                return
            half = len(prepared) // 2
            _predict_into(adapter, state, prepared[:half], results, free_memory)
            _predict_into(adapter, state, prepared[half:], results, free_memory)
            return
        if len(prepared) == 1:
            results[prepared[0][0]] = (None, describe(exc), m.ErrorKind.MODEL)
            return
        for single in prepared:  # isolate: one bad item fails alone
            _predict_into(adapter, state, [single], results, free_memory)
        return
    for (position, _), output in zip(prepared, outputs, strict=True):
        if isinstance(output, BaseException):
            results[position] = (None, describe(output), m.ErrorKind.MODEL)
            continue
        try:
            results[position] = (adapter.postprocess(output), None, None)
        except Exception as exc:
            results[position] = (None, describe(exc), m.ErrorKind.MODEL)
