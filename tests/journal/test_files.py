"""The journal as an operator's files: owner-only modes whatever the umask, a warning for an existing
journal others may read, a damaged journal that stops the daemon with one line and is left exactly
as it was, `modelsched journal check`, and a backup taken under load that holds every job
acknowledged before it began."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from scheduler.core.jobs import Job, JobStatus
from scheduler.errors import JournalDamagedError
from scheduler.journal import SqliteJournal
from scheduler.journal.files import check
from tests.support.daemon import REPO, daemon_env, free_port, running_daemon
from tests.support.polling import until_sync


def cli(*args: str, umask: int = -1, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        umask=umask,
    )


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def fill(path: str, jobs: int = 2000) -> None:
    """A journal with jobs in it (half of them ended), closed: its content is in the file alone."""

    async def write() -> None:
        journal = SqliteJournal(path)
        await journal.open()
        batch = [Job(id=f"job{n:05d}", model="echo", inputs={"n": n, "pad": "x" * 300}) for n in range(jobs)]
        await asyncio.gather(*(journal.record_submitted_nowait(job) for job in batch))
        for job in batch[::2]:
            job.status, job.result, job.ended_at = JobStatus.COMPLETED, {"n": 1}, time.time()
        await asyncio.gather(*(journal.record_ended(job) for job in batch[::2]))
        await journal.close()

    asyncio.run(write())


def test_a_new_journal_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    folder = tmp_path / "state" / "journal"
    path = str(folder / "journal.db")
    previous = os.umask(0)  # the most permissive: without care, 0777 folders and 0666 files
    try:

        async def scenario() -> None:
            journal = SqliteJournal(path)
            await journal.open()
            await journal.record_submitted_nowait(Job(id="a", model="echo", inputs=1))
            # open: the database, its WAL and its shared memory
            assert {name: mode(folder / name) for name in os.listdir(folder)} == {
                "journal.db": 0o600,
                "journal.db-wal": 0o600,
                "journal.db-shm": 0o600,
            }
            await journal.close()

        asyncio.run(scenario())
    finally:
        os.umask(previous)
    assert mode(folder) == 0o700
    assert mode(path) == 0o600


def test_an_existing_journal_others_may_read_is_warned_about_and_left_as_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    open_path, private_path = str(tmp_path / "open.db"), str(tmp_path / "private.db")
    for path, file_mode in ((open_path, 0o644), (private_path, 0o600)):
        sqlite3.connect(path).close()
        os.chmod(path, file_mode)

    async def open_and_close(path: str) -> None:
        journal = SqliteJournal(path)
        await journal.open()
        await journal.close()

    with caplog.at_level(logging.WARNING, logger="modelsched.journal"):
        asyncio.run(open_and_close(open_path))
        asyncio.run(open_and_close(private_path))
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"{open_path} (-rw-r--r--)" in warnings[0] and f"chmod 600 {open_path}*" in warnings[0]
    assert mode(open_path) == 0o644  # the operator's choice is not changed behind their back


def truncate(path: str) -> None:
    os.truncate(path, os.path.getsize(path) * 6 // 10)


def overwrite(path: str, page: int) -> None:
    with open(path, "rb") as handle:
        page_size = int.from_bytes(handle.read(100)[16:18], "big")  # the database header says
    with open(path, "r+b") as handle:
        handle.seek(page_size * (page - 1))
        handle.write(b"\xff" * page_size)


def overwrite_a_middle_page(path: str) -> None:  # SQLite fails reading it: "malformed"
    overwrite(path, os.path.getsize(path) // 4096 // 2)


def overwrite_page_3(path: str) -> None:  # quick_check lists what it found: "Page 3: ..."
    overwrite(path, 3)


def not_a_database(path: str) -> None:
    with open(path, "r+b") as handle:
        handle.write(b"not SQLite at all")


@pytest.mark.parametrize("damage", [truncate, overwrite_a_middle_page, overwrite_page_3, not_a_database])
def test_a_damaged_journal_stops_the_daemon_with_one_line_and_is_left_as_it_was(
    tmp_path: Path, damage: object
) -> None:
    path = str(tmp_path / "journal.db")
    fill(path)
    assert check(path) is None
    damage(path)  # type: ignore[operator]
    before = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    files_before = sorted(os.listdir(tmp_path))

    started = cli("serve", env=daemon_env(tmp_path, MODELSCHED_PORT=str(free_port())))
    assert started.returncode == 3, started.stderr
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in started.stderr, started.stderr
    assert lines[0].startswith(f"modelsched: the journal {path} is damaged (")
    assert "left as it is" in lines[0] and "backup" in lines[0]

    checked = cli("journal", "check", path)
    assert checked.returncode == 1 and checked.stderr.strip() == lines[0]

    with pytest.raises(JournalDamagedError):  # the Python API refuses it the same way
        asyncio.run(SqliteJournal(path).open())

    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == before
    assert sorted(os.listdir(tmp_path)) == files_before  # no -wal, no -shm, nothing renamed


def test_a_backup_taken_under_load_holds_every_job_acknowledged_before_it_began(tmp_path: Path) -> None:
    journal_path = str(tmp_path / "journal.db")
    backup_path = str(tmp_path / "backups" / "copy.db")
    os.mkdir(tmp_path / "backups")
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[str] = []

    def load(daemon_url: str, n: int) -> None:
        with httpx.Client(base_url=daemon_url, timeout=30) as client:
            count = 0
            while not stop.is_set():
                count += 1
                answer = client.post(
                    "/jobs", json={"model": "echo", "inputs": {"w": n, "c": count, "pad": "y" * 500}}
                )
                if answer.status_code != 202:
                    failures.append(answer.text)
                    return
                with lock:
                    acknowledged.append(answer.json()["job_id"])

    with running_daemon(tmp_path) as daemon:
        threads = [threading.Thread(target=load, args=(daemon.url, n)) for n in range(3)]
        for thread in threads:
            thread.start()
        try:
            until_sync(lambda: len(acknowledged) >= 1500 or failures, timeout=60, message="1500 jobs")
            with lock:
                before = set(acknowledged)
            assert len(before) >= 1500, failures
            made = cli("journal", "backup", backup_path, "--journal", journal_path, umask=0)
            with lock:
                during = len(acknowledged) - len(before)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
    assert failures == []
    assert made.returncode == 0, made.stderr
    assert f"backed up to {backup_path}" in made.stdout
    assert during > 0  # the load went on while the backup was taken
    assert mode(backup_path) == 0o600  # under umask 0
    assert sorted(os.listdir(tmp_path / "backups")) == ["copy.db"]  # one self-contained file
    assert check(backup_path) is None
    copy = sqlite3.connect(f"file:{backup_path}?mode=ro", uri=True)
    try:
        held = {job_id for (job_id,) in copy.execute("SELECT id FROM jobs")}
    finally:
        copy.close()
    assert before <= held
    checked = cli("journal", "check", backup_path)
    assert checked.returncode == 0 and f"{backup_path}: ok ({len(held)} jobs" in checked.stdout
    again = cli("journal", "backup", backup_path, "--journal", journal_path)
    assert again.returncode == 2 and "exists already" in again.stderr  # a backup never replaces a file
