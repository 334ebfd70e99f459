"""The worker's run loop: receive messages, load models lazily, run batches, report results and health.

Transport-agnostic: it is given `receive(timeout_s) -> bytes | None` and `send(bytes)`, so the same
loop runs in a worker process (a pipe each way) and, for the ASYNC scheduler type, in a thread of the
main process. Heartbeats are sent from this loop, between batches, so a model that hangs in a batch
stops them and the supervisor notices. A model's load is different: it may rightly take longer than
the heartbeat timeout (a large model, a busy machine), so a thread sends the heartbeats while it
loads, for at most `load_timeout_s`; a load that hangs longer stops them too.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import psutil

from adapters.base import BaseAdapter
from adapters.registry import build_adapter
from workers import protocol as m
from workers.batching import BatchKnobs, PendingJob, RunNow, WaitUntil, next_batch, take_units
from workers.gc_tuning import tune_gc
from workers.predicting import ItemResult, describe, predict_isolated

log = logging.getLogger("modelsched.worker")


class ModelLoadError(Exception):
    pass


@dataclass
class PartialJob:
    """A job whose items run in one or more batches; it ends when its last item is done."""

    inputs: Any
    total: int
    outputs: list[Any]
    done: int = 0
    error: tuple[str, m.ErrorKind | None] | None = None
    compute_s: float = 0.0  # its items' shares of the batches they ran in


class WorkerRuntime:
    def __init__(
        self,
        worker_id: str,
        device: str,
        specs: list[m.ModelSpec],
        receive: Callable[[float], bytes | None],
        send: Callable[[bytes], None],
        heartbeat_interval_s: float = 0.5,
        cuda_visible_devices: str | None = None,
        load_timeout_s: float = 300.0,
    ) -> None:
        self.worker_id = worker_id
        self.device = device
        self.receive = receive
        self.send_bytes = send
        self.heartbeat_interval_s = heartbeat_interval_s
        self.load_timeout_s = load_timeout_s
        self._send_lock = threading.Lock()  # the loading heartbeat thread sends too
        self.cuda_visible_devices = cuda_visible_devices
        self.specs: dict[str, m.ModelSpec] = {spec.name: spec for spec in specs}
        self.adapters: dict[str, BaseAdapter] = {}
        self.states: dict[str, Any] = {}
        self.pending: dict[str, deque[PendingJob]] = {}
        self.partial: dict[str, PartialJob] = {}  # jobs split into items, by job id
        self.knobs: dict[str, BatchKnobs] = {}
        self.stopping = False
        self.last_heartbeat = 0.0
        self.process = psutil.Process()

    # ---- messages ------------------------------------------------------------------------------

    def send(self, message: m.FromWorker) -> None:
        data = m.encode(message)
        with self._send_lock:
            self.send_bytes(data)

    def handle(self, data: bytes) -> None:
        message = m.decode_to_worker(data)
        if isinstance(message, m.RunJobs):
            self.enqueue(message)
        elif isinstance(message, m.LoadModel):
            self.ensure_loaded(message.model, job_ids=[])
        elif isinstance(message, m.UnloadModel):
            self.unload(message.model)
        elif isinstance(message, m.RegisterModel):
            spec = message.spec
            self.specs[spec.name] = spec
            self.adapters.pop(spec.name, None)
            if spec.name in self.knobs:
                self.knobs[spec.name] = BatchKnobs(spec.max_batch_size, spec.max_delay_ms, spec.batch_policy)
        elif isinstance(message, m.Shutdown):
            self.stopping = True

    def enqueue(self, message: m.RunJobs) -> None:
        now = time.monotonic()
        queue = self.pending.get(message.model)
        if queue is None:
            spec = self.specs.get(message.model)
            if spec is None:
                self.send(
                    m.JobResults(
                        message.model,
                        0,
                        0.0,
                        [
                            m.JobOutcome(
                                job.job_id,
                                None,
                                f"model {message.model!r} is not registered",
                                m.ErrorKind.MODEL,
                            )
                            for job in message.jobs
                        ],
                    )
                )
                return
            queue = self.pending[message.model] = deque()
            self.knobs[message.model] = BatchKnobs(spec.max_batch_size, spec.max_delay_ms, spec.batch_policy)
        split = getattr(self.adapter_for(message.model), "items", None)
        if split is None:
            queue.extend(PendingJob(job.job_id, job.inputs, now) for job in message.jobs)
            return
        for job in message.jobs:
            try:
                items = list(split(job.inputs))
            except Exception as exc:
                self.send(
                    m.JobResults(
                        message.model,
                        0,
                        0.0,
                        [m.JobOutcome(job.job_id, None, describe(exc), m.ErrorKind.INPUT)],
                    )
                )
                continue
            partial = PartialJob(job.inputs, len(items), [None] * len(items))
            if not items:
                self.send(
                    m.JobResults(
                        message.model, 0, 0.0, [self.finish_split(message.model, job.job_id, partial)]
                    )
                )
                continue
            self.partial[job.job_id] = partial
            queue.append(PendingJob(job.job_id, items, now, len(items), 0))

    # ---- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        self.send(m.Ready(self.worker_id, os.getpid(), self.device, self.cuda_visible_devices))
        self.heartbeat()
        while not self.stopping:
            now = time.monotonic()
            if now - self.last_heartbeat >= self.heartbeat_interval_s:
                self.heartbeat()
            decision = next_batch(self.pending, self.knobs, now)
            if isinstance(decision, RunNow):
                timeout = 0.0
            elif isinstance(decision, WaitUntil):
                timeout = max(0.0, decision.deadline - now)
            else:
                timeout = max(0.0, self.last_heartbeat + self.heartbeat_interval_s - now)
            self.drain(timeout)
            if self.stopping:
                break
            decision = next_batch(self.pending, self.knobs, time.monotonic())
            if isinstance(decision, RunNow):
                self.run_batch(decision.model, decision.count)

    def drain(self, timeout: float) -> None:
        """Wait up to `timeout` for one message, then take every message already waiting."""
        data = self.receive(timeout)
        while data is not None:
            self.handle(data)
            if self.stopping:
                return
            data = self.receive(0.0)

    def heartbeat(self) -> None:
        self.last_heartbeat = time.monotonic()
        try:
            rss = self.process.memory_info().rss
        except psutil.Error:
            rss = 0
        self.send(m.Heartbeat(worker_id=self.worker_id, sent_at=time.time(), rss_bytes=rss))

    # ---- models --------------------------------------------------------------------------------

    def adapter_for(self, model: str) -> BaseAdapter:
        adapter = self.adapters.get(model)
        if adapter is None:
            spec = self.specs[model]
            adapter = self.adapters[model] = build_adapter(spec.adapter, spec.options)
        return adapter

    def ensure_loaded(self, model: str, job_ids: list[str]) -> Any:
        if model in self.states:
            return self.states[model]
        started = time.perf_counter()
        before = self.memory_in_use()
        loaded = threading.Event()
        beats = threading.Thread(
            target=self._beat_while_loading,
            args=(model, loaded),
            name="modelsched-load-heartbeat",
            daemon=True,
        )
        beats.start()
        try:
            state = self.adapter_for(model).load(self.device)
        except Exception as exc:  # the model's own code failed: report it, keep serving others
            message = f"{type(exc).__name__}: {exc}"
            log.error("worker %s: loading %s failed: %s", self.worker_id, model, message)
            self.send(m.ModelLoadFailed(model, message, job_ids))
            raise ModelLoadError(message) from exc
        finally:
            loaded.set()
            beats.join()
        self.states[model] = state
        tune_gc()  # the model's objects live as long as it is loaded: keep full collections off them
        measured = max(0, self.memory_in_use() - before)
        load_s = time.perf_counter() - started
        log.info("worker %s: loaded %s in %.2fs (%d MiB)", self.worker_id, model, load_s, measured >> 20)
        self.send(m.ModelLoaded(model, measured, load_s))
        return state

    def _beat_while_loading(self, model: str, loaded: threading.Event) -> None:
        give_up = time.monotonic() + self.load_timeout_s
        while not loaded.wait(self.heartbeat_interval_s):
            if time.monotonic() > give_up:
                log.error(
                    "worker %s: loading %s has taken over %.0fs (model_load_timeout_s); no more heartbeats "
                    "until it ends, so the supervisor replaces this worker if it hangs",
                    self.worker_id,
                    model,
                    self.load_timeout_s,
                )
                return
            self.heartbeat()

    def memory_in_use(self) -> int:
        """The CUDA allocation on a GPU, the process's resident memory on the CPU."""
        if self.device.startswith("cuda"):
            import torch

            return int(torch.cuda.memory_allocated())
        try:
            return int(self.process.memory_info().rss)
        except psutil.Error:
            return 0

    def unload(self, model: str) -> None:
        state = self.states.pop(model, None)
        if state is not None:
            try:
                self.adapter_for(model).unload(state)
            except Exception as exc:
                log.warning("worker %s: unloading %s raised %s", self.worker_id, model, exc)
            del state
            gc.collect()
            self.free_cuda_cache()
        self.send(m.ModelUnloaded(model))

    def free_cuda_cache(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    # ---- batches -------------------------------------------------------------------------------

    def run_batch(self, model: str, count: int) -> None:
        queue = self.pending[model]
        units = take_units(queue, count)
        if model not in self.states:
            # A failed load fails every job of this model the worker holds, not just this batch.
            job_ids = list(dict.fromkeys([unit.job_id for unit in units] + [unit.job_id for unit in queue]))
            try:
                self.ensure_loaded(model, job_ids)
            except ModelLoadError:
                queue.clear()
                for job_id in job_ids:
                    self.partial.pop(job_id, None)
                return
        state = self.states[model]
        started = time.perf_counter()
        slots: list[tuple[PendingJob, int | None]] = []
        items: list[Any] = []
        for unit in units:
            if unit.job_id in self.partial:
                slots.extend((unit, unit.offset + index) for index in range(unit.count))
                items.extend(unit.inputs)
            else:
                slots.append((unit, None))
                items.append(unit.inputs)
        results = predict_isolated(self.adapter_for(model), state, items, self.free_cuda_cache)
        run_s = time.perf_counter() - started
        outcomes = self.fold(model, slots, results, run_s / len(items) if items else 0.0)
        self.send_results(
            m.JobResults(model, len(items), run_s, outcomes)
        )  # even with no job ended: batch metrics

    def fold(
        self,
        model: str,
        slots: list[tuple[PendingJob, int | None]],
        results: list[ItemResult],
        share_s: float,
    ) -> list[m.JobOutcome]:
        """Item results -> job outcomes: whole jobs at once, split jobs when their last item is done.
        `share_s`: each item's share of the batch's run time."""
        outcomes: list[m.JobOutcome] = []
        for (unit, item_index), (output, error, kind) in zip(slots, results, strict=True):
            if item_index is None:
                outcomes.append(m.JobOutcome(unit.job_id, output, error, kind, share_s))
                continue
            partial = self.partial[unit.job_id]
            partial.compute_s += share_s
            if error is not None and partial.error is None:
                partial.error = (error, kind)
            partial.outputs[item_index] = output
            partial.done += 1
            if partial.done == partial.total:
                del self.partial[unit.job_id]
                outcomes.append(self.finish_split(model, unit.job_id, partial))
        return outcomes

    def finish_split(self, model: str, job_id: str, partial: PartialJob) -> m.JobOutcome:
        if partial.error is not None:
            error, kind = partial.error
            return m.JobOutcome(job_id, None, error, kind, partial.compute_s)
        try:
            assemble = getattr(self.adapter_for(model), "assemble")  # noqa: B009 - defined with `items`
            return m.JobOutcome(
                job_id, assemble(partial.inputs, partial.outputs), None, None, partial.compute_s
            )
        except Exception as exc:
            return m.JobOutcome(job_id, None, describe(exc), m.ErrorKind.MODEL, partial.compute_s)

    def send_results(self, results: m.JobResults) -> None:
        if self.partial:  # jobs split across batches: how far each has come (their `progress` events)
            results.progress = [
                m.JobProgress(job_id, partial.done, partial.total)
                for job_id, partial in self.partial.items()
                if partial.done
            ]
        try:
            self.send(results)
        except (TypeError, msgspec.EncodeError):  # an output msgpack cannot carry: fail those alone
            checked = []
            for outcome in results.outcomes:
                try:
                    m.encode(outcome)
                    checked.append(outcome)
                except (TypeError, msgspec.EncodeError) as exc:
                    checked.append(
                        m.JobOutcome(
                            outcome.job_id,
                            None,
                            f"output cannot be serialized: {exc}",
                            m.ErrorKind.MODEL,
                            outcome.compute_s,
                        )
                    )
            self.send(
                m.JobResults(results.model, results.batch_size, results.run_s, checked, results.progress)
            )
