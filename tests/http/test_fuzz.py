"""Fuzz the REST API from its own OpenAPI schema: no request, however malformed, gets a 500, and the
daemon still answers afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.support.daemon import Daemon, running_daemon

# Only fast models: a fuzzed `sleep` job would hold its request for the whole infer wait.
FUZZ_CONFIG = """
[[models]]
name = "echo"
adapter = "echo"

[[models]]
name = "mlp"
adapter = "mlp"
"""


@pytest.fixture(scope="module")
def fuzzed_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp_path = tmp_path_factory.mktemp("fuzz")
    config = tmp_path / "fuzz.toml"
    config.write_text(FUZZ_CONFIG)
    with running_daemon(tmp_path, MODELSCHED_CONFIG=str(config)) as daemon:
        yield daemon


def test_no_request_gets_a_500(fuzzed_daemon: Daemon) -> None:
    """Every operation of the schema, with cases generated from it (valid and invalid ones)."""
    api = schemathesis.openapi.from_url(f"{fuzzed_daemon.url}/openapi.json")
    failures: list[str] = []
    calls: list[int] = []
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 12

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def call(case: schemathesis.Case) -> None:
            response = case.call(base_url=fuzzed_daemon.url, timeout=30)
            calls.append(response.status_code)
            if response.status_code == 500 or (
                response.status_code > 500 and response.status_code not in {502, 503, 504}
            ):
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}"
                )

        call()
    assert not failures, "\n".join(failures[:10])
    assert len(calls) >= 10 * len(operations)  # the fuzz really ran
    assert any(400 <= code < 500 for code in calls) and any(code < 300 for code in calls)


def test_the_daemon_still_answers_after_the_fuzz(fuzzed_daemon: Daemon, tmp_path: Path) -> None:
    assert httpx.get(f"{fuzzed_daemon.url}/readyz", timeout=10).status_code == 200
    answer = httpx.post(f"{fuzzed_daemon.url}/models/echo/infer", json={"inputs": "still here"}, timeout=30)
    assert answer.json()["result"] == "still here"
    assert "Traceback" not in fuzzed_daemon.log()
