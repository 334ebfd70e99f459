"""Worker handles: one record per worker (process or, for the ASYNC type, thread) and how to start,
message and stop it. The supervision decisions live in `scheduler.pool.supervisor`; this is the I/O shell.

Each worker has two multiprocessing pipes. Main -> worker: a `FrameWriter` (`scheduler/pipes.py`)
writes frames to a non-blocking pipe and buffers what the pipe cannot take, so a hung worker never
blocks the event loop. Worker -> main: the event loop watches the read end with `add_reader`, so
results reach the loop with no thread hop. (Pipes rather than `multiprocessing.Queue`: no feeder
thread, no pickling, and no shared lock that a worker killed mid-`put` could leave held.)
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from workers import protocol as m
from scheduler.pool.frames import FrameWriter
from scheduler.core.placement import LoadedModel
from workers.process import WorkerConfig, worker_main

log = logging.getLogger("modelsched.pool")

MULTIPROCESS = "multiprocess"  # scheduler types: worker processes ...
ASYNC = "async"  # ... or one worker thread in the main process

_SPAWN = multiprocessing.get_context("spawn")
_ENV_LOCK = threading.Lock()

OnMessage = Callable[["WorkerHandle", bytes], None]
OnExit = Callable[["WorkerHandle"], None]


PIPE_BYTES = 1 << 20  # a batch of jobs fits in one write: fewer wake-ups on both sides
_F_SETPIPE_SZ = 1031  # Linux fcntl


def _grow_pipe(fd: int) -> None:
    """Ask Linux for a 1 MiB pipe buffer (the default 64 KiB splits a batch of 64 mlp inputs)."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Keep `spawn` from re-running the parent's `__main__` in the worker.

    The worker's target lives in `workers.process`, so the parent's script is not needed there;
    re-running it would import whatever the script imports (torch, FastAPI) into every worker, and a
    script without an `if __name__ == "__main__"` guard would start a scheduler inside each worker.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    missing = object()
    saved_file = main.__dict__.pop("__file__", missing)
    saved_spec = main.__dict__.get("__spec__", missing)
    main.__spec__ = None
    try:
        yield
    finally:
        if saved_file is not missing:
            main.__file__ = saved_file
        if saved_spec is missing:
            main.__dict__.pop("__spec__", None)
        else:
            main.__spec__ = saved_spec


@dataclass
class WorkerHandle:
    """Everything the main process knows of one worker, in one record."""

    worker_id: str
    gpu_index: int | None
    device_label: str  # "cuda:0 (GPU 1)", "cpu", "sim-gpu0"
    state: str = "starting"  # starting | ready | stopping | dead
    pid: int | None = None
    started_at: float = field(default_factory=time.monotonic)
    last_heartbeat: float = 0.0
    last_heartbeat_wall: float | None = None
    rss_bytes: int = 0
    restarts: int = 0
    exit_code: int | None = None
    cuda_visible_devices: str | None = None
    # placement view
    models: dict[str, LoadedModel] = field(default_factory=dict)
    measured_bytes: dict[str, int] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)  # job id -> items
    outstanding_items: int = 0
    jobs_done: int = 0
    no_penalty: bool = False  # restarted on purpose (a timeout): its jobs go back without a penalty
    solo_job_id: str | None = None  # a suspect (it was on a worker that died) running alone here
    reserved_for: str | None = None  # a suspect waits for this worker to drain

    @property
    def ready(self) -> bool:
        """Ready for new jobs: started, and neither running a suspect alone nor draining for one."""
        return self.state == "ready" and self.solo_job_id is None and self.reserved_for is None

    def release_solo_if_done(self) -> None:
        if self.solo_job_id is not None and self.solo_job_id not in self.in_flight:
            self.solo_job_id = None

    # transport: overridden by the two kinds below
    def send(self, message: m.ToWorker) -> None:
        raise NotImplementedError

    def alive(self) -> bool:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


