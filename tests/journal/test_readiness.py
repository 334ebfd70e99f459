"""Readiness follows the journal: while a real daemon's journal cannot commit, `/readyz` answers 503
with the reason and submissions get 503 with Retry-After; once writes are possible again it turns 200
by itself, and nothing acknowledged before was lost. Writes are stopped two ways: RLIMIT_FSIZE set on
the daemon from outside (no file of it may grow), and, where the tests run as root, a full tmpfs
mounted in the daemon's own mount namespace."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import running_daemon, serve_command, wait_status
from tests.support.polling import until_sync


def readiness_follows_the_journal(
    client: httpx.Client, block: Callable[[], None], unblock: Callable[[], None]
) -> str:
    """Block the journal's writes, check what clients see, unblock them; the reason readiness gave."""
    before = client.post("/jobs", json={"model": "echo", "inputs": {"before": 1}})
    assert before.status_code == 202
    assert wait_status(client, before.json()["job_id"], {"completed"})["status"] == "completed"
    block()
    try:
        refused = client.post("/jobs", json={"model": "echo", "inputs": {"during": 1}})
        assert refused.status_code == 503 and refused.headers["Retry-After"], refused.text
        assert refused.json()["error"] == "journal_unavailable"
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.headers["Retry-After"]
        assert ready.json()["status"] == "journal unavailable"
        reason: str = ready.json()["reason"]
        assert reason.startswith("the journal cannot commit: "), ready.json()
        assert client.get("/healthz").status_code == 200  # alive: only not ready
        assert client.get("/system/status").json()["journal"]["problem"] == reason
        again = client.post("/jobs", json={"model": "echo", "inputs": {"during": 2}})
        assert again.status_code == 503 and "cannot commit" in again.json()["detail"]
        assert client.get("/readyz").status_code == 503  # it stays so while writes fail
    finally:
        unblock()
    until_sync(lambda: client.get("/readyz").status_code == 200, timeout=10, message="ready again")
    assert client.get("/system/status").json()["journal"]["problem"] is None
    after = client.post("/jobs", json={"model": "echo", "inputs": {"after": 1}})
    assert after.status_code == 202
    assert wait_status(client, after.json()["job_id"], {"completed"})["result"] == {"after": 1}
    assert client.get(f"/jobs/{before.json()['job_id']}").json()["result"] == {"before": 1}
    return reason


def test_under_a_file_size_limit_readyz_is_503_with_the_reason_then_200_by_itself(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as daemon, daemon.client() as client:
        pid = daemon.process.pid
        soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        reason = readiness_follows_the_journal(
            client,
            lambda: resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard)),  # no write past a first byte
            lambda: resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard)),
        )
    assert "I/O error" in reason  # EFBIG


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="mounts a tmpfs: root only")
def test_on_a_full_tmpfs_readyz_is_503_with_the_reason_then_200_by_itself(tmp_path: Path) -> None:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    # The tmpfs exists in the daemon's mount namespace only: it goes with the daemon, whatever happens.
    command = [
        "unshare",
        "--mount",
        "sh",
        "-c",
        f"mount -t tmpfs -o size=2m tmpfs '{mount}' && exec \"$@\"",
        "sh",
    ]
    with (
        running_daemon(
            tmp_path, command=[*command, *serve_command()], MODELSCHED_JOURNAL_PATH=str(mount / "journal.db")
        ) as daemon,
        daemon.client() as client,
    ):
        filler = Path(f"/proc/{daemon.process.pid}/root{mount}/filler")  # the tmpfs, as the daemon sees it

        def fill() -> None:
            with open(filler, "wb") as handle, contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
            with pytest.raises(OSError) as full, open(filler, "ab") as handle:
                handle.write(b"\0" * 65536)
                handle.flush()
            assert full.value.errno == errno.ENOSPC

        reason = readiness_follows_the_journal(client, fill, filler.unlink)
    assert "full" in reason  # SQLITE_FULL: "database or disk is full"
