"""The entry point of a worker process (started with the `spawn` context).

It pins itself to its GPU (`CUDA_VISIBLE_DEVICES` is also set by the parent before spawning, so it
holds before torch is imported), asks the kernel to kill it if the main process dies, and runs the
`WorkerRuntime` loop over two multiprocessing pipes (in and out).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

import msgspec

PR_SET_PDEATHSIG = 1
EXIT_BOOT_FAILED = 3  # reserved: the worker could not start (so the supervisor backs off)
EXIT_ORPHANED = 4


class WorkerConfig(msgspec.Struct, kw_only=True):
    worker_id: str
    parent_pid: int
    gpu_index: int | None
    simulated_gpu: bool
    heartbeat_interval_s: float
    batch_policy: str = "adaptive"
    torch_threads: int = 0
    log_level: str = "INFO"
    specs: list[Any] = []


def die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL this process when the main process ends, even by SIGKILL."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(EXIT_ORPHANED)


def watch_parent(parent_pid: int, interval_s: float = 1.0) -> None:
    """Fallback for systems without PDEATHSIG: exit when re-parented."""

    def loop() -> None:
        while True:
            threading.Event().wait(interval_s)
            if os.getppid() != parent_pid:
                os._exit(EXIT_ORPHANED)

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


def worker_main(config_bytes: bytes, inbox: Connection, outbox: Connection) -> None:
    config = msgspec.msgpack.decode(config_bytes, type=WorkerConfig)
    if config.gpu_index is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(config.gpu_index)
    die_with_parent(config.parent_pid)
    watch_parent(config.parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    logging.basicConfig(
        level=config.log_level.upper(), stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s [{config.worker_id}] %(name)s: %(message)s",
    )
    try:
        from workers import protocol as messages
        from workers.runtime import WorkerRuntime

        if config.torch_threads:
            os.environ.setdefault("OMP_NUM_THREADS", str(config.torch_threads))
        device = "cuda:0" if config.gpu_index is not None and not config.simulated_gpu else "cpu"
        specs = [msgspec.convert(spec, messages.ModelSpec) for spec in config.specs]
    except Exception:
        logging.exception("worker %s failed to boot", config.worker_id)
        os._exit(EXIT_BOOT_FAILED)

    send_lock = threading.Lock()

    def send(data: bytes) -> None:
        with send_lock:
            outbox.send_bytes(data)

    def receive(timeout: float) -> bytes | None:
        if not inbox.poll(max(0.0, timeout)):
            return None
        return inbox.recv_bytes()

    runtime = WorkerRuntime(
        config.worker_id, device, specs, receive, send,
        heartbeat_interval_s=config.heartbeat_interval_s, batch_policy=config.batch_policy,
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
    )
    if config.torch_threads:
        try:
            import torch

            torch.set_num_threads(config.torch_threads)
            torch.set_num_interop_threads(1)
        except Exception:
            pass
    try:
        runtime.run()
    except (BrokenPipeError, EOFError, OSError) as exc:
        logging.info("worker %s: main process gone (%s); exiting", config.worker_id, exc)
    os._exit(0)