@dataclass
class ProcessWorker(WorkerHandle):
    process: Any = None
    writer: Any = None  # main -> worker, non-blocking
    reader: Any = None  # worker -> main
    loop: asyncio.AbstractEventLoop | None = None

    def start(
        self, config: WorkerConfig, loop: asyncio.AbstractEventLoop, on_message: OnMessage, on_exit: OnExit
    ) -> None:
        self.loop = loop
        worker_inbox, writer_end = _SPAWN.Pipe(duplex=False)
        self.reader, worker_outbox = _SPAWN.Pipe(duplex=False)
        self.process = _SPAWN.Process(
            target=worker_main, args=(msgspec.msgpack.encode(config), worker_inbox, worker_outbox),
            name=f"modelsched-{self.worker_id}", daemon=True,
        )
        with _ENV_LOCK:  # the child inherits this environment: CUDA_VISIBLE_DEVICES before torch loads
            saved = os.environ.get("CUDA_VISIBLE_DEVICES")
            if self.gpu_index is not None:
                os.environ["CUDA_VISIBLE_DEVICES"] = str(self.gpu_index)
            try:
                with _main_module_hidden():
                    self.process.start()
            finally:
                if self.gpu_index is not None:
                    if saved is None:
                        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                    else:
                        os.environ["CUDA_VISIBLE_DEVICES"] = saved
        worker_outbox.close()
        worker_inbox.close()
        for connection in (writer_end, self.reader):
            _grow_pipe(connection.fileno())
        self.writer = FrameWriter(writer_end, loop)
        self.pid = self.process.pid
        self.started_at = time.monotonic()
        loop.add_reader(self.reader.fileno(), self._on_readable, on_message, on_exit)
        loop.add_reader(self.process.sentinel, self._on_sentinel, on_message, on_exit)

    def _on_readable(self, on_message: OnMessage, on_exit: OnExit) -> None:
        try:
            data = self.reader.recv_bytes()
        except (EOFError, OSError):
            self._detach()
            on_exit(self)
            return
        on_message(self, data)
        # Take whatever else is already waiting, without another trip through the loop.
        while self.state != "dead" and self.reader.poll(0):
            try:
                data = self.reader.recv_bytes()
            except (EOFError, OSError):
                self._detach()
                on_exit(self)
                return
            on_message(self, data)

    def _on_sentinel(self, on_message: OnMessage, on_exit: OnExit) -> None:
        # Deliver what the worker sent before it died, then report the exit.
        try:
            while self.reader is not None and self.state != "dead" and self.reader.poll(0):
                on_message(self, self.reader.recv_bytes())
        except (EOFError, OSError):
            pass
        self._detach()
        on_exit(self)

    def _detach(self) -> None:
        if self.loop is None:
            return
        if self.reader is not None:
            with contextlib.suppress(OSError, ValueError):
                self.loop.remove_reader(self.reader.fileno())
        if self.process is not None:
            with contextlib.suppress(OSError, ValueError):
                self.loop.remove_reader(self.process.sentinel)

    def send(self, message: m.ToWorker) -> None:
        if self.writer is not None:
            self.writer.send(m.encode(message))

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def kill(self) -> None:
        if self.process is not None and self.process.pid is not None and self.process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)

    def terminate(self) -> None:
        if self.process is not None and self.process.exitcode is None:
            self.process.terminate()

    def reap(self) -> int | None:
        if self.process is None:
            return None
        self.process.join(timeout=0)
        self.exit_code = self.process.exitcode
        return self.exit_code

    def close(self) -> None:
        self._detach()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        if self.process is not None and self.process.exitcode is not None:
            self.process.close()
            self.process = None


@dataclass
class ThreadWorker(WorkerHandle):
    """The ASYNC scheduler type: the same worker loop in a thread of the main process."""

    thread: threading.Thread | None = None
    inbox_queue: queue.SimpleQueue | None = None

    def start_thread(
        self, specs: list[m.ModelSpec], heartbeat_interval_s: float, loop: asyncio.AbstractEventLoop,
        on_message: OnMessage, on_exit: OnExit, batch_policy: str,
    ) -> None:
        from workers.runtime import WorkerRuntime

        self.inbox_queue = queue.SimpleQueue()
        inbox = self.inbox_queue

        def receive(timeout: float) -> bytes | None:
            try:
                return inbox.get(timeout=timeout) if timeout > 0 else inbox.get_nowait()
            except queue.Empty:
                return None

        def send(data: bytes) -> None:
            loop.call_soon_threadsafe(on_message, self, data)

        runtime = WorkerRuntime(
            self.worker_id, "cpu", specs, receive, send,
            heartbeat_interval_s=heartbeat_interval_s, batch_policy=batch_policy,
        )

        def run() -> None:
            try:
                runtime.run()
            except Exception:
                log.exception("in-process worker %s failed", self.worker_id)
            finally:
                if not loop.is_closed():
                    loop.call_soon_threadsafe(on_exit, self)

        self.pid = os.getpid()
        self.thread = threading.Thread(target=run, name=f"modelsched-{self.worker_id}", daemon=True)
        self.thread.start()

    def send(self, message: m.ToWorker) -> None:
        assert self.inbox_queue is not None
        self.inbox_queue.put(m.encode(message))

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def kill(self) -> None:
        self.send(m.Shutdown())  # a thread cannot be killed; it stops at its next message

    def close(self) -> None:
        pass
