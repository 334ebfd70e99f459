"""A daemon SIGKILLed mid-pipeline resumes and finishes every pipeline job exactly once.

A three-stage pipeline of `TallyAdapter` models (a, a slow b, c: every run of a stage appends
`label key` to one tally file) gets 30 jobs; the daemon is SIGKILLed while some jobs have completed,
some are between stages and some have not finished their first stage. A new daemon on the same
journal and config ends every job `completed` with `stages == ["a", "b", "c"]`, the journal holds
one end record per job, and the tally shows that each job resumed at the stage its journal row had
reached: a stage the journal had recorded as done before the kill never ran again, the stages after
it ran exactly once after the restart."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.support.daemon import Daemon, running_daemon
from tests.support.polling import until_sync

LABELS = ("a", "b", "c")
FIRST_WAVE = [f"k{n}" for n in range(24)]  # submitted first: completed or mid-pipeline at the kill
LAST_WAVE = [f"k{n}" for n in range(24, 30)]  # submitted just before the kill
ENDED = {"completed", "error", "cancelled"}


def write_config(tmp_path: Path, tally: Path) -> Path:
    """Stage a: 150 ms per batch of up to 8; stage b: 150 ms per batch of 2 (the queue the kill lands
    in); stage c: fast. Two CPU workers; nothing else (the preset's models and render are off)."""
    config = tmp_path / "pipeline.toml"
    config.write_text(
        f"""
cpu_workers = 2
render_enabled = false

[[models]]
name = "tally-a"
adapter = "tests.support.pipeline_functions:SlowTallyAdapter"
max_batch_size = 8
options = {{ label = "a", path = "{tally}", sleep_ms = 150 }}

[[models]]
name = "tally-b"
adapter = "tests.support.pipeline_functions:SlowTallyAdapter"
max_batch_size = 2
options = {{ label = "b", path = "{tally}", sleep_ms = 150 }}

[[models]]
name = "tally-c"
adapter = "tests.support.pipeline_functions:TallyAdapter"
options = {{ label = "c", path = "{tally}" }}

[[pipelines]]
name = "abc"
stages = [{{ name = "a", model = "tally-a" }}, {{ name = "b", model = "tally-b" }}, "tally-c"]
"""
    )
    return config


def submit(http: httpx.Client, key: str) -> str:
    answer = http.post("/jobs", json={"pipeline": "abc", "inputs": {"key": key}})
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["job_id"]
    return job_id


def journal_rows(path: Path) -> dict[str, dict[str, Any]]:
    """Every job row of the journal file, read directly (read-only) from this process."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        db.row_factory = sqlite3.Row
        return {
            row["id"]: dict(row)
            for row in db.execute(
                "SELECT id, model, pipeline, status, stage, ended_at, end_records FROM jobs"
            )
        }


def stage_reached(row: dict[str, Any]) -> int:
    """How many stages the journal row says are done: its stage, or all three once it ended."""
    return len(LABELS) if row["ended_at"] is not None else int(row["stage"])


def first_stage_done(view: dict[str, Any]) -> bool:
    return bool(view["stages"][0]["status"] == "completed")


def crash(daemon: Daemon, children: list[psutil.Process]) -> None:
    """SIGKILL the daemon's main process (by its pid); its workers (`children`, listed beforehand)
    must die with it. Whatever of its process group is still alive after that is killed by group id
    (the group is ours: `running_daemon` starts it in a session of its own)."""
    group = daemon.process.pid
    os.kill(daemon.process.pid, signal.SIGKILL)
    daemon.process.wait(10)

    def gone(process: psutil.Process) -> bool:
        try:
            return process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    try:
        until_sync(lambda: all(gone(child) for child in children), timeout=15, message="workers gone")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


def test_a_killed_daemon_resumes_every_pipeline_job_once(tmp_path: Path) -> None:
    tally = tmp_path / "tally.txt"
    tally.touch()
    config = write_config(tmp_path, tally)
    journal = tmp_path / "journal.db"  # running_daemon's journal: the same file for both daemons
    ids: dict[str, str] = {}  # key -> job id

    with (
        running_daemon(tmp_path, MODELSCHED_CONFIG=str(config)) as daemon,
        daemon.client() as http,
    ):
        for key in FIRST_WAVE:
            ids[key] = submit(http, key)

        # The kill window: a job has completed and another has its first stage done but has not ended.
        seen: dict[str, dict[str, Any]] = {}

        def mid_pipeline() -> bool:
            views = http.get("/jobs", params={"model": "abc", "limit": 1000}).json()["jobs"]
            seen.clear()
            seen.update({view["job_id"]: view for view in views})
            return any(v["status"] == "completed" for v in views) and any(
                first_stage_done(v) and v["status"] not in ENDED for v in views
            )

        until_sync(mid_pipeline, timeout=30, interval=0.01, message="some jobs completed, some mid-pipeline")
        assert set(seen) == set(ids.values())
        shown_done = {job_id for job_id, view in seen.items() if first_stage_done(view)}
        # A stage's end shows in the view as it happens; the journal records it in its next commit
        # (moments later). Wait for that commit, so "shown done" is also "durably done".
        until_sync(
            lambda: all(stage_reached(journal_rows(journal)[job_id]) >= 1 for job_id in shown_done),
            timeout=10,
            message="the shown first-stage ends are in the journal",
        )
        children = psutil.Process(daemon.process.pid).children(recursive=True)
        assert len(children) >= 2, "the daemon has no CPU workers"
        # The first stage sleeps 150 ms per batch, after its jobs are queued: the kill, at once after
        # the last 202, lands before the last job's first stage can have ended.
        for key in LAST_WAVE:
            ids[key] = submit(http, key)
        crash(daemon, children)

    before = journal_rows(journal)
    assert set(before) == set(ids.values()), "one journal row per pipeline job, none for its stages"
    reached = {key: stage_reached(before[job_id]) for key, job_id in ids.items()}
    assert all(reached[key] >= 1 for key, job_id in ids.items() if job_id in shown_done)
    counts_at_kill = Counter(reached.values())
    assert counts_at_kill[len(LABELS)] >= 1, f"no job had ended before the kill: {counts_at_kill}"
    assert counts_at_kill[1] + counts_at_kill[2] >= 1, f"no job was between stages: {counts_at_kill}"
    assert counts_at_kill[0] >= 1, f"every job had finished its first stage: {counts_at_kill}"
    tallied_before = tally.read_text().splitlines()  # the group is gone: nothing writes it now

    with (
        running_daemon(tmp_path, MODELSCHED_CONFIG=str(config)) as daemon,
        daemon.client() as http,
    ):
        for key, job_id in ids.items():
            view = http.get(f"/jobs/{job_id}", params={"wait": 30}).json()
            assert view["status"] == "completed", (key, view)
            assert view["result"] == {"key": key, "stages": list(LABELS)}, (key, view)
            assert [stage["status"] for stage in view["stages"]] == ["completed"] * 3, (key, view)
    # Stopped (SIGTERM): the journal is closed and complete.

    after = journal_rows(journal)
    assert set(after) == set(ids.values())
    for row in after.values():
        assert row["pipeline"] == "abc" and row["status"] == "completed", row
        assert row["end_records"] == 1, row

    lines = tally.read_text().splitlines()
    assert lines[: len(tallied_before)] == tallied_before
    ran_before = Counter(tuple(line.split()) for line in tallied_before)
    ran_after = Counter(tuple(line.split()) for line in lines[len(tallied_before) :])
    for key in ids:
        done = LABELS[: reached[key]]
        for label in LABELS:
            assert ran_before[(label, key)] + ran_after[(label, key)] >= 1, (label, key)
        for label in done:  # durably done before the kill: ran once, and never again
            assert ran_before[(label, key)] == 1, (label, key, ran_before[(label, key)])
            assert ran_after[(label, key)] == 0, (label, key, ran_after[(label, key)])
        for label in LABELS[reached[key] :]:  # resumed here: each stage once after the restart
            assert ran_after[(label, key)] == 1, (label, key, ran_after[(label, key)])
    assert set(ran_before) | set(ran_after) == {(label, key) for label in LABELS for key in ids}
