"""The wire between the main process and its model workers: one msgspec tagged union each way,
msgpack-encoded, plus what a worker is started with (`WorkerConfig`) and the kinds of error a job
can end with (`ErrorKind`, shared by both sides and by the render process).

Main -> worker: `RunJobs`, `LoadModel`, `UnloadModel`, `RegisterModel`, `Shutdown`.
Worker -> main: `Ready`, `Heartbeat`, `JobResults`, `ModelLoaded`, `ModelLoadFailed`, `ModelUnloaded`.
No client data is pickled: inputs and outputs travel as msgpack values inside these structs.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

import msgspec

BatchPolicy = Literal["adaptive", "fixed"]


class ErrorKind(enum.StrEnum):
    """Why a job ended without a result (`Job.error_kind`); the REST layer picks a status code by it."""

    INPUT = "input"  # the inputs were refused (by the adapter, or a render URL by the SSRF guard)
    MODEL = "model"  # the model raised on this item
    OOM = "oom"  # out of GPU memory even alone in its batch
    LOAD = "load"  # the model failed to load (its jobs fail at once during the back-off)
    TIMEOUT = "timeout"  # past its `timeout_s`
    CANCELLED = "cancelled"  # cancelled by request
    POISON = "poison"  # `max_attempts` worker processes died while running it, the last time alone
    PLACEMENT = "placement"  # no worker or card can ever run its model
    # the render process's own outcomes (a refused URL becomes INPUT on the job)
    REFUSED = "refused"
    TOO_LARGE = "too_large"
    FAILED = "failed"
    NO_BROWSER = "no_browser"


class ModelSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A registered model: which adapter class serves it and its scheduling knobs."""

    name: str
    adapter: str  # import path "package.module:Class" or a built-in name
    vram_mb: int = 0
    device: str = "auto"  # gpu | cpu | auto
    max_batch_size: int = 32
    max_delay_ms: float = 5.0
    batch_policy: BatchPolicy = "adaptive"
    options: dict[str, Any] = {}


class WorkerConfig(msgspec.Struct, kw_only=True):
    """What a worker process is started with (msgpack bytes, its only argument besides the pipes)."""

    worker_id: str
    parent_pid: int
    gpu_index: int | None
    simulated_gpu: bool
    heartbeat_interval_s: float
    cuda_device: str | None = None  # its card's UUID (GPU-…, MIG-…): CUDA_VISIBLE_DEVICES in the worker
    load_timeout_s: float = 300.0  # a model load may take this long; its heartbeats go on meanwhile
    torch_threads: int = 0
    log_level: str = "INFO"
    log_format: str = "text"  # text | json
    specs: list[ModelSpec] = []


class JobItem(msgspec.Struct, frozen=True, array_like=True):
    """One job as a worker sees it."""

    job_id: str
    inputs: Any


# ---- main -> worker -------------------------------------------------------------------------


class RunJobs(msgspec.Struct, tag="run", array_like=True):
    model: str
    jobs: list[JobItem]


class LoadModel(msgspec.Struct, tag="load", array_like=True):
    model: str


class UnloadModel(msgspec.Struct, tag="unload", array_like=True):
    model: str


class RegisterModel(msgspec.Struct, tag="register", array_like=True):
    spec: ModelSpec


class Shutdown(msgspec.Struct, tag="shutdown", array_like=True):
    pass


# ---- worker -> main -------------------------------------------------------------------------


class Ready(msgspec.Struct, tag="ready", array_like=True):
    worker_id: str
    pid: int
    device: str
    cuda_visible_devices: str | None


class Heartbeat(msgspec.Struct, tag="hb", array_like=True):
    """Sent from the worker's loop between batches: a worker stuck in a batch stops sending it."""

    worker_id: str
    sent_at: float  # time.time()
    rss_bytes: int


class JobOutcome(msgspec.Struct, array_like=True):
    """One job's end as the worker saw it: `error` is None when it succeeded. `compute_s` is its
    share of the batches it ran in (a batch's run time split evenly over its items), what its cost is
    counted from."""

    job_id: str
    output: Any = None
    error: str | None = None
    error_kind: ErrorKind | None = None
    compute_s: float = 0.0


class JobProgress(msgspec.Struct, array_like=True):
    """How far a job split into items has come (it has not ended yet)."""

    job_id: str
    done: int
    total: int


class JobResults(msgspec.Struct, tag="results", array_like=True):
    model: str
    batch_size: int
    run_s: float
    outcomes: list[JobOutcome]
    progress: list[JobProgress] = []  # jobs split across batches that have items done, not all


class ModelLoaded(msgspec.Struct, tag="loaded", array_like=True):
    model: str
    memory_bytes: int
    load_s: float


class ModelLoadFailed(msgspec.Struct, tag="load_failed", array_like=True):
    model: str
    error: str
    job_ids: list[str]


class ModelUnloaded(msgspec.Struct, tag="unloaded", array_like=True):
    model: str


ToWorker = RunJobs | LoadModel | UnloadModel | RegisterModel | Shutdown
FromWorker = Ready | Heartbeat | JobResults | ModelLoaded | ModelLoadFailed | ModelUnloaded

_encoder = msgspec.msgpack.Encoder()
_to_worker_decoder = msgspec.msgpack.Decoder(ToWorker)
_from_worker_decoder = msgspec.msgpack.Decoder(FromWorker)


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def decode_to_worker(data: bytes) -> ToWorker:
    return _to_worker_decoder.decode(data)


def decode_from_worker(data: bytes) -> FromWorker:
    return _from_worker_decoder.decode(data)
