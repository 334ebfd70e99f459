"""HTTP requests answered, tallied (`tally`): a count by (route template, method, status code) and a
duration histogram by (route, method). One tally per process that answers requests: the main
process's (`RequestMetrics` feeds it) and each HTTP front's, which the front sends whole in its
heartbeats (`snapshot`). `RequestCollector` shows their sum as `modelsched_http_requests_total` and
`modelsched_http_request_seconds`, so the figures do not depend on which process answered."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import msgspec
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from scheduler.http.tally import CounterTally, HistogramTally

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
    per-bucket counts then the sum of seconds]`."""

    counts: list[tuple[str, str, str, float]]
    times: list[tuple[str, str, list[float]]]


class RequestTally:
    def __init__(self) -> None:
        self.requests = CounterTally(
            "modelsched_http_requests",
            "HTTP requests answered, by route template, method and status code",
            ("route", "method", "code"),
        )
        self.seconds = HistogramTally(
            "modelsched_http_request_seconds",
            "From a request's arrival to the end of its answer, by route template",
            ("route", "method"),
            LATENCY_BUCKETS,
        )

    def observe(self, route: str, method: str, code: int, seconds: float) -> None:
        if method not in HTTP_METHODS:
            method = "other"  # the label's values stay few, whatever a client sends
        self.requests.inc((route, method, str(code)))
        self.seconds.observe((route, method), seconds)

    def snapshot(self) -> TallySnapshot:
        return TallySnapshot(
            [(route, method, code, n) for (route, method, code), n in self.requests.counts.items()],
            [(route, method, list(bins)) for (route, method), bins in self.seconds.bins.items()],
        )

    def add(self, snapshot: TallySnapshot) -> None:
        """Another process's tally added to this one."""
        for route, method, code, n in snapshot.counts:
            self.requests.inc((route, method, code), n)
        for route, method, bins in snapshot.times:
            self.seconds.add((route, method), bins)


class RequestCollector(Collector):
    """`/metrics`' request series: this process's tally plus the snapshots `others()` gives at scrape
    time (the fronts')."""

    def __init__(self, tally: RequestTally, others: Callable[[], Iterable[TallySnapshot]]) -> None:
        self.tally = tally
        self.others = others

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        others = RequestTally()
        for snapshot in self.others():
            others.add(snapshot)
        yield self.tally.requests.family([others.requests.counts])
        yield self.tally.seconds.family([others.seconds.bins])
