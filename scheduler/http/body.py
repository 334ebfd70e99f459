"""The one body reader of the daemon, over raw ASGI (the hot path and the FastAPI routes both use
it): a body larger than the limit is refused with 413, by its `Content-Length` before anything is
kept, or as it streams. The rest of a refused body is read and dropped (up to `DRAIN_BYTES` past
the limit), so that the client, still sending, reads its 413: a socket closed with bytes unread is
reset, and the client would see a dropped connection instead of the answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from scheduler.http.answers import HttpError

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
DRAIN_BYTES = 16 * 1024 * 1024  # past this, the connection may be cut: the client is told nothing more


async def read_body(receive: Receive, headers: Iterable[tuple[bytes, bytes]], limit: int) -> bytes:
    for name, value in headers:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            if int(value) <= limit + DRAIN_BYTES:
                await drain(receive, limit + DRAIN_BYTES)
            raise HttpError(
                413, "body_too_large", f"the body is {value.decode()} bytes; the limit is {limit}"
            )
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        more = message.get("more_body", False)
        if size > limit:
            if more:
                await drain(receive, DRAIN_BYTES)
            raise HttpError(413, "body_too_large", f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def drain(receive: Receive, most: int) -> None:
    """Read what is left of the body, keeping none of it, until its end or `most` bytes."""
    dropped = 0
    while dropped <= most:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return
        dropped += len(message.get("body", b""))
