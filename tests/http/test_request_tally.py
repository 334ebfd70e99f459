"""Tallies (`scheduler/http/tally.py`, `request_tally.py`): the series they show are the ones
prometheus_client's own Counter and Histogram show for the same values, and a front's request tally,
sent as a snapshot and summed with the main process's, shows what one process answering every
request would show."""

from __future__ import annotations

import msgspec
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from scheduler.http.request_tally import LATENCY_BUCKETS, RequestCollector, RequestTally, TallySnapshot
from scheduler.http.tally import CounterTally, HistogramTally, TallyCollector

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def series(*collectors: Collector) -> Series:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    found: Series = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_tallies_show_what_prometheus_clients_own_metrics_show() -> None:
    values = [0.0, 0.0004, 0.0005, 0.003, 0.2, 1, 2.5, 299.0, 400.0]
    registry = CollectorRegistry()
    counter = Counter("t_jobs", "jobs", ["model", "status"], registry=registry)
    histogram = Histogram("t_seconds", "seconds", ["model"], buckets=LATENCY_BUCKETS, registry=registry)
    counts = CounterTally("t_jobs", "jobs", ("model", "status"))
    times = HistogramTally("t_seconds", "seconds", ("model",), LATENCY_BUCKETS)
    for index, value in enumerate(values):
        model = "echo" if index % 3 else "mlp"
        counter.labels(model, "completed").inc()
        counts.inc((model, "completed"))
        histogram.labels(model).observe(value)
        times.observe((model,), value)
    counter.labels("mlp", "error").inc(2.0)
    counts.inc(("mlp", "error"), 2.0)
    registry_series: Series = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                registry_series[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert registry_series and series(TallyCollector([counts, times])) == registry_series


def test_a_front_tally_sums_with_the_main_process_as_one_process_would_count() -> None:
    requests = [
        ("/models/{model}/infer", "POST", 200, 0.003),
        ("/models/{model}/infer", "POST", 200, 0.2),
        ("/models/{model}/infer", "POST", 422, 0.0004),
        ("/jobs/{job_id}", "GET", 404, 0.001),
        ("unmatched", "BREW", 401, 0.0001),  # an unknown method is `other`
        ("/jobs", "POST", 202, 400.0),  # past the last bucket: +Inf only
    ]
    one, main, front = RequestTally(), RequestTally(), RequestTally()
    for index, request in enumerate(requests):
        one.observe(*request)
        (main if index % 2 else front).observe(*request)
    carried = msgspec.msgpack.decode(msgspec.msgpack.encode(front.snapshot()), type=TallySnapshot)
    shown = series(RequestCollector(main, lambda: [carried]))
    assert shown == series(RequestCollector(one, lambda: []))
    infer = (("method", "POST"), ("route", "/models/{model}/infer"))
    assert shown[("modelsched_http_requests_total", (("code", "200"), *infer))] == 2
    refused = (("code", "401"), ("method", "other"), ("route", "unmatched"))
    assert shown[("modelsched_http_requests_total", refused)] == 1
    assert shown[("modelsched_http_request_seconds_bucket", (("le", "0.0005"), *infer))] == 1
    assert shown[("modelsched_http_request_seconds_bucket", (("le", "0.005"), *infer))] == 2
    assert shown[("modelsched_http_request_seconds_bucket", (("le", "+Inf"), *infer))] == 3
    assert shown[("modelsched_http_request_seconds_count", infer)] == 3
    assert abs(shown[("modelsched_http_request_seconds_sum", infer)] - 0.2034) < 1e-9
    jobs = (("method", "POST"), ("route", "/jobs"))
    assert shown[("modelsched_http_request_seconds_bucket", (("le", "300.0"), *jobs))] == 0
    assert shown[("modelsched_http_request_seconds_bucket", (("le", "+Inf"), *jobs))] == 1
