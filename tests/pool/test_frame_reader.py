"""`FrameReader`: frames written by `Connection.send_bytes` come out whole, however the pipe splits
them, and the end of the pipe is seen (a real pipe, written by a real `multiprocessing` connection)."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import struct
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest

from scheduler.pool.frames import READ_BYTES, FrameReader

F_SETPIPE_SZ = 1031


@pytest.fixture
def pipe() -> Iterator[tuple[FrameReader, Connection]]:
    reader_end, writer_end = multiprocessing.Pipe(duplex=False)
    fcntl.fcntl(writer_end.fileno(), F_SETPIPE_SZ, 1 << 20)  # as `ChildProcess` grows its pipes
    frames = FrameReader(reader_end.fileno())
    yield frames, writer_end
    for end in (reader_end, writer_end):
        end.close()


def test_every_frame_waiting_comes_in_one_read(pipe: tuple[FrameReader, Connection]) -> None:
    frames, writer = pipe
    assert frames.read() == []  # nothing written: no frame, and no wait
    for body in (b"one", b"", b"three"):
        writer.send_bytes(body)
    assert frames.read() == [b"one", b"", b"three"]
    assert not frames.ended


def test_a_frame_written_in_pieces_waits_until_it_is_whole(pipe: tuple[FrameReader, Connection]) -> None:
    frames, writer = pipe
    os.write(writer.fileno(), struct.pack("!i", 6) + b"abc")
    assert frames.read() == []
    os.write(writer.fileno(), b"def" + struct.pack("!i", 2))
    assert frames.read() == [b"abcdef"]
    os.write(writer.fileno(), b"gh")
    assert frames.read() == [b"gh"]


def test_a_frame_larger_than_one_read(pipe: tuple[FrameReader, Connection]) -> None:
    frames, writer = pipe
    body = bytes(range(256)) * (3 * READ_BYTES // 256 + 7)
    writer.send_bytes(body)
    writer.send_bytes(b"next")
    assert frames.read() == [body, b"next"]


def test_the_long_header_of_a_huge_frame_is_understood(pipe: tuple[FrameReader, Connection]) -> None:
    frames, writer = pipe
    os.write(writer.fileno(), struct.pack("!i", -1) + struct.pack("!Q", 4) + b"huge")
    assert frames.read() == [b"huge"]


def test_the_end_of_the_pipe_after_the_last_frames(pipe: tuple[FrameReader, Connection]) -> None:
    frames, writer = pipe
    writer.send_bytes(b"last")
    os.write(writer.fileno(), struct.pack("!i", 10) + b"cut")  # the child died mid-frame
    writer.close()
    assert frames.read() == [b"last"]  # the cut frame is not delivered
    assert frames.read() == []  # a short read ends the first call; the next one meets the end
    assert frames.ended
