"""The wire between the main process and its HTTP fronts: one msgspec tagged union each way,
msgpack-encoded; a pipe frame holds every message of one loop turn (a list), as `RunJobs` carries a
batch to a worker.

Front -> main: `Ready`, `Heartbeat`, the hot routes as their own messages (`Infer`, `Submit`,
`GetJob`, already decoded and checked), `Forward` (any other request: method, path, query, headers,
body) and `Disconnect` (its client went away). Main -> front: `Content` (a value the front encodes as
JSON), `Start` and `Chunk` (a response as the main process's ASGI app sent it, streamed), `Stop`.
Every request carries the front's `request_id`; every answer names it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from scheduler.core.jobs import JobRequest
from scheduler.http.request_tally import TallySnapshot


class FrontConfig(msgspec.Struct, kw_only=True):
    """What a front process is started with (msgpack bytes, beside its pipes and the listening socket)."""

    name: str
    parent_pid: int
    token: str
    max_body_bytes: int
    log_level: str
    log_format: str
    access_log: bool
    heartbeat_interval_s: float
    graceful_close_s: int
    checks: list[InputCheck] = msgspec.field(default_factory=list)


class InputCheck(msgspec.Struct, array_like=True):
    """A model whose inputs the front validates itself, with its own copy of the model's adapter
    (built from `adapter`, the class's import path, and `options`): `BaseAdapter.validate_in_fronts`."""

    model: str
    adapter: str
    options: dict[str, Any]


# ---- front -> main ---------------------------------------------------------------------------


class Ready(msgspec.Struct, tag="ready", array_like=True):
    pid: int


class Heartbeat(msgspec.Struct, tag="beat", array_like=True):
    requests: int  # answered by this front since it started
    tally: TallySnapshot  # the requests it answered itself, since it started (`request_tally`)


class FrontJob(JobRequest, kw_only=True):
    """A job as a front hands it over. Its `inputs` reach the main process as msgpack
    (`msgspec.Raw`): decoded there only when it must look at them; `checked`: the front has run the
    model's adapter `validate` on them (an `InputCheck` of its config)."""

    inputs: msgspec.Raw
    checked: bool = False


class Infer(msgspec.Struct, tag="infer", array_like=True):
    """`POST /models/{model}/infer`, its body decoded: submit, wait up to `wait_s`, answer."""

    request_id: int
    job: FrontJob
    wait_s: float


class Submit(msgspec.Struct, tag="submit", array_like=True):
    """`POST /jobs`, its body decoded and checked."""

    request_id: int
    job: FrontJob


class GetJob(msgspec.Struct, tag="get", array_like=True):
    """`GET /jobs/{id}`, holding up to `wait_s` (0: at once) for its end."""

    request_id: int
    job_id: str
    wait_s: float


class Forward(msgspec.Struct, tag="fwd", array_like=True):
    """Any other request, for the main process's ASGI app."""

    request_id: int
    method: str
    path: str
    raw_path: bytes
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    client: tuple[str, int] | None
    refused: str = ""  # the front refused the body (too large: 413): why; the route answers it its way


class Disconnect(msgspec.Struct, tag="gone", array_like=True):
    request_id: int


FromFront = Ready | Heartbeat | Infer | Submit | GetJob | Forward | Disconnect


# ---- main -> front ---------------------------------------------------------------------------


class Content(msgspec.Struct, tag="content", array_like=True):
    """A whole answer as a value: the front encodes it (JSON, or an infer's raw float32)."""

    request_id: int
    status: int
    content: Any
    headers: dict[str, str] | None = None


class Start(msgspec.Struct, tag="start", array_like=True):
    request_id: int
    status: int
    headers: list[tuple[bytes, bytes]]


class Chunk(msgspec.Struct, tag="chunk", array_like=True):
    request_id: int
    body: bytes
    more: bool


class Stop(msgspec.Struct, tag="stop", array_like=True):
    """Close the socket, finish the open connections (within `graceful_close_s`), exit."""


ToFront = Content | Start | Chunk | Stop

encode = msgspec.msgpack.Encoder().encode
from_front = msgspec.msgpack.Decoder(list[FromFront])
to_front = msgspec.msgpack.Decoder(list[ToFront])
