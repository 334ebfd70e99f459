"""Counters and histograms kept as plain dicts, for the series counted per job or per request: a dict
update and a `bisect` cost a fraction of prometheus_client's `inc`/`observe` on a labelled child
(a lock on each, and a Python loop over the buckets for a histogram), a cost the main process paid
several times per job. `TallyCollector` shows them in `/metrics` as the counters and histograms they
stand for; a tally's `counts` can be added to another process's (the HTTP fronts' requests).

Series that change a few times a minute (model loads, pipeline stages) stay prometheus_client's."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Labels = tuple[str, ...]


class CounterTally:
    """A counter by label values: `counts[labels] += n`."""

    def __init__(self, name: str, documentation: str, labels: Labels) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.counts: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1) -> None:
        counts = self.counts
        counts[labels] = counts.get(labels, 0) + amount

    def family(self, extra: Iterable[dict[Labels, float]] = ()) -> CounterMetricFamily:
        """The series, with other processes' counts (`extra`) added."""
        total = dict(self.counts)
        for counts in extra:
            for labels, n in counts.items():
                total[labels] = total.get(labels, 0) + n
        family = CounterMetricFamily(self.name, self.documentation, labels=list(self.labels))
        for labels, n in sorted(total.items()):
            family.add_metric(list(labels), n)
        return family


class HistogramTally:
    """A histogram by label values: per-bucket counts (the last is +Inf, past every bound; not
    cumulative until shown) and the sum of the values."""

    def __init__(self, name: str, documentation: str, labels: Labels, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation, self.labels, self.buckets = name, documentation, labels, buckets
        self.bins: dict[Labels, list[float]] = {}  # per bucket, then the sum last

    def observe(self, labels: Labels, value: float) -> None:
        bins = self.bins_of(labels)
        bins[bisect_left(self.buckets, value)] += 1
        bins[-1] += value

    def bins_of(self, labels: Labels) -> list[float]:
        """The bins of `labels`' series (made empty for the first), for a caller counting many values
        into them: `bins[bisect_left(buckets, value)] += 1` and `bins[-1] += value` each."""
        bins = self.bins.get(labels)
        if bins is None:
            bins = self.bins[labels] = [0.0] * (len(self.buckets) + 2)
        return bins

    def add(self, labels: Labels, bins: list[float], into: dict[Labels, list[float]] | None = None) -> None:
        """Another tally's bins for `labels` added to these (or to `into`, bins of the same shape)."""
        target = self.bins if into is None else into
        mine = target.get(labels)
        if mine is None:
            mine = target[labels] = [0.0] * (len(self.buckets) + 2)
        for index, n in enumerate(bins[: len(mine)]):
            mine[index] += n

    def family(self, extra: Iterable[dict[Labels, list[float]]] = ()) -> HistogramMetricFamily:
        total = {labels: list(bins) for labels, bins in self.bins.items()}
        for other in extra:
            for labels, bins in other.items():
                self.add(labels, bins, into=total)
        family = HistogramMetricFamily(self.name, self.documentation, labels=list(self.labels))
        bounds = [*map(floatToGoString, self.buckets), "+Inf"]
        for labels, bins in sorted(total.items()):
            cumulative, running = [], 0.0
            for bound, n in zip(bounds, bins[:-1], strict=True):
                running += n
                cumulative.append((bound, running))
            family.add_metric(list(labels), cumulative, bins[-1])
        return family


class TallyCollector(Collector):
    def __init__(self, tallies: Iterable[CounterTally | HistogramTally]) -> None:
        self.tallies = list(tallies)

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        for tally in self.tallies:
            yield tally.family()
