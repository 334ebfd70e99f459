"""HTTP requests answered, tallied as plain dicts: a count by (route template, method, status code) and
a duration histogram by (route, method). One tally per process that answers requests: the main
process's (`RequestMetrics` feeds it) and each HTTP front's, which the front sends whole in its
heartbeats (`snapshot`). `RequestCollector` shows their sum as `modelsched_http_requests_total` and
`modelsched_http_request_seconds`, so the figures do not depend on which process answered.

A dict and a list are cheaper per request than prometheus_client's labelled children (a lock and a
label check on every `inc` and `observe`), and a tally travels as one msgpack value."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator

import msgspec
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)


class TallySnapshot(msgspec.Struct, array_like=True):
    """A tally as msgpack-able lists: counts `[route, method, code, n]`; times `[route, method,
    per-bucket counts (the last is +Inf), sum of seconds]`."""

    counts: list[tuple[str, str, int, int]]
    times: list[tuple[str, str, list[int], float]]


class RequestTally:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts: dict[tuple[str, str, int], int] = {}
        self.times: dict[tuple[str, str], tuple[list[int], list[float]]] = {}

    def observe(self, route: str, method: str, code: int, seconds: float) -> None:
        if method not in HTTP_METHODS:
            method = "other"  # the label's values stay few, whatever a client sends
        key = (route, method, code)
        self.counts[key] = self.counts.get(key, 0) + 1
        times = self.times.get((route, method))
        if times is None:
            times = self.times[(route, method)] = ([0] * (len(self.buckets) + 1), [0.0])
        times[0][bisect_left(self.buckets, seconds)] += 1
        times[1][0] += seconds

    def snapshot(self) -> TallySnapshot:
        return TallySnapshot(
            [(route, method, code, n) for (route, method, code), n in self.counts.items()],
            [(route, method, list(bins), total[0]) for (route, method), (bins, total) in self.times.items()],
        )

    def add(self, snapshot: TallySnapshot) -> None:
        """Another process's tally added to this one (buckets must be the same)."""
        for route, method, code, n in snapshot.counts:
            self.counts[(route, method, code)] = self.counts.get((route, method, code), 0) + n
        for route, method, bins, seconds in snapshot.times:
            times = self.times.get((route, method))
            if times is None:
                times = self.times[(route, method)] = ([0] * (len(self.buckets) + 1), [0.0])
            for index, n in enumerate(bins[: len(times[0])]):
                times[0][index] += n
            times[1][0] += seconds


def summed(tallies: Iterable[RequestTally | TallySnapshot]) -> RequestTally:
    total = RequestTally()
    for tally in tallies:
        total.add(tally.snapshot() if isinstance(tally, RequestTally) else tally)
    return total


class RequestCollector(Collector):
    """`/metrics`' request series: the sum of the tallies `sources()` gives at scrape time."""

    def __init__(self, sources: Callable[[], Iterable[RequestTally | TallySnapshot]]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        total = summed(self.sources())
        requests = CounterMetricFamily(
            "modelsched_http_requests",
            "HTTP requests answered, by route template, method and status code",
            labels=["route", "method", "code"],
        )
        for (route, method, code), n in sorted(total.counts.items()):
            requests.add_metric([route, method, str(code)], n)
        yield requests
        seconds = HistogramMetricFamily(
            "modelsched_http_request_seconds",
            "From a request's arrival to the end of its answer, by route template",
            labels=["route", "method"],
        )
        for (route, method), (bins, sum_s) in sorted(total.times.items()):
            cumulative, running = [], 0
            for bound, n in zip([*map(floatToGoString, total.buckets), "+Inf"], bins, strict=True):
                running += n
                cumulative.append((bound, float(running)))
            seconds.add_metric([route, method], cumulative, sum_s[0])
        yield seconds
