"""The command line: `modelsched submit/status/jobs` against a live daemon, a bad configuration
refused at start with the key named, and SIGTERM ending the daemon cleanly with no child left."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from tests.polling import until_sync
from tests.rest_support import REPO, daemon_env, running_daemon, wait_status


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_submit_wait_status_and_jobs(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as daemon:
        done = cli("submit", "echo", "--inputs", '{"a": 1}', "--wait", "--url", daemon.url)
        assert done.returncode == 0, done.stderr
        job = json.loads(done.stdout)
        assert job["status"] == "completed" and job["result"] == {"a": 1}
        status = cli("status", "--url", daemon.url)
        assert status.returncode == 0 and "workers" in json.loads(status.stdout)
        jobs = cli("jobs", "--url", daemon.url)
        assert json.loads(jobs.stdout)["jobs"][0]["job_id"] == job["job_id"]
        bad = cli("submit", "echo", "--inputs", "{not json", "--url", daemon.url)
        assert bad.returncode == 2 and "not valid JSON" in bad.stderr


def test_a_bad_configuration_stops_the_daemon_with_the_key_named(tmp_path: Path) -> None:
    wrong_type = tmp_path / "wrong_type.toml"
    wrong_type.write_text('max_queue = "many"\n')
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("max_qeueu = 5\n")
    broken = tmp_path / "broken.toml"
    broken.write_text("max_queue = \n")
    bad_model = tmp_path / "bad_model.toml"
    bad_model.write_text('[[models]]\nname = "x"\nadapter = "nowhere.module:Nothing"\n')
    cases = [
        (["--config", str(wrong_type)], {}, "max_queue"),
        (["--config", str(unknown)], {}, "max_qeueu"),
        (["--config", str(broken)], {}, "not valid TOML"),
        (["--config", str(bad_model)], {}, "models.x.adapter"),
        ([], {"MODELSCHED_PORT": "abc"}, "port"),
        ([], {"MODELSCHED_HEARTBEAT_TIMEOUT_S": "-1"}, "heartbeat_timeout_s"),
        (["--config", str(tmp_path / "missing.toml")], {}, "does not exist"),
    ]
    for args, settings, key in cases:
        result = cli("serve", *args, env=daemon_env(tmp_path, **settings))
        assert result.returncode == 2, (args, settings, result.stderr)
        assert key in result.stderr, (key, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_sigterm_stops_the_daemon_cleanly_and_leaves_no_child(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as daemon, daemon.client() as http:
        job_id = http.post("/jobs", json={"model": "sleep", "inputs": {"ms": 300}}).json()["job_id"]
        wait_status(http, job_id, {"processing", "completed"})
        children = psutil.Process(daemon.process.pid).children(recursive=True)
        assert children
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(30) == 0, daemon.log()

        def all_gone() -> bool:
            return not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children)

        until_sync(all_gone, timeout=15, message="every child of the daemon ended")
