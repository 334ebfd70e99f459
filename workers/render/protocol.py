"""The wire between the main process and the render process: one msgspec tagged union each way,
msgpack-encoded (beside `workers.protocol` for model workers), and what it is started with."""

from __future__ import annotations

from typing import Any

import msgspec

from workers.protocol import ErrorKind
from workers.render.request import RenderRequest


class RenderConfig(msgspec.Struct, kw_only=True):
    """What the render process is started with (its settings; msgpack bytes)."""

    parent_pid: int
    browser_path: str
    max_pages: int
    timeout_s: float
    retries: int
    recycle_pages: int
    allow_hosts: list[str]
    max_response_bytes: int
    heartbeat_interval_s: float = 0.5
    log_level: str = "INFO"
    log_format: str = "text"
    block_direct_network: bool = (
        True  # Chromium's own network goes to a dead proxy: only routed requests pass
    )


class RenderJob(msgspec.Struct, tag="render"):
    """Render `request` for job `job_id` (sent again to a new render process after a death)."""

    job_id: str
    request: RenderRequest


class RenderCancel(msgspec.Struct, tag="cancel"):
    """The job ended in the main process (cancelled, timed out): stop rendering it, send nothing."""

    job_id: str


class RenderShutdown(msgspec.Struct, tag="shutdown"):
    pass


class RenderReady(msgspec.Struct, tag="ready"):
    pid: int
    browser_available: bool
    browser_error: str | None = None


class RenderOutcome(msgspec.Struct, tag="outcome"):
    job_id: str
    result: dict[str, Any] | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None  # refused | too_large | timeout | failed | no_browser


class RenderHeartbeat(msgspec.Struct, tag="hb", kw_only=True):
    pages_active: int  # browser pages open now (at most `max_pages`)
    max_pages_active: int  # the most that were ever open at once in this process
    waiting: int  # renders waiting for a page
    pages_rendered: int  # pages opened in this process, all browsers together
    browser_pid: int | None
    browser_launches: int


ToRender = RenderJob | RenderCancel | RenderShutdown
FromRender = RenderReady | RenderOutcome | RenderHeartbeat

_encoder = msgspec.msgpack.Encoder()
_to_render = msgspec.msgpack.Decoder(ToRender)
_from_render = msgspec.msgpack.Decoder(FromRender)


def encode(message: ToRender | FromRender) -> bytes:
    return _encoder.encode(message)


def decode_to_render(data: bytes) -> ToRender:
    return _to_render.decode(data)


def decode_from_render(data: bytes) -> FromRender:
    return _from_render.decode(data)
