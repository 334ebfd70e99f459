"""The fronts in `/metrics`: how many serve, how often they were respawned, and the requests they
answered, summed over every front (and the ones that have ended), so the figures do not depend on
which front a scrape reached."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from scheduler.http.fronts.supervision import FrontSet


class FrontCollector(Collector):
    def __init__(self, fronts: FrontSet) -> None:
        self.fronts = fronts

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield GaugeMetricFamily(
            "modelsched_http_fronts_up", "HTTP front processes serving", value=self.fronts.up()
        )
        yield CounterMetricFamily(
            "modelsched_http_front_restarts", "HTTP front processes respawned", value=self.fronts.restarts
        )
        yield CounterMetricFamily(
            "modelsched_http_front_requests",
            "Requests answered by the HTTP fronts, all fronts together",
            value=self.fronts.requests_answered(),
        )
