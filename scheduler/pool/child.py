"""`ChildProcess`: one child process of the daemon and its two pipes; model workers and the render
process are both started and watched through it.

It is started with the `spawn` context, with the environment it needs pinned for the spawn (a GPU
worker's `CUDA_VISIBLE_DEVICES`, set before torch can be imported there) and with the parent's
`__main__` hidden, so a script without a `__main__` guard is not run again in the child. Main ->
child: a `FrameWriter` that never blocks the event loop. Child -> main: the loop watches the read
end with `add_reader`, so a message reaches the loop with no thread hop, and the process sentinel,
so a death is noticed at once; what the child sent before it died is delivered first, then
`on_exit` is called, once. (Pipes rather than `multiprocessing.Queue`: no feeder thread, no
pickling, and no shared lock that a child killed mid-`put` could leave held.)
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from multiprocessing.connection import Connection
from typing import Any

from scheduler.pool.frames import FrameReader, FrameWriter

_SPAWN = multiprocessing.get_context("spawn")
_ENV_LOCK = threading.Lock()  # the environment is process-wide: one spawn at a time changes it
PIPE_BYTES = 1 << 20  # a batch of jobs fits in one write: fewer wake-ups on both sides
_F_SETPIPE_SZ = 1031  # Linux fcntl

ChildTarget = Callable[..., None]  # (config, inbox, outbox, *inherited)


class ChildProcess:
    """A child running `target(config, inbox, outbox, *inherited)`; `on_message(bytes)` for each frame
    it sends, `on_exit()` once when it is gone. `inherited`: more arguments that travel by the spawn's
    own means (a listening socket is duplicated into the child, as the pipes are)."""

    killable = True

    def __init__(
        self,
        name: str,
        target: ChildTarget,
        config: bytes,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[bytes], None],
        on_exit: Callable[[], None],
        env: Mapping[str, str] | None = None,
        inherited: tuple[object, ...] = (),
    ) -> None:
        self.name = name
        self.inherited = inherited
        self.loop = loop
        self.on_message = on_message
        self.on_exit = on_exit
        self.env = dict(env or {})
        self._target = target
        self._config = config
        self.process: Any = None
        self._pid: int | None = None
        self._exit_code: int | None = None
        self.writer: FrameWriter | None = None
        self.reader: Connection | None = None
        self.frames: FrameReader | None = None
        self._exited = False

    def start(self) -> None:
        """Spawn the child; on failure (no memory, no file descriptors) nothing is left open and the
        error is raised."""
        child_inbox, writer_end = _SPAWN.Pipe(duplex=False)
        self.reader, child_outbox = _SPAWN.Pipe(duplex=False)
        self.process = _SPAWN.Process(
            target=self._target,
            args=(self._config, child_inbox, child_outbox, *self.inherited),
            name=f"modelsched-{self.name}",
            daemon=True,
        )
        try:
            with _pinned_environment(self.env), _main_module_hidden():
                self.process.start()
        except BaseException:
            for connection in (child_inbox, writer_end, self.reader, child_outbox):
                connection.close()
            self.reader, self.process = None, None
            raise
        self._pid = self.process.pid
        child_outbox.close()
        child_inbox.close()
        for connection in (writer_end, self.reader):
            _grow_pipe(connection.fileno())
        self.writer = FrameWriter(writer_end, self.loop)
        self.frames = FrameReader(self.reader.fileno())  # a frame half written waits in it
        self.loop.add_reader(self.reader.fileno(), self._on_readable)
        self.loop.add_reader(self.process.sentinel, self._on_sentinel)

    @property
    def pid(self) -> int | None:
        """The child's pid (kept once it has ended: it names the process in the logs)."""
        return self._pid

    @property
    def exit_code(self) -> int | None:
        """How it ended (reaped here); None while it runs."""
        if self._exit_code is None and self.process is not None:
            self.process.join(timeout=0)
            self._exit_code = self.process.exitcode
        return self._exit_code

    def send(self, data: bytes) -> None:
        if self.writer is not None:  # none once it is gone: its exit is reported by on_exit
            self.writer.send(data)

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def kill(self) -> None:
        if self.process is not None and self.process.pid is not None and self.process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)

    def join(self, timeout: float) -> None:
        if self.process is not None:
            self.process.join(timeout=timeout)

    def close(self) -> None:
        """Stop watching and close the pipes (the process object once it has ended)."""
        self._detach()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.reader is not None:
            with contextlib.suppress(OSError):
                self.reader.close()
            self.reader = None
            self.frames = None
        if self.process is not None and self.exit_code is not None:
            self.process.close()
            self.process = None

    # ---- the loop's callbacks ------------------------------------------------------------------

    def _on_readable(self) -> None:
        self._deliver()
        if self.frames is not None and self.frames.ended:
            self._gone()

    def _on_sentinel(self) -> None:
        # Deliver what the child sent before it died, then report the exit.
        self._deliver()
        self._gone()

    def _deliver(self) -> None:
        """Every whole frame the pipe holds, to `on_message` (until the child is let go)."""
        if self.frames is None:
            return
        try:
            frames = self.frames.read()
        except OSError:
            frames, self.frames.ended = [], True
        for frame in frames:
            if self._exited or self.reader is None:
                return
            self.on_message(frame)

    def _gone(self) -> None:
        if self._exited:
            return
        self._exited = True
        self._detach()
        self.on_exit()

    def _detach(self) -> None:
        if self.reader is not None:
            with contextlib.suppress(OSError, ValueError):
                self.loop.remove_reader(self.reader.fileno())
        if self.process is not None:
            with contextlib.suppress(OSError, ValueError):
                self.loop.remove_reader(self.process.sentinel)


def _grow_pipe(fd: int) -> None:
    """Ask Linux for a 1 MiB pipe buffer (the default 64 KiB splits a batch of 64 mlp inputs)."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)


@contextlib.contextmanager
def _pinned_environment(env: Mapping[str, str]) -> Iterator[None]:
    """`env` set in this process's environment while a child is spawned (it inherits it), then restored."""
    if not env:
        yield
        return
    with _ENV_LOCK:
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Keep `spawn` from re-running the parent's `__main__` in the child.

    The child's target lives in `workers`, so the parent's script is not needed there; re-running it
    would import whatever the script imports (torch, FastAPI) into every child, and a script without
    an `if __name__ == "__main__"` guard would start a scheduler inside each one.
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
