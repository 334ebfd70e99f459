"""What jobs cost: a worker's dollars per second (`[costs]` in the config: per device class, `cpu`
and `gpu`, and per GPU name), a job's cost as that rate times its share of the batches it ran in, and
the running totals the status, the page and the metrics show (per model, per pipeline, per device
class, and per 1,000 jobs).

A batch of 32 items that ran 0.1 s on a GPU at $0.0015/s costs 0.1 x 0.0015 = $0.00015, and each of
its items 1/32 of that: the worker measures the batch and sends each job its share (`compute_s`).
Work whose result is dropped (a job cancelled or timed out while it ran) is still paid for: it counts
in the totals per model and device, not in any job's."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from scheduler.core.jobs import Job

DEFAULT_RATES: dict[str, float] = {"cpu": 0.0002, "gpu": 0.0015}  # dollars per worker-second
DEVICE_CLASSES = ("cpu", "gpu")


def rate_per_s(rates: Mapping[str, float], gpu_name: str | None) -> float:
    """Dollars per second of a worker: on a GPU its card's name if `rates` prices it, else `gpu`;
    on the CPU `cpu`. Rates not given take `DEFAULT_RATES`."""
    if gpu_name is None:
        return rates.get("cpu", DEFAULT_RATES["cpu"])
    return rates.get(gpu_name, rates.get("gpu", DEFAULT_RATES["gpu"]))


def share_cost(rate: float, compute_s: float) -> float:
    return rate * compute_s


class CostTotals(msgspec.Struct):
    """The running totals since the daemon started, as `GET /system/status` shows them."""

    rates: dict[str, float]
    total_usd: float
    by_model: dict[str, float]
    by_device: dict[str, float]
    by_pipeline: dict[str, float]
    jobs_ended: int
    jobs_cost_usd: float
    per_1000_jobs_usd: float | None
    seconds_by_device: dict[str, float]


class CostLedger:
    """Adds up what the workers spent (`charge`, per batch share) and what ended jobs cost (`ended`)."""

    def __init__(self, rates: Mapping[str, float]) -> None:
        self.rates = {**DEFAULT_RATES, **rates}
        self.seconds_by_device: dict[str, float] = {}
        self.by_pipeline: dict[str, float] = {}
        self.jobs_ended = 0
        self.jobs_cost_usd = 0.0
        self.by_model_device: dict[tuple[str, str], float] = {}  # the spend; the other sums are read off it

    def rate(self, gpu_name: str | None) -> float:
        return rate_per_s(self.rates, gpu_name)

    def charge(self, model: str, gpu_name: str | None, compute_s: float) -> float:
        """A worker spent `compute_s` on `model` (the jobs of one message of results): its cost, added
        to the totals. Each job's own cost is the same rate times its share."""
        cost = share_cost(self.rate(gpu_name), compute_s)
        device = "cpu" if gpu_name is None else "gpu"
        self.seconds_by_device[device] = self.seconds_by_device.get(device, 0.0) + compute_s
        key = (model, device)
        self.by_model_device[key] = self.by_model_device.get(key, 0.0) + cost
        return cost

    @property
    def total_usd(self) -> float:
        return sum(self.by_model_device.values())

    @property
    def by_model(self) -> dict[str, float]:
        return self._summed_by(0)

    @property
    def by_device(self) -> dict[str, float]:
        return self._summed_by(1)

    def _summed_by(self, part: int) -> dict[str, float]:
        sums: dict[str, float] = {}
        for key, dollars in self.by_model_device.items():
            sums[key[part]] = sums.get(key[part], 0.0) + dollars
        return sums

    def ended(self, cost_usd: float, pipeline: str | None) -> None:
        """A client's job ended (a pipeline's: with the sum of its stages)."""
        self.jobs_ended += 1
        self.jobs_cost_usd += cost_usd
        if pipeline is not None:
            self.by_pipeline[pipeline] = self.by_pipeline.get(pipeline, 0.0) + cost_usd

    def count_ends(self, jobs: list[Job]) -> None:
        """Ended jobs (a `JobEndings` tally): each client's job as `ended` says."""
        for job in jobs:
            if job.parent_id is None:  # a client's job (a pipeline's with its stages' costs)
                self.ended(job.cost_usd, job.pipeline)

    def totals(self) -> CostTotals:
        return CostTotals(
            rates=dict(self.rates),
            total_usd=self.total_usd,
            by_model=self.by_model,
            by_device=self.by_device,
            by_pipeline=dict(self.by_pipeline),
            jobs_ended=self.jobs_ended,
            jobs_cost_usd=self.jobs_cost_usd,
            per_1000_jobs_usd=1000 * self.jobs_cost_usd / self.jobs_ended if self.jobs_ended else None,
            seconds_by_device=dict(self.seconds_by_device),
        )
