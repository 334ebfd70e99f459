"""The command line: `modelsched submit/status/jobs` against a live daemon, a bad configuration
refused at start with the key named, and SIGTERM ending the daemon cleanly with no child left."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from scheduler.client import Client
from tests.support.daemon import REPO, daemon_env, free_port, running_daemon
from tests.support.polling import until_sync


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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


def test_a_daemon_that_is_down_gives_one_line_and_exit_1() -> None:
    """The commands talk through `scheduler.client`: no daemon is one line on stderr, not a traceback."""
    for command in (["status"], ["jobs"], ["submit", "echo", "--inputs", "1", "--wait"]):
        result = cli(*command, "--url", f"http://127.0.0.1:{free_port()}")
        assert result.returncode == 1, (command, result.stderr)
        assert "cannot reach the daemon" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


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


def test_sigterm_drains_then_exits_0_and_leaves_no_child(tmp_path: Path) -> None:
    """SIGTERM: readiness and new submissions answer 503 at once, the running job still ends and its
    request gets the result, the event stream of a job that never ran ends with `shutdown`, then the
    daemon exits 0 and its workers are gone."""
    with running_daemon(tmp_path) as daemon, daemon.client() as http, daemon.client() as waiting_http:
        with ThreadPoolExecutor(2) as pool, Client(daemon.url) as client:
            infer = pool.submit(waiting_http.post, "/models/sleep/infer", json={"inputs": {"ms": 3000}})
            until_sync(
                lambda: http.get("/system/status").json()["queue"]["processing"] == 1,
                timeout=20,
                message="the sleep job running",
            )
            _, never_runs = client.submit_many("sleep", [0, 0])  # the first joins the running one
            assert never_runs.status() == "queued"
            streamed = pool.submit(lambda: [event.event for event in never_runs.events()])
            children = psutil.Process(daemon.process.pid).children(recursive=True)
            assert children
            daemon.process.send_signal(signal.SIGTERM)
            until_sync(lambda: http.get("/readyz").status_code == 503, timeout=5, message="readiness 503")
            refused = http.post("/jobs", json={"model": "echo", "inputs": 1})
            assert refused.status_code == 503 and refused.json()["error"] == "not_accepting"
            answer = infer.result(timeout=30)
            assert streamed.result(timeout=30) == ["queued", "shutdown"]
        assert answer.status_code == 200 and answer.json()["result"] == {"slept_ms": 3000.0}, answer.text
        assert daemon.process.wait(30) == 0, daemon.log()

        def all_gone() -> bool:
            return not any(
                child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children
            )

        until_sync(all_gone, timeout=15, message="every child of the daemon ended")


def test_a_second_sigterm_cuts_the_grace_short(tmp_path: Path) -> None:
    """A job longer than the grace: the second signal ends the drain at once; the waiting request is
    answered 503 (the job stays queued in the journal) and the daemon still exits 0."""
    with (
        running_daemon(tmp_path, MODELSCHED_SHUTDOWN_GRACE_S="60") as daemon,
        daemon.client() as http,
        daemon.client() as waiting_http,
        ThreadPoolExecutor(1) as pool,
    ):
        infer = pool.submit(waiting_http.post, "/models/sleep/infer", json={"inputs": {"ms": 60_000}})
        until_sync(
            lambda: http.get("/system/status").json()["queue"]["processing"] == 1,
            timeout=20,
            message="the sleep job running",
        )
        daemon.process.send_signal(signal.SIGTERM)
        until_sync(lambda: http.get("/readyz").status_code == 503, timeout=5, message="readiness 503")
        daemon.process.send_signal(signal.SIGTERM)
        answer = infer.result(timeout=20)
        assert answer.status_code == 503 and answer.json()["job_status"] == "queued", answer.text
        assert daemon.process.wait(20) == 0, daemon.log()
