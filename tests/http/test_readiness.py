"""Readiness that means the model is loaded: a real daemon with preloaded models whose loads the test
controls (a load that waits for a file; a load that fails while a file exists), `/readyz` and
`/models/{m}/ready` through each state, without the token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.support.daemon import Daemon, running_daemon
from tests.support.polling import until_sync

TOKEN = "s3cret"


def write_config(tmp_path: Path, models: str) -> Path:
    config = tmp_path / "models.toml"
    config.write_text(f"render_enabled = false\n{models}")
    return config


def model_states(daemon: Daemon) -> dict[str, dict[str, Any]]:
    with daemon.client() as client:
        return {model["name"]: model for model in client.get("/models").json()["models"]}


def test_readyz_is_503_until_the_preloaded_model_is_loaded_then_200(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    config = write_config(
        tmp_path,
        f"""
[[models]]
name = "gated"
adapter = "tests.support.core_adapters:GatedLoadAdapter"
preload = true
options = {{ gate = "{gate}" }}

[[models]]
name = "echo"
adapter = "echo"
""",
    )
    with running_daemon(
        tmp_path,
        token=TOKEN,
        ready_path="/healthz",
        MODELSCHED_CONFIG=str(config),
        MODELSCHED_CPU_WORKERS="2",  # one holds the slow load, the other runs jobs meanwhile
        MODELSCHED_LOG_LEVEL="info",
    ) as daemon:
        open_probe = httpx.Client(base_url=daemon.url, timeout=10)  # no token: the probes need none
        until_sync(
            lambda: model_states(daemon)["gated"]["state"] == "loading", timeout=60, message="gated loading"
        )
        answer = open_probe.get("/readyz")
        assert answer.status_code == 503, answer.text
        assert answer.json() == {
            "status": "models not ready",
            "reason": "gated loading",
            "models": {"gated": "loading"},
        }
        assert open_probe.get("/healthz").status_code == 200
        assert open_probe.get("/models").status_code == 401  # the rest still wants the token
        with daemon.client() as client:
            gated = client.get("/models/gated/ready")
            assert gated.status_code == 503
            assert gated.json() == {
                "model": "gated",
                "ready": False,
                "state": "loading",
                "workers": [],
                "preload": True,
                "error": None,
            }
            echo = client.get("/models/echo/ready")  # not preloaded: loaded by its first job
            assert echo.status_code == 503 and echo.json()["state"] == "unloaded"
            assert client.get("/models/nope/ready").status_code == 404
            status_models = {m["name"]: m for m in client.get("/system/status").json()["models"]}
            assert status_models["gated"]["state"] == "loading" and status_models["gated"]["preload"]
            # Jobs of other models run meanwhile, on the worker the load does not hold.
            until_sync(
                lambda: (
                    sum(w["state"] == "ready" for w in client.get("/system/status").json()["workers"]) == 2
                ),
                timeout=60,
                message="both workers ready",
            )
            done = client.post("/models/echo/infer", json={"inputs": {"text": "hi"}}).json()
            assert done["status"] == "completed"
            assert open_probe.get("/readyz").status_code == 503

            gate.touch()  # the load may end now
            until_sync(lambda: open_probe.get("/readyz").status_code == 200, timeout=60, message="ready")
            assert open_probe.get("/readyz").json() == {"status": "ready"}
            gated = client.get("/models/gated/ready")
            assert gated.status_code == 200 and gated.json()["state"] == "ready"
            assert gated.json()["workers"] == model_states(daemon)["gated"]["ready_on"] != []
            assert client.post("/models/gated/infer", json={"inputs": [1, 2]}).json()["result"] == [1, 2]

            # Unloaded by request: it stays unloaded (no reload behind the operator's back), and
            # readiness no longer waits for it; a load by request brings the preload back.
            assert client.post("/models/gated/unload").json()["workers"]
            until_sync(lambda: model_states(daemon)["gated"]["state"] == "unloaded", message="unloaded")
            assert open_probe.get("/readyz").status_code == 200
            assert not model_states(daemon)["gated"]["preload"]
            client.post("/models/gated/load")
            until_sync(lambda: model_states(daemon)["gated"]["state"] == "ready", message="loaded again")
            assert model_states(daemon)["gated"]["preload"]
        open_probe.close()
    assert "preloading gated on cpu-w" in daemon.log()


def test_a_failed_preload_is_failed_with_its_message_and_tried_again_with_backoff(tmp_path: Path) -> None:
    marker, attempts = tmp_path / "broken", tmp_path / "attempts"
    marker.touch()
    config = write_config(
        tmp_path,
        f"""
[[models]]
name = "flaky"
adapter = "tests.support.fault_adapters:FailingLoadAdapter"
preload = true
options = {{ marker = "{marker}", attempts_log = "{attempts}" }}
""",
    )
    with (
        running_daemon(
            tmp_path,
            ready_path="/healthz",
            MODELSCHED_CONFIG=str(config),
            MODELSCHED_MODEL_LOAD_BACKOFF_S="1",
            MODELSCHED_LOG_LEVEL="info",
        ) as daemon,
        daemon.client() as client,
    ):
        # Between tries the model is `failed` (a try under way shows `loading`): each answer is read
        # whole, as it came, once it shows the failure.
        answers: dict[str, httpx.Response] = {}

        def failed(path: str) -> bool:
            answers[path] = client.get(path)
            body = answers[path].json()
            states = (
                [model["state"] for model in body["models"]] if path == "/models" else [body.get("state")]
            )
            return "failed" in states or body.get("models") == {"flaky": "failed"}

        until_sync(lambda: failed("/models"), timeout=60, message="flaky failed")
        (flaky,) = answers["/models"].json()["models"]
        assert (
            flaky["state"] == "failed" and flaky["failed"] == "RuntimeError: weights file is missing (test)"
        )
        until_sync(lambda: failed("/readyz"), timeout=30, message="/readyz says why")
        assert answers["/readyz"].status_code == 503
        assert answers["/readyz"].json() == {
            "status": "models not ready",
            "reason": "flaky failed: RuntimeError: weights file is missing (test)",
            "models": {"flaky": "failed"},
        }
        until_sync(lambda: failed("/models/flaky/ready"), timeout=30, message="/models/flaky/ready says why")
        one = answers["/models/flaky/ready"]
        assert one.status_code == 503 and one.json()["state"] == "failed" and not one.json()["ready"]
        # Tried again after its back-off (1 s, doubling), not once only.
        until_sync(lambda: len(attempts.read_text().split()) >= 2, timeout=30, message="a second try")
        marker.unlink()  # the weights are back
        until_sync(lambda: client.get("/readyz").status_code == 200, timeout=60, message="ready")
        assert model_states(daemon)["flaky"]["state"] == "ready"
        assert model_states(daemon)["flaky"]["failed"] is None
    assert "flaky failed to load" in daemon.log()
