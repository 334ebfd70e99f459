"""The Python client of a running daemon, over HTTP (httpx and msgspec only: no torch, nothing of
the daemon's own rooms). `Client` (synchronous) and `AsyncClient` have the same methods:

    from scheduler.client import Client, JobFailed

    with Client("http://127.0.0.1:8000", token=None) as client:
        job = client.submit("echo", {"text": "hi"})   # a JobHandle: id, status(), result(), cancel(), events()
        print(job.result(timeout=30))
        print(client.infer("mlp", [0.5] * 256))        # submit and wait
        for result in client.map("mlp", rows, concurrency=64, progress=True):
            ...

A job that fails raises `JobFailed` (its `kind` and `message`), a cancelled one `JobCancelled`, a
wait that ends first `TimeoutError`; a refused request `ApiError`; no daemon `DaemonUnavailable`.
"""

from scheduler.client.aio import AsyncClient, AsyncJobHandle
from scheduler.client.common import JobEvent
from scheduler.client.errors import ApiError, ClientError, DaemonUnavailable, JobCancelled, JobFailed
from scheduler.client.sync import Client, JobHandle

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncJobHandle",
    "Client",
    "ClientError",
    "DaemonUnavailable",
    "JobCancelled",
    "JobEvent",
    "JobFailed",
    "JobHandle",
]
