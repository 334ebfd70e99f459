"""What the client raises: `JobFailed` (the job ended in error: its `kind` and message), `JobCancelled`,
`ApiError` (the daemon refused a request: its status, `error`, `detail` and `field`),
`DaemonUnavailable` (no connection to the daemon); and the built-in `TimeoutError` when a wait ends
before the job. All but `TimeoutError` derive from `ClientError`."""

from __future__ import annotations


class ClientError(Exception):
    """Base of the client's own exceptions."""


class DaemonUnavailable(ClientError):
    """The daemon cannot be reached (not running, wrong address, the connection dropped)."""


class ApiError(ClientError):
    """The daemon answered with an error: `status` (HTTP), `error` (its kind: `invalid_input`,
    `queue_full`, `model_not_found`, ...), `detail`, and `field` (the field at fault, if any)."""

    def __init__(self, status: int, error: str, detail: str, field: str | None = None) -> None:
        super().__init__(f"{status} {error}: {detail}" + (f" (field {field})" if field else ""))
        self.status, self.error, self.detail, self.field = status, error, detail, field


class JobFailed(ClientError):
    """The job ended in error. `kind` says why (`input`, `model`, `oom`, `load`, `timeout`, `poison`,
    `placement`), `message` what the model or the daemon said."""

    def __init__(self, job_id: str, kind: str | None, message: str) -> None:
        super().__init__(f"job {job_id} failed ({kind or 'error'}): {message}")
        self.job_id, self.kind, self.message = job_id, kind, message


class JobCancelled(ClientError):
    """The job was cancelled before it ended."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} was cancelled")
        self.job_id = job_id
