"""Direct-call rates of the text models: the ceiling that jobs through modelsched are measured against.

    .venv/bin/python scripts/bench_models.py        # minilm sentences/s at batch 1 and 32

The sentence is `WORKLOADS["minilm"].input` of the shared benchmark (/work/shared/bench/workloads.py,
or MODELSCHED_BENCH_WORKLOADS), so the figure is comparable with the peer servers'; torch runs with
that harness's threads (BENCH_TORCH_THREADS, default 1; inter-op 1). `scripts/bench.py` may import
`direct_minilm_rate`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORKLOADS_FILE = Path(os.environ.get("MODELSCHED_BENCH_WORKLOADS", "/work/shared/bench/workloads.py"))
FALLBACK_SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank."


@functools.cache
def _shared_workloads() -> Any | None:
    """The shared benchmark's workloads module (cheap: it imports torch only inside its loaders)."""
    if not WORKLOADS_FILE.is_file():
        return None
    spec = importlib.util.spec_from_file_location("bench_workloads", WORKLOADS_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def minilm_sentence() -> str:
    """The sentence one minilm request carries in the shared benchmark."""
    workloads = _shared_workloads()
    return workloads.WORKLOADS["minilm"].input if workloads is not None else FALLBACK_SENTENCE


def _configure_threads() -> None:
    """As the shared harness does: intra-op threads from BENCH_TORCH_THREADS (default 1), inter-op 1."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", "1")))
    with contextlib.suppress(RuntimeError):  # already set, or parallel work already ran in this process
        torch.set_num_interop_threads(1)


@functools.cache
def _loaded_minilm() -> tuple[Any, Any]:
    """The minilm adapter and its state on the CPU, loaded once per process."""
    from adapters.text import MiniLMAdapter

    _configure_threads()
    adapter = MiniLMAdapter()
    return adapter, adapter.load("cpu")


def direct_minilm_rate(batch_size: int, seconds: float = 3.0, repeats: int = 5) -> float:
    """Sentences/s of the minilm adapter's `predict` called in this process on batches of `batch_size`
    copies of the benchmark sentence (median of `repeats` windows of `seconds / repeats`)."""
    adapter, state = _loaded_minilm()
    batch = [minilm_sentence()] * batch_size
    adapter.predict(state, batch)  # warm up
    rates = []
    for _ in range(repeats):
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / repeats:
            adapter.predict(state, batch)
            count += batch_size
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> None:
    import torch

    _loaded_minilm()
    print(
        f"sentence: {minilm_sentence()!r} (from {WORKLOADS_FILE if WORKLOADS_FILE.is_file() else 'fallback'})"
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), {os.cpu_count()} cores")
    for size in (1, 32):
        print(f"minilm direct, batch {size:>2}: {direct_minilm_rate(size):,.0f} sentences/s")


if __name__ == "__main__":
    main()
