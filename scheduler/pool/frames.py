"""Pipe ends that never block the event loop, for frames with `multiprocessing.connection`'s length
prefix. `FrameWriter`: frames go straight into a non-blocking pipe, and what the pipe cannot take
waits in a buffer that the loop flushes when the pipe is writable; a reader that hangs therefore costs
memory, never the loop (the supervisor ends such a reader). `FrameReader`: what the pipe holds is
taken in one read and split into whole frames; a frame half written waits for the next read.
`ChildProcess` writes every main -> child pipe and reads every child -> main pipe with them (the
child's ends are plain `Connection`s: `recv_bytes`, `send_bytes`)."""

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


READ_BYTES = 1 << 16
_LONG_HEADER = struct.Struct("!Q")  # after a header of -1: a frame of 2 GiB or more


class FrameReader:
    """Reads the frames of one non-blocking pipe end (the child writes them with
    `Connection.send_bytes`): each `read()` takes what the pipe holds, a read of up to `READ_BYTES`
    at a time until it is empty, and returns the whole frames in it; a frame the child is still
    writing waits here for the next call. One system call where `recv_bytes` took three (a poll, the
    header, the body), and no Python-level loop per frame."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.partial = b""  # the start of a frame not yet read whole
        self.ended = False  # the write end is closed (the child is gone)
        os.set_blocking(fd, False)

    def read(self) -> list[bytes]:
        """The whole frames the pipe holds now (raises OSError if the read fails)."""
        chunks = [self.partial] if self.partial else []
        while True:
            try:
                data = os.read(self.fd, READ_BYTES)
            except BlockingIOError:
                break
            if not data:
                self.ended = True
                break
            chunks.append(data)
            if len(data) < READ_BYTES:
                break
        if not chunks:
            return []
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        frames: list[bytes] = []
        start, end = 0, len(data)
        while end - start >= FRAME_HEADER.size:
            (size,) = FRAME_HEADER.unpack_from(data, start)
            body = start + FRAME_HEADER.size
            if size == -1:
                if end - body < _LONG_HEADER.size:
                    break
                (size,) = _LONG_HEADER.unpack_from(data, body)
                body += _LONG_HEADER.size
            if end - body < size:
                break
            frames.append(data[body : body + size])
            start = body + size
        self.partial = data[start:] if start < end else b""
        return frames
