"""The command line, run as a user runs it (a subprocess): every daemon command against a live daemon
(submit with --wait, --timeout, @file and stdin inputs, idempotency; get, cancel, jobs, models,
load, unload, status as tables and as JSON), one line and exit 1 for a daemon that is down, a wrong
token or an unknown job; `config --check`; `--version`; the README's help blocks equal to the real
help; a bad configuration refused at start with the key named; SIGTERM ending the daemon cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import psutil
import pytest

from scheduler.client import Client
from tests.http.conftest import TOKEN
from tests.support.daemon import REPO, Daemon, daemon_env, free_port, running_daemon
from tests.support.polling import until_sync

COMMANDS = [
    "serve",
    "config",
    "journal",
    "submit",
    "get",
    "cancel",
    "jobs",
    "models",
    "load",
    "unload",
    "status",
]


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`modelsched ARGS` in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=REPO,
        env=env,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def worker_ready(daemon: Daemon) -> None:
    """Poll until the daemon's worker is ready (a cancelled running job restarts it)."""
    with daemon.client() as http:
        until_sync(
            lambda: all(
                worker["state"] == "ready" for worker in http.get("/system/status").json()["workers"]
            ),
            timeout=60,
            message="the worker ready",
        )


def test_submit_wait_get_jobs_and_status_against_a_daemon(shared_daemon: Daemon, tmp_path: Path) -> None:
    daemon = ("--url", shared_daemon.url, "--token", TOKEN)
    done = cli("submit", "echo", "--inputs", '{"a": 1}', "--wait", *daemon)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "completed" and job["result"] == {"a": 1}
    got = cli("get", job["job_id"], *daemon)
    assert got.returncode == 0 and json.loads(got.stdout)["result"] == {"a": 1}
    jobs = cli("jobs", "--json", "--model", "echo", "--limit", "5", *daemon)
    assert json.loads(jobs.stdout)["jobs"][0]["job_id"] == job["job_id"]
    table = cli("jobs", "--model", "echo", *daemon)
    header, first = table.stdout.splitlines()[:2]
    assert header.split()[:3] == ["JOB", "MODEL", "STATUS"] and first.split()[:3] == [
        job["job_id"],
        "echo",
        "completed",
    ]
    # --inputs from a file and from stdin; an idempotency key answers the first job again
    inputs = tmp_path / "inputs.json"
    inputs.write_text('{"from": "a file"}')
    from_file = cli(
        "submit", "echo", "--inputs", f"@{inputs}", "--wait", "--idempotency-key", "cli-17", *daemon
    )
    again = cli("submit", "echo", "--inputs", '{"other": 1}', "--idempotency-key", "cli-17", *daemon)
    assert json.loads(from_file.stdout)["result"] == {"from": "a file"}
    assert json.loads(again.stdout)["job_id"] == json.loads(from_file.stdout)["job_id"]
    from_stdin = cli("submit", "echo", "--inputs", "-", "--wait", *daemon, stdin='["from", "stdin"]')
    assert json.loads(from_stdin.stdout)["result"] == ["from", "stdin"], from_stdin.stderr
    failed = cli("submit", "echo", "--inputs", '{"fail": "on purpose"}', "--wait", *daemon)
    assert failed.returncode == 1 and json.loads(failed.stdout)["error_kind"] == "model"
    for bad, message in (("{not json", "not valid JSON"), (f"@{tmp_path / 'missing.json'}", "cannot read")):
        refused = cli("submit", "echo", "--inputs", bad, *daemon)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1


def test_submit_timeout_then_cancel_and_get(shared_daemon: Daemon) -> None:
    """`--timeout` ends the wait with 124 (the job goes on); `cancel` ends it; cancelling it again is
    exit 1; an unknown job is one line and exit 1."""
    daemon = ("--url", shared_daemon.url, "--token", TOKEN)
    waited = cli("submit", "sleep", "--inputs", '{"ms": 3000}', "--timeout", "0.5", *daemon)
    assert waited.returncode == 124, waited.stderr
    job = json.loads(waited.stdout)
    assert job["status"] in ("queued", "processing") and "goes on" in waited.stderr
    cancelled = cli("cancel", job["job_id"], *daemon)
    assert cancelled.returncode == 0 and cancelled.stdout.strip() == f"cancelled {job['job_id']}"
    assert json.loads(cli("get", job["job_id"], "--wait", "10", *daemon).stdout)["status"] == "cancelled"
    twice = cli("cancel", job["job_id"], *daemon)
    assert twice.returncode == 1 and "already ended (cancelled)" in twice.stderr
    for command in (["get", "no-such-job"], ["cancel", "no-such-job"], ["load", "no-such-model"]):
        unknown = cli(*command, *daemon)
        assert unknown.returncode == 1 and "Traceback" not in unknown.stderr, unknown.stderr
        assert len(unknown.stderr.strip().splitlines()) == 1 and "no-such" in unknown.stderr
    worker_ready(shared_daemon)  # the cancelled job's worker runs it to its end


