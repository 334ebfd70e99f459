"""Request tallies (`scheduler/http/request_tally.py`): one process's counts and histograms, a front's
sent as a snapshot and summed with the main process's, shown as Prometheus series equal to what one
process answering everything would show."""

from __future__ import annotations

import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.http.request_tally import RequestCollector, RequestTally, TallySnapshot, summed


def series(
    tallies: list[RequestTally | TallySnapshot],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RequestCollector(lambda: tallies))
    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


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
    assert series([main, carried]) == series([one])
    shown = series([main, carried])
    infer = (("method", "POST"), ("route", "/models/{model}/infer"))
    assert shown[("modelsched_http_requests_total", (("code", "200"), *infer))] == 2
    assert (
        shown[
            ("modelsched_http_requests_total", (("code", "401"), ("method", "other"), ("route", "unmatched")))
        ]
        == 1
    )
    assert shown[("modelsched_http_request_seconds_bucket", (("le", "0.0005"), *infer))] == 1
    assert shown[("modelsched_http_request_seconds_bucket", (("le", "0.005"), *infer))] == 2
    assert shown[("modelsched_http_request_seconds_bucket", (("le", "+Inf"), *infer))] == 3
    assert shown[("modelsched_http_request_seconds_count", infer)] == 3
    assert abs(shown[("modelsched_http_request_seconds_sum", infer)] - 0.2034) < 1e-9
    jobs = (("method", "POST"), ("route", "/jobs"))
    assert shown[("modelsched_http_request_seconds_bucket", (("le", "300.0"), *jobs))] == 0
    assert shown[("modelsched_http_request_seconds_bucket", (("le", "+Inf"), *jobs))] == 1
    assert summed([]).counts == {}
