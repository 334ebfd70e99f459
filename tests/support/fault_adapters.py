"""Adapters that fail on purpose, for the fault tests; workers import them by path
(`tests.support.fault_adapters:Class`)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from adapters.base import BaseAdapter


class FailingLoadAdapter(BaseAdapter):
    """`load` raises while the file named by the `marker` option exists; every load attempt appends a
    line to the file named by `attempts_log`, so a test can count them."""

    name = "failing-load"
    device = "cpu"
    max_batch_size = 4
    max_delay_ms = 0.0

    def load(self, device: str) -> Any:
        with open(self.options["attempts_log"], "a") as handle:
            handle.write(f"{os.getpid()}\n")
        if Path(self.options["marker"]).exists():
            raise RuntimeError("weights file is missing (test)")
        return {"loaded_at": time.time()}

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        return [{"ok": item} for item in batch]


class OutOfMemoryAdapter(BaseAdapter):
    """Like a model on a small GPU: `predict` raises `torch.cuda.OutOfMemoryError` for a batch larger
    than the `max_fit` option, and for any batch holding the input "huge". Each output is the size of
    the batch the item finally ran in."""

    name = "oom"
    device = "cpu"
    max_batch_size = 16
    max_delay_ms = 50.0

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        import torch

        if len(batch) > int(self.options.get("max_fit", 2)) or "huge" in batch:
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {len(batch)} GiB (test)"
            )
        return [len(batch)] * len(batch)


class CrashAdapter(BaseAdapter):
    """`{"ms": N}` sleeps N ms; `{"signal": S}` kills its own worker process with signal S (11: a
    segfault, as a native library would)."""

    name = "crash"
    device = "cpu"
    max_batch_size = 4
    max_delay_ms = 0.0

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        outputs = []
        for item in batch:
            if "signal" in item:
                os.kill(os.getpid(), int(item["signal"]))
                time.sleep(5)  # a signal that does not end the process at once still ends it
            time.sleep(float(item.get("ms", 0)) / 1000.0)
            outputs.append({"ok": True})
        return outputs


class SlowLoadAdapter(BaseAdapter):
    """Its `load` sleeps `options.load_s` seconds (a large model on a busy machine), then echoes."""

    name = "slow-load"
    device = "cpu"

    def load(self, device: str) -> Any:
        time.sleep(float(self.options.get("load_s", 1.0)))
        return None

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        return list(batch)


class BuggyValidateAdapter(BaseAdapter):
    """A model with a bug in `validate`: for the input "bug" it raises KeyError (not the ValueError
    that refuses an input), whose text must never reach a client; any other input is echoed."""

    name = "buggy"
    device = "cpu"
    max_batch_size = 4
    max_delay_ms = 0.0

    def validate(self, inputs: Any) -> None:
        if inputs == "bug":
            raise KeyError("internal detail that must not leak")

    def load(self, device: str) -> Any:
        return None

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        return list(batch)