def test_ctrl_c_while_waiting_is_one_line_and_exit_130(shared_daemon: Daemon) -> None:
    """The job (known by its timeout of 77 s) is in the daemon, so the command is past its submission."""
    waiting = subprocess.Popen(
        [sys.executable, "-m", "server", "submit", "sleep", "--inputs", '{"ms": 2500}', "--wait"]
        + ["--job-timeout", "77", "--url", shared_daemon.url, "--token", TOKEN],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with shared_daemon.client() as http:

        def submitted() -> bool:
            jobs = http.get("/jobs", params={"model": "sleep", "limit": 5}).json()["jobs"]
            return any(job["timeout_s"] == 77 and job["status"] != "completed" for job in jobs)

        until_sync(submitted, timeout=30, interval=0.05, message="the job submitted")
    waiting.send_signal(signal.SIGINT)
    _, stderr = waiting.communicate(timeout=30)
    assert waiting.returncode == 130 and stderr.strip() == "modelsched: interrupted (a submitted job goes on)"
    worker_ready(shared_daemon)


def test_models_load_unload_and_status_tables(shared_daemon: Daemon) -> None:
    daemon = ("--url", shared_daemon.url, "--token", TOKEN)
    worker_ready(shared_daemon)
    loaded = cli("load", "mlp", *daemon)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "mlp: loading on cpu-w0", loaded.stderr

    def mlp_loaded() -> bool:
        status = json.loads(cli("status", "--json", *daemon).stdout)
        return any(
            held["model"] == "mlp" and not held["loading"] for held in status["workers"][0]["loaded_models"]
        )

    until_sync(mlp_loaded, timeout=60, interval=0.2, message="mlp loaded")
    rows = {line.split()[0]: line.split() for line in cli("models", *daemon).stdout.splitlines()[1:]}
    assert rows["mlp"][5] == "ready" and "cpu-w0" in rows["mlp"]
    unloaded = cli("unload", "mlp", *daemon)
    assert unloaded.returncode == 0 and unloaded.stdout.strip() == "mlp: unloaded from cpu-w0", (
        unloaded.stderr
    )
    models = json.loads(cli("models", "--json", *daemon).stdout)["models"]
    assert next(model for model in models if model["name"] == "mlp")["loaded_on"] == []
    assert json.loads(cli("unload", "mlp", "--json", *daemon).stdout) == {"model": "mlp", "workers": []}
    status = cli("status", *daemon)
    assert status.returncode == 0, status.stderr
    sections = [line for line in status.stdout.splitlines() if re.fullmatch("[A-Z]+", line)]
    assert sections == ["GPUS", "WORKERS", "QUEUE", "MODELS", "RENDER", "JOURNAL"], status.stdout
    assert "cpu-w0" in status.stdout and "accepting jobs" in status.stdout and "{" not in status.stdout
    raw = json.loads(cli("status", "--json", *daemon).stdout)
    assert raw["workers"][0]["worker_id"] == "cpu-w0" and raw["queue"]["max_queue"] == 1000


def test_a_wrong_token_is_one_line_and_exit_1(shared_daemon: Daemon) -> None:
    for token in ("wrong", ""):
        env = {**os.environ, "MODELSCHED_TOKEN": token}
        result = cli("status", "--url", shared_daemon.url, env=env)
        assert result.returncode == 1 and "refused the token (401)" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_a_daemon_that_is_down_gives_one_line_and_exit_1() -> None:
    """The commands talk through `scheduler.client`: no daemon is one line on stderr, not a traceback."""
    commands = (["status"], ["jobs"], ["models"], ["get", "x"], ["cancel", "x"], ["load", "mlp"])
    for command in (*commands, ["submit", "echo", "--inputs", "1", "--wait"]):
        result = cli(*command, "--url", f"http://127.0.0.1:{free_port()}")
        assert result.returncode == 1, (command, result.stderr)
        assert "cannot reach the daemon" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_config_prints_the_effective_settings_and_check_refuses_a_bad_one(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('max_queue = 77\n[[models]]\nname = "e"\nadapter = "echo"\noptions = { x = 1 }\n')
    env = daemon_env(tmp_path, MODELSCHED_PORT="9123", MODELSCHED_TOKEN="never-shown")
    shown = cli("config", "--check", "--config", str(good), env=env)
    assert shown.returncode == 0, shown.stderr
    assert "configuration ok (1 model checked)" in shown.stderr
    printed = tomllib.loads(shown.stdout)  # the output is a TOML file
    assert printed["max_queue"] == 77 and printed["port"] == 9123 and printed["token"] == "<hidden>"
    assert printed["models"] == [{"name": "e", "adapter": "echo", "preload": False, "options": {"x": 1}}]
    assert "never-shown" not in shown.stdout
    lines = {line.split(" = ")[0]: line for line in shown.stdout.splitlines() if " = " in line}
    assert lines["max_queue"].endswith(f"# file {good}") and lines["port"].endswith("# MODELSCHED_PORT")
    assert json.loads(cli("config", "--json", env=env).stdout)["port"] == 9123
    bad_model = tmp_path / "bad_model.toml"
    bad_model.write_text('[[models]]\nname = "x"\nadapter = "nowhere.module:Nothing"\n')
    cases = [
        (["--config", str(bad_model)], {}, "models.x.adapter"),
        (["--config", str(tmp_path / "missing.toml")], {}, "does not exist"),
        ([], {"MODELSCHED_LOG_LEVEL": "infoo"}, "log_level"),
        ([], {"MODELSCHED_MAX_QUEUE": "many"}, "max_queue"),
    ]
    for args, settings, key in cases:
        result = cli("config", "--check", *args, env=daemon_env(tmp_path, **settings))
        assert result.returncode == 1, (args, settings, result.stderr)
        assert key in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == "", result.stderr
    assert cli("config", "--config", str(bad_model), env=env).returncode == 0  # adapters: only with --check


def test_version_is_the_package_version() -> None:
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"modelsched {metadata.version('modelsched')}"


def test_the_readme_shows_the_help_of_every_command_as_it_is() -> None:
    """Each ```text block of the README that starts with `$ modelsched ... --help` holds that output,
    and every command has one."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```text\n\$ (modelsched[^\n]*--help)\n(.*?)```", readme, re.S)
    shown = {command: text for command, text in blocks}
    wanted = ["modelsched --help"] + [f"modelsched {name} --help" for name in COMMANDS]
    assert sorted(shown) == sorted(wanted)
    stale = []
    for command, text in shown.items():
        real = cli(*command.split()[1:], env={**os.environ, "COLUMNS": "200"})
        assert real.returncode == 0, real.stderr
        if real.stdout != text:
            stale.append(f"```text\n$ {command}\n{real.stdout}```")
    assert stale == [], "the README's help is stale; these blocks are the real output:\n" + "\n".join(stale)


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
        ([], {"MODELSCHED_LOG_LEVEL": "infoo"}, "log_level"),
        (["--config", str(tmp_path / "missing.toml")], {}, "does not exist"),
    ]
    for args, settings, key in cases:
        result = cli("serve", *args, env=daemon_env(tmp_path, **settings))
        assert result.returncode == 2, (args, settings, result.stderr)
        assert key in result.stderr, (key, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("to_group", [False, True], ids=["to-the-daemon", "to-its-process-group"])
def test_sigterm_drains_then_exits_0_and_leaves_no_child(tmp_path: Path, to_group: bool) -> None:
    """SIGTERM: readiness and new submissions answer 503 at once, the running job still ends and its
    request gets the result, the event stream of a job that never ran ends with `shutdown`, then the
    daemon exits 0 and its workers are gone. The same when the signal reaches the whole process group
    (systemd's stop, a terminal's Ctrl+C): the children leave it to the daemon, and none is started
    again during the drain."""
    with (
        running_daemon(tmp_path, MODELSCHED_LOG_LEVEL="info") as daemon,
        daemon.client() as http,
        daemon.client() as waiting_http,
    ):
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
            if to_group:  # the group this test started the daemon in (`running_daemon`)
                os.killpg(daemon.process.pid, signal.SIGTERM)
            else:
                daemon.process.send_signal(signal.SIGTERM)
            until_sync(lambda: http.get("/readyz").status_code == 503, timeout=5, message="readiness 503")
            refused = http.post("/jobs", json={"model": "echo", "inputs": 1})
            assert refused.status_code == 503 and refused.json()["error"] == "not_accepting"
            answer = infer.result(timeout=30)
            assert streamed.result(timeout=30) == ["queued", "shutdown"]
        assert answer.status_code == 200 and answer.json()["result"] == {"slept_ms": 3000.0}, answer.text
        assert daemon.process.wait(30) == 0, daemon.log()
        assert daemon.log().count("worker cpu-w0 ready") == 1, daemon.log()  # never respawned

        def all_gone() -> bool:
            return not any(
                child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children
            )

        until_sync(all_gone, timeout=15, message="every child of the daemon ended")
    stopped = cli("status", "--url", daemon.url)  # the daemon that just stopped: one line, exit 1
    assert stopped.returncode == 1 and "cannot reach the daemon" in stopped.stderr, stopped.stderr
    assert len(stopped.stderr.strip().splitlines()) == 1 and stopped.stdout == ""


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
