"""`Backoff`: how long to wait after the n-th consecutive failure. One policy for every retry in the
daemon: a child process that keeps failing to boot (model workers and the render process), a model
whose load failed, a render try that failed. It lives in `workers/` because the render process uses
it too and child processes import nothing from `scheduler/`."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    """`first_s` after one failure, doubling per failure after that, capped at `cap_s`; each delay is
    shortened by a random share of up to `jitter` (0.2: 80-100% of it), so that children failing
    together do not retry in step. Zero failures: no wait."""

    first_s: float
    cap_s: float
    jitter: float = 0.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.first_s < 0 or self.cap_s < self.first_s or not 0 <= self.jitter < 1:
            raise ValueError(
                f"invalid back-off: first_s={self.first_s}, cap_s={self.cap_s}, jitter={self.jitter}"
            )

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        full = min(self.cap_s, self.first_s * 2.0 ** min(failures - 1, 32))
        return full * (1.0 - self.jitter * self.rng.random()) if self.jitter else full
