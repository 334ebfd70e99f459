"""Starting model workers: as a `ChildProcess` pinned to its GPU by UUID (the MULTIPROCESS type), or as a
thread of the main process that runs the same worker loop (the ASYNC type, for development)."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Callable

import msgspec

from scheduler.pool.child import ChildProcess
from workers import protocol as m
from workers.process import worker_main
from workers.runtime import WorkerRuntime

log = logging.getLogger("modelsched.pool")

MULTIPROCESS = "multiprocess"  # scheduler types: worker processes ...
ASYNC = "async"  # ... or one worker thread in the main process


def start_worker_process(
    config: m.WorkerConfig,
    loop: asyncio.AbstractEventLoop,
    on_message: Callable[[bytes], None],
    on_exit: Callable[[], None],
) -> ChildProcess:
    """A worker process running `workers.process.worker_main`; a GPU worker sees only its card."""
    env = gpu_environment(config)
    child = ChildProcess(
        config.worker_id, worker_main, msgspec.msgpack.encode(config), loop, on_message, on_exit, env
    )
    child.start()
    return child


def gpu_environment(config: m.WorkerConfig) -> dict[str, str]:
    """A GPU worker's pin, set before it is spawned: its card's UUID as CUDA_VISIBLE_DEVICES (the
    index only when no UUID is known), and PCI bus order, so that what it sees is the card its ledger
    entry describes."""
    if config.gpu_index is None:
        return {}
    device = config.cuda_device or str(config.gpu_index)
    return {"CUDA_VISIBLE_DEVICES": device, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


class ThreadChannel:
    """The ASYNC type: the worker loop in a thread of the main process, behind the same channel."""

    killable = False  # a thread cannot be killed; `kill` asks it to stop at its next message
    exit_code = None

    def __init__(
        self,
        worker_id: str,
        specs: list[m.ModelSpec],
        heartbeat_interval_s: float,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[bytes], None],
        on_exit: Callable[[], None],
    ) -> None:
        self.inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()

        def send(data: bytes) -> None:
            loop.call_soon_threadsafe(on_message, data)

        runtime = WorkerRuntime(
            worker_id, "cpu", specs, self._receive, send, heartbeat_interval_s=heartbeat_interval_s
        )

        def run() -> None:
            try:
                runtime.run()
            except Exception:
                log.exception("in-process worker %s failed", worker_id)
            finally:
                if not loop.is_closed():
                    loop.call_soon_threadsafe(on_exit)

        self.thread = threading.Thread(target=run, name=f"modelsched-{worker_id}", daemon=True)
        self.thread.start()

    @property
    def pid(self) -> int:
        return os.getpid()

    def _receive(self, timeout: float) -> bytes | None:
        try:
            return self.inbox.get(timeout=timeout) if timeout > 0 else self.inbox.get_nowait()
        except queue.Empty:
            return None

    def send(self, data: bytes) -> None:
        self.inbox.put(data)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def kill(self) -> None:
        self.send(m.encode(m.Shutdown()))

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def close(self) -> None:
        pass


class WorkerLauncher:
    """Starts a model worker of the scheduler's type: a process pinned to its card (MULTIPROCESS) or a
    thread (ASYNC), with the settings every worker gets."""

    def __init__(
        self,
        scheduler_type: str,
        heartbeat_interval_s: float,
        torch_threads: int,
        log_level: str,
        load_timeout_s: float = 300.0,
        log_format: str = "text",
        pin_of: Callable[[int], str | None] = lambda gpu_index: None,
    ) -> None:
        if scheduler_type not in (MULTIPROCESS, ASYNC):
            raise ValueError(f"scheduler_type must be {MULTIPROCESS!r} or {ASYNC!r} (got {scheduler_type!r})")
        self.scheduler_type = scheduler_type
        self.heartbeat_interval_s = heartbeat_interval_s
        self.load_timeout_s = load_timeout_s
        self.torch_threads = torch_threads
        self.log_level = log_level.upper()
        self.log_format = log_format
        self.pin_of = pin_of  # a card's index -> its UUID (`Inventory.pin_of`)

    def label(self, gpu_index: int | None, simulated: bool) -> str:
        """The device a worker shows: "cuda:1", "sim-gpu0", "cpu", "cpu (in process)"."""
        if self.scheduler_type == ASYNC:
            return "cpu (in process)"
        if gpu_index is None:
            return "cpu"
        return f"sim-gpu{gpu_index}" if simulated else f"cuda:{gpu_index}"

    def launch(
        self,
        worker_id: str,
        gpu_index: int | None,
        simulated: bool,
        specs: list[m.ModelSpec],
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[bytes], None],
        on_exit: Callable[[], None],
    ) -> ChildProcess | ThreadChannel:
        if self.scheduler_type == ASYNC:
            return ThreadChannel(worker_id, specs, self.heartbeat_interval_s, loop, on_message, on_exit)
        config = m.WorkerConfig(
            worker_id=worker_id,
            parent_pid=os.getpid(),
            gpu_index=gpu_index,
            cuda_device=None if gpu_index is None else self.pin_of(gpu_index),
            simulated_gpu=simulated,
            heartbeat_interval_s=self.heartbeat_interval_s,
            load_timeout_s=self.load_timeout_s,
            torch_threads=self.torch_threads,
            log_level=self.log_level,
            log_format=self.log_format,
            specs=specs,
        )
        return start_worker_process(config, loop, on_message, on_exit)
