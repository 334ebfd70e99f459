"""The daemon's logs: every line of a JSON-format daemon (its own, uvicorn's, its workers') is one
JSON object; the access log; a job's lines carry its id; a typo in `log_level` is one line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.support.daemon import REPO, daemon_env, running_daemon, serve_command

ECHO_ONLY = """
render_enabled = false

[[models]]
name = "echo"
adapter = "echo"
"""


def run_one_job(tmp_path: Path, **settings: str) -> tuple[str, str]:
    """A daemon with `settings`; one echo job, read back by its id. Its whole log, and the job's id."""
    config = tmp_path / "echo.toml"
    config.write_text(ECHO_ONLY)
    with (
        running_daemon(tmp_path, MODELSCHED_CONFIG=str(config), **settings) as daemon,
        daemon.client() as client,
    ):
        job_id = client.post("/jobs", json={"model": "echo", "inputs": {"text": "hi"}}).json()["job_id"]
        assert client.get(f"/jobs/{job_id}", params={"wait": 30}).json()["status"] == "completed"
        assert client.get("/nope").status_code == 404
    return daemon.log(), job_id


def test_json_format_every_line_is_a_json_object_uvicorns_and_the_workers_too(tmp_path: Path) -> None:
    log, job_id = run_one_job(
        tmp_path, MODELSCHED_LOG_FORMAT="json", MODELSCHED_LOG_LEVEL="debug", MODELSCHED_ACCESS_LOG="1"
    )
    lines = [line for line in log.splitlines() if line.strip()]
    records: list[dict[str, Any]] = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise AssertionError(f"not a JSON line: {line!r}") from exc
    assert all({"time", "level", "logger", "message", "process"} <= record.keys() for record in records)
    loggers = {record["logger"] for record in records}
    assert "uvicorn.error" in loggers  # uvicorn's own lines, in our format
    assert any("Uvicorn running on" in r["message"] for r in records if r["logger"] == "uvicorn.error")
    assert {"main", "cpu-w0"} <= {record["process"] for record in records}  # the worker writes JSON too

    access = [record for record in records if record["logger"] == "modelsched.access"]
    by_path = {(record["method"], record["path"]): record for record in access}
    submitted = by_path[("POST", "/jobs")]
    assert (
        submitted["status"] == 202
        and submitted["duration_ms"] > 0
        and submitted["client"].startswith("127.0.0.1:")
    )
    read = by_path[("GET", f"/jobs/{job_id}")]
    assert read["status"] == 200 and read["query"] == "wait=30" and read["job_id"] == job_id
    assert by_path[("GET", "/nope")]["status"] == 404
    assert by_path[("GET", "/readyz")]["status"] in (200, 503)

    about_job = [record for record in records if record.get("job_id") == job_id]
    assert any(
        r["logger"] == "modelsched.jobs" and r["message"].startswith("job completed") for r in about_job
    )
    mentioning = [record for record in records if job_id in record["message"]]
    assert mentioning and all(record.get("job_id") == job_id for record in mentioning)


def test_text_format_names_the_job_and_the_access_log_is_off_by_default(tmp_path: Path) -> None:
    log, job_id = run_one_job(tmp_path, MODELSCHED_LOG_LEVEL="debug")
    assert f"job={job_id}" in log
    assert "modelsched.access" not in log  # off unless asked for
    assert "[main] uvicorn.error: Uvicorn running on" in log  # uvicorn's lines in our text format
    assert all(job_id not in line or f"job={job_id}" in line for line in log.splitlines())


def test_a_log_level_typo_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for variable, value, named in (
        ("MODELSCHED_LOG_LEVEL", "infoo", "log_level: must be one of debug, info, warning, error, critical"),
        ("MODELSCHED_LOG_FORMAT", "yaml", "log_format: must be text or json"),
    ):
        done = subprocess.run(
            serve_command(),
            cwd=REPO,
            env=daemon_env(tmp_path, **{variable: value}),
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert done.stderr.decode().strip().splitlines() == [
            f"modelsched: configuration error: invalid configuration: {named} (got {value!r})"
        ]
