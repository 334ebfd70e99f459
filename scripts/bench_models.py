"""Direct-call rates of the text models, the limit a server is measured against.

    .venv/bin/python scripts/bench_models.py        # minilm sentences/s at batch 1 and 32
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank."


def direct_minilm_rate(batch_size: int, seconds: float = 3.0, repeats: int = 5, threads: int = 1) -> float:
    """Sentences/s of the minilm adapter's predict called in this process (median of `repeats`)."""
    import torch

    from adapters.text import MiniLMAdapter

    torch.set_num_threads(threads)
    adapter = MiniLMAdapter()
    state = adapter.load("cpu")
    batch = [SENTENCE] * batch_size
    adapter.predict(state, batch)
    rates = []
    for _ in range(repeats):
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / repeats:
            adapter.predict(state, batch)
            count += batch_size
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


if __name__ == "__main__":
    for size in (1, 32):
        print(f"minilm direct, batch {size}: {direct_minilm_rate(size):,.0f} sentences/s")
