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
