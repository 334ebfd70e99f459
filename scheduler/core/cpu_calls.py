"""Shared CPU executors for Python callers: `run_cpu`/`map_cpu` run an importable function on the CPU
stage pool (as jobs of the `cpu-call` model, which batch, queue and survive a worker's death like any
job), `run_in_thread`/`map_threads` on a bounded thread pool of the main process.

A function is named to a worker by `module:qualified.name`; one that a worker could not import (a
lambda, a function defined inside another, one from `__main__`, or a name that does not lead back to
the same object) is refused at call time with `InvalidInputError`, as are arguments msgpack cannot
carry. These jobs are not journaled: their caller is waiting in this process.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import msgspec

from adapters.call import CPU_CALL_MODEL
from scheduler.core.admission import new_job_id
from scheduler.core.deadlines import Deadlines
from scheduler.core.endings import JobEndings
from scheduler.core.jobs import Job, JobStatus
from scheduler.core.models import ModelRegistry
from scheduler.core.table import JobTable
from scheduler.errors import InvalidInputError, JobFailedError, NoFitError, NotRunningError

T = TypeVar("T")
CALLER = "cpu-call"  # the `parent_id` of these jobs: run for a caller of this process, not a client

_encode = msgspec.msgpack.Encoder().encode


def function_path(function: Callable[..., Any]) -> str:
    """`module:qualified.name` of a function a worker can import; InvalidInputError saying why not."""
    module = getattr(function, "__module__", None)
    qualified = getattr(function, "__qualname__", None)
    shown = getattr(function, "__name__", repr(function))
    if not module or not qualified:
        raise InvalidInputError(f"{shown} has no module and name a worker could import it by", "fn")
    if module == "__main__":
        raise InvalidInputError(
            f"{shown} is defined in __main__, which a worker cannot import; move it into a module", "fn"
        )
    if "<locals>" in qualified or "<lambda>" in qualified:
        raise InvalidInputError(
            f"{module}.{qualified} is a lambda or is defined inside a function; a worker can only "
            "import a module-level function",
            "fn",
        )
    try:
        target: Any = importlib.import_module(module)
        for part in qualified.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(f"{module}:{qualified} cannot be imported: {exc}", "fn") from None
    if target is not function and getattr(target, "__wrapped__", None) is not function:
        raise InvalidInputError(f"{module}:{qualified} names another object than the one given", "fn")
    return f"{module}:{qualified}"


class CpuCalls:
    """registry, table, endings, deadlines: models and jobs; schedule: runs the dispatch pass soon;
    max_threads: the thread pool's size."""

    def __init__(
        self,
        registry: ModelRegistry,
        table: JobTable,
        endings: JobEndings,
        deadlines: Deadlines,
        schedule: Callable[[], None],
        *,
        max_threads: int,
    ) -> None:
        self.registry = registry
        self.table = table
        self.endings = endings
        self.deadlines = deadlines
        self.schedule = schedule
        self.accepting: Callable[[], bool] = lambda: True
        self.register: Callable[[dict[str, Any]], object] | None = None  # the catalog's, set by assembly
        self.threads = ThreadPoolExecutor(max_threads, thread_name_prefix="modelsched-cpu")
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        endings.family_observers.append(self.on_end)

    # ---- the CPU stage pool --------------------------------------------------------------------

    async def run(
        self,
        function: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout_s: float | None,
    ) -> Any:
        """`function(*args, **kwargs)` in a CPU worker; its result (as msgpack carries it back)."""
        return await self._submit(
            {"fn": function_path(function), "args": list(args), "kwargs": kwargs}, timeout_s
        )

    async def map(
        self, function: Callable[[Any], Any], items: Iterable[Any], chunk: int, timeout_s: float | None
    ) -> list[Any]:
        """`[function(item) for item in items]`, `chunk` items per job, the jobs spread over the pool."""
        if chunk < 1:
            raise InvalidInputError("chunk must be at least 1", "chunk")
        path = function_path(function)
        values = list(items)
        chunks = [values[start : start + chunk] for start in range(0, len(values), chunk)]
        calls = [asyncio.ensure_future(self._submit({"fn": path, "map": part}, timeout_s)) for part in chunks]
        try:
            results = await asyncio.gather(*calls)
        except BaseException:  # one chunk failed (or the caller gave up): the others need not run
            for call in calls:
                call.cancel()
            raise
        return [value for part in results for value in part]

    async def _submit(self, inputs: dict[str, Any], timeout_s: float | None) -> Any:
        if not self.accepting():
            raise NotRunningError("the scheduler is not accepting jobs (not started, or shutting down)")
        if CPU_CALL_MODEL not in self.registry and self.register is not None:
            self.register({"name": CPU_CALL_MODEL, "adapter": CPU_CALL_MODEL})  # on first use
        registered = self.registry.get(CPU_CALL_MODEL)
        if registered.no_fit is not None:
            raise NoFitError(
                f"run_cpu needs CPU workers and this daemon has none ({registered.no_fit}); "
                "set cpu_workers_max (or cpu_workers) to at least 1"
            )
        try:
            _encode(inputs)
        except (TypeError, msgspec.EncodeError) as exc:
            raise InvalidInputError(
                f"the arguments must be msgpack values (numbers, strings, lists, dicts): {exc}", "args"
            ) from None
        job = Job(id=new_job_id(), model=CPU_CALL_MODEL, inputs=inputs, timeout_s=timeout_s, parent_id=CALLER)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[job.id] = future
        self.table.add(job)
        if timeout_s is not None:
            self.deadlines.watch(job, time.monotonic() + timeout_s)
        self.schedule()
        try:
            return await future
        except asyncio.CancelledError:
            if not job.ended:  # the caller gave up: the job does not run (or its result is dropped)
                self.endings.finish(job, JobStatus.CANCELLED, error="the caller was cancelled")
            raise

    def on_end(self, job: Job) -> None:
        future = self._waiting.pop(job.id, None) if job.parent_id == CALLER else None
        if future is None or future.done():
            return
        if job.status is JobStatus.COMPLETED:
            future.set_result(job.result)
        else:
            future.set_exception(JobFailedError(job.error or job.status.value, job.error_kind, job.id))

    def release_all(self) -> None:
        """The scheduler stopped: callers still waiting get NotRunningError."""
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(NotRunningError("the scheduler stopped before the call ran"))
        self._waiting.clear()

    # ---- the main process's threads ------------------------------------------------------------

    async def run_in_thread(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.threads, function, *args)

    async def map_threads(self, function: Callable[[Any], T], items: Iterable[Any]) -> list[T]:
        loop = asyncio.get_running_loop()
        return list(
            await asyncio.gather(*(loop.run_in_executor(self.threads, function, item) for item in items))
        )
