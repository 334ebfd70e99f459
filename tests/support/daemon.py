"""A real `modelsched serve` for the REST tests: a subprocess on a free loopback port, its own
journal file, ended by its pid (SIGTERM, then SIGKILL of its process group if it does not stop)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.polling import until_sync

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    url: str
    token: str | None
    log_path: Path

    def client(self, token: str | None = "default") -> httpx.Client:
        token = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def daemon_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MODELSCHED_") and k not in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")
    }
    env.update(
        {
            "MODELSCHED_FORCE_CPU": "1",
            "MODELSCHED_JOURNAL_PATH": str(tmp_path / "journal.db"),
            "MODELSCHED_LOG_LEVEL": "warning",
            "MODELSCHED_TORCH_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
        }
    )
    env.update(settings)
    return env


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "server", "serve", *args]


@contextlib.contextmanager
def running_daemon(
    tmp_path: Path,
    token: str | None = None,
    ready_timeout: float = 120.0,
    command: list[str] | None = None,
    ready_path: str = "/readyz",
    **settings: str,
) -> Iterator[Daemon]:
    """`command`: how the daemon is started (default `serve_command()`; a test may run it in a
    namespace of its own, ending with `exec` of the daemon so that the pid is the daemon's);
    `ready_path`: what must answer 200 before the test goes on (`/healthz`: only that it listens)."""
    port = free_port()
    env = daemon_env(tmp_path, MODELSCHED_PORT=str(port), **settings)
    if token:
        env["MODELSCHED_TOKEN"] = token
    log_path = tmp_path / f"daemon-{port}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command or serve_command(),
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    daemon = Daemon(process, f"http://127.0.0.1:{port}", token, log_path)
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the daemon exited with {process.returncode}:\n{daemon.log()}")
            try:
                return (
                    httpx.get(
                        f"{daemon.url}{ready_path}",
                        timeout=2,
                        headers={"Authorization": f"Bearer {token}"} if token else {},
                    ).status_code
                    == 200
                )
            except httpx.HTTPError:
                return False

        until_sync(ready, timeout=ready_timeout, interval=0.1, message="daemon ready")
        yield daemon
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int | None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    return process.returncode


def wait_status(client: httpx.Client, job_id: str, wanted: set[str], timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}", params={"wait": 1}).json()
        if job["status"] in wanted or time.monotonic() > deadline:
            return job
