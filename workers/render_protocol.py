"""Messages between the main process and the render process: one msgspec tagged union, msgpack."""

from __future__ import annotations

from typing import Any

import msgspec


class RenderConfig(msgspec.Struct, kw_only=True):
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


class RenderRequest(msgspec.Struct, tag="render", kw_only=True):
    job_id: str
    url: str
    wait_until: str = "load"  # load | domcontentloaded | networkidle
    screenshot: bool = False
    html: bool = False
    engine: str = "browser"  # browser | http
    fallback: str | None = "http"  # what to use when the browser fails: http | None
    timeout_s: float | None = None


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
    error_kind: str | None = None  # refused | timeout | failed


class RenderHeartbeat(msgspec.Struct, tag="hb"):
    pages_active: int
    max_pages_active: int
    renders_done: int
    renders_ok: int
    renders_failed: int
    browser_pid: int | None
    browser_launches: int
    waiting: int


ToRender = RenderRequest | RenderShutdown
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
