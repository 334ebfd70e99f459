"""The daemon that the client and protocol tests share (one start for both modules): CPU only, one
worker, echo, sleep, mlp and minilm, a bearer token, callbacks allowed to 127.0.0.1, no render process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.daemon import Daemon, running_daemon

TOKEN = "s3cret"
MODELS = """
[[models]]
name = "echo"
adapter = "echo"

[[models]]
name = "sleep"
adapter = "sleep"

[[models]]
name = "mlp"
adapter = "mlp"

[[models]]
name = "minilm"
adapter = "minilm"
max_batch_size = 16
"""


@pytest.fixture(scope="session")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp_path = tmp_path_factory.mktemp("clients")
    config = tmp_path / "models.toml"
    config.write_text(MODELS)
    with running_daemon(
        tmp_path,
        token=TOKEN,
        MODELSCHED_CONFIG=str(config),
        MODELSCHED_RENDER_ENABLED="0",
        MODELSCHED_MAX_QUEUE="1000",
        MODELSCHED_WEBHOOK_ALLOW_HOSTS="127.0.0.1",
    ) as daemon:
        yield daemon


ERRORS_MODELS = """
[[models]]
name = "echo"
adapter = "echo"

[[models]]
name = "sleep"
adapter = "sleep"

[[models]]
name = "mlp"
adapter = "mlp"

[[models]]
name = "buggy"
adapter = "tests.support.fault_adapters:BuggyValidateAdapter"

[[models]]
name = "failing"
adapter = "tests.support.fault_adapters:FailingLoadAdapter"
options = {{ marker = "{marker}", attempts_log = "{attempts}" }}
"""
ERRORS_BODY_LIMIT = 1_000_000


@pytest.fixture(scope="session")
def errors_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The daemon of the error, hostile-input and metrics tests: a token, a 1 MB body limit, a model
    whose `validate` has a bug (`buggy`), one whose load always fails (`failing`), rendering on (the
    plain-HTTP engine reaches 127.0.0.1)."""
    tmp_path = tmp_path_factory.mktemp("errors")
    marker = tmp_path / "no-weights"
    marker.write_text("present: every load fails")
    config = tmp_path / "models.toml"
    config.write_text(ERRORS_MODELS.format(marker=marker, attempts=tmp_path / "attempts.log"))
    with running_daemon(
        tmp_path,
        token=TOKEN,
        MODELSCHED_CONFIG=str(config),
        MODELSCHED_MAX_BODY_BYTES=str(ERRORS_BODY_LIMIT),
        MODELSCHED_RENDER_ALLOW_HOSTS="127.0.0.1",
        MODELSCHED_RENDER_RETRIES="1",
        MODELSCHED_LOG_LEVEL="info",
    ) as daemon:
        yield daemon
