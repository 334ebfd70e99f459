"""A pipe writer that never blocks the event loop: frames (the `multiprocessing.connection` length
prefix, so the other end reads them with `recv_bytes`) go straight into a non-blocking pipe, and what
the pipe cannot take waits in a buffer that the loop flushes when the pipe is writable. A reader that
hangs therefore costs memory, never the loop (the supervisor ends such a reader). `ChildProcess`
writes every main -> child pipe with it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from typing import Any

FRAME_HEADER = struct.Struct("!i")  # multiprocessing.connection's length prefix


class FrameWriter:
    """Writes frames to one pipe end (a `multiprocessing` connection) without ever blocking."""

    connection: Any

    def __init__(self, connection: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.connection = connection
        self.loop = loop
        self.unsent = bytearray()
        os.set_blocking(connection.fileno(), False)

    def send(self, data: bytes) -> None:
        if self.connection is None:
            return
        frame = FRAME_HEADER.pack(len(data)) + data
        if self.unsent:
            self.unsent += frame
            return
        try:
            written = os.write(self.connection.fileno(), frame)
        except BlockingIOError:
            written = 0
        except OSError:  # the reader is gone: its process's exit is reported elsewhere
            return
        if written < len(frame):
            self.unsent += frame[written:]
            self.loop.add_writer(self.connection.fileno(), self._flush)

    def _flush(self) -> None:
        if self.connection is None:
            return
        try:
            written = os.write(self.connection.fileno(), self.unsent)
        except BlockingIOError:
            return
        except OSError:
            written = len(self.unsent)
        del self.unsent[:written]
        if not self.unsent:
            self.loop.remove_writer(self.connection.fileno())

    def close(self) -> None:
        if self.connection is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self.loop.remove_writer(self.connection.fileno())
        with contextlib.suppress(OSError):
            self.connection.close()
        self.connection = None
        self.unsent.clear()
