"""The model workers as the main process knows them: `Worker`, one record per incarnation of a
worker (a respawned worker gets a new record; its `ChildWatch` carries the restart count over),
which placement reads as a `Slot` and supervision by its `watch`; and `WorkerSet`, the records by
id and their lives (start, supervision, stop)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from scheduler.core.placement import LoadedModel
from scheduler.core.ports import WorkerChannel
from scheduler.errors import WorkerState
from scheduler.pool.supervisor import ChildWatch, Kill, Respawn, Timeouts, next_action
from workers import protocol as m
from workers.child import EXIT_BOOT_FAILED

log = logging.getLogger("modelsched.scheduler")

STOP_WAIT_S = 5.0  # how long stopping workers may take before they are killed


class Launcher(Protocol):
    """Starts one worker's process or thread (`scheduler.pool.workers.WorkerLauncher`)."""

    def label(self, gpu_index: int | None, simulated: bool) -> str: ...

    def launch(
        self,
        worker_id: str,
        gpu_index: int | None,
        simulated: bool,
        specs: list[m.ModelSpec],
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[bytes], None],
        on_exit: Callable[[], None],
    ) -> WorkerChannel: ...


@dataclass
class Worker:
    """Everything the main process knows of one worker."""

    worker_id: str
    gpu_index: int | None  # None: a CPU worker
    device_label: str  # "cuda:1", "cpu", "sim-gpu0", "cpu (in process)"
    watch: ChildWatch
    channel: WorkerChannel | None = None
    last_heartbeat_wall: float | None = None
    rss_bytes: int = 0
    cuda_visible_devices: str | None = None
    # the placement view
    models: dict[str, LoadedModel] = field(default_factory=dict)
    measured_bytes: dict[str, int] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)  # job id -> items
    outstanding_items: int = 0
    jobs_done: int = 0
    no_penalty: bool = False  # restarted on purpose (a timeout, the shutdown): its jobs go back without a try
    solo_job_id: str | None = None  # a suspect (it was on a worker that died) running alone here
    reserved_for: str | None = None  # a suspect waits for this worker to drain
    last_active: float = field(default_factory=time.monotonic)  # its last job sent or ended
    retiring: float | None = None  # when the elastic CPU pool asked it to stop; parked once it has exited

    @property
    def state(self) -> WorkerState:
        return self.watch.state

    @property
    def restarts(self) -> int:
        return self.watch.restarts

    @property
    def pid(self) -> int | None:
        return self.channel.pid if self.channel is not None else None

    @property
    def ready(self) -> bool:
        """Ready for new jobs: started, and neither running a suspect alone nor draining for one."""
        return (
            self.watch.state is WorkerState.READY and self.solo_job_id is None and self.reserved_for is None
        )

    def release_solo_if_done(self) -> None:
        if self.solo_job_id is not None and self.solo_job_id not in self.in_flight:
            self.solo_job_id = None

    def send(self, message: m.ToWorker) -> None:
        if self.channel is not None:
            self.channel.send(m.encode(message))

    def alive(self) -> bool:
        return self.channel is not None and self.channel.alive()

    def kill(self) -> None:
        if self.channel is not None:
            self.channel.kill()

    def forget_work(self) -> list[str]:
        """It is gone: what it held is no longer in flight anywhere. Returns the jobs it held."""
        job_ids = list(self.in_flight)
        self.in_flight.clear()
        self.outstanding_items = 0
        self.models.clear()
        self.solo_job_id = None
        self.reserved_for = None
        return job_ids


class WorkerSet:
    """The worker records and their lives: started per the plan, supervised on the tick, stopped at the end.

    records: the records by id (the dispatcher, deadlines and status read the same dict); launcher:
    starts a worker's process or thread (`scheduler.pool.workers.WorkerLauncher`); specs: the
    registered models' specs, read at each start; on_message, on_exit: where a worker's messages and
    its death go (`scheduler.core.worker_events`); timeouts: the supervision policy's."""

    def __init__(
        self,
        records: dict[str, Worker],
        launcher: Launcher,
        specs: Callable[[], list[m.ModelSpec]],
        on_message: Callable[[Worker, bytes], None],
        on_exit: Callable[[Worker], None],
        timeouts: Timeouts,
    ) -> None:
        self.records = records
        self.launcher = launcher
        self.specs = specs
        self.on_message = on_message
        self.on_exit = on_exit
        self.timeouts = timeouts
        self.loop: asyncio.AbstractEventLoop | None = None
        self.simulated = False
        self.respawning = True  # False once the shutdown has begun: no job is sent to a new worker

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        plan: list[tuple[str, int | None]],
        simulated: bool,
        parked: Sequence[str] = (),
    ) -> None:
        """Start the workers of the plan; `parked`: CPU slots of an elastic pool, left stopped."""
        self.loop = loop
        self.simulated = simulated
        for worker_id, gpu_index in plan:
            self.spawn(worker_id, gpu_index, ChildWatch(worker_id))
        for worker_id in parked:
            self.records[worker_id] = self._parked(worker_id, ChildWatch(worker_id))

    def _parked(self, worker_id: str, watch: ChildWatch) -> Worker:
        watch.state = WorkerState.STOPPED
        return Worker(worker_id, None, self.launcher.label(None, False), watch)

    def unpark(self, worker_id: str, now: float) -> Worker:
        """Start a parked CPU slot (the elastic pool grows)."""
        old = self.records[worker_id]
        return self.spawn(worker_id, None, ChildWatch(worker_id, started_at=now, restarts=old.watch.restarts))

    def retire(self, worker_id: str) -> None:
        """Stop a worker for good (the elastic pool shrinks): it takes no new job from now on, gives
        back any it holds without a try counted, and is parked once it has exited."""
        worker = self.records[worker_id]
        worker.retiring = time.monotonic()
        worker.no_penalty = True
        worker.watch.state = WorkerState.STOPPING
        worker.send(m.Shutdown())

    def spawn(self, worker_id: str, gpu_index: int | None, watch: ChildWatch) -> Worker:
        """A new incarnation of the worker. When it cannot even be started (no memory, no file
        descriptors), it is dead with a boot failure counted: the supervision respawns it after its
        back-off, like a worker that failed to boot."""
        assert self.loop is not None
        simulated = gpu_index is not None and self.simulated
        worker = Worker(worker_id, gpu_index, self.launcher.label(gpu_index, simulated), watch)
        self.records[worker_id] = worker
        try:
            worker.channel = self.launcher.launch(
                worker_id,
                gpu_index,
                simulated,
                self.specs(),
                self.loop,
                lambda data: self.on_message(worker, data),
                lambda: self.on_exit(worker),
            )
        except Exception:
            log.exception("worker %s could not be started; it is tried again after a back-off", worker_id)
            watch.exited(time.monotonic(), EXIT_BOOT_FAILED)
        return worker

    def supervise(self, now: float) -> None:
        """The supervision policy applied to every worker: kill the silent, respawn the dead (not once
        the shutdown has begun: `respawning`)."""
        for worker in list(self.records.values()):
            if worker.retiring is not None:
                if worker.state is WorkerState.DEAD:
                    self.records[worker.worker_id] = self._parked(worker.worker_id, worker.watch)
                elif now - worker.retiring > STOP_WAIT_S and worker.alive():
                    log.warning(
                        "worker %s did not stop in time; killing pid %s", worker.worker_id, worker.pid
                    )
                    worker.kill()
                continue
            action = next_action(worker.watch, now, self.timeouts)
            if isinstance(action, Kill):
                log.error("worker %s (pid %s) %s", worker.worker_id, worker.pid, action.reason)
                worker.kill()
            elif isinstance(action, Respawn) and self.respawning:
                self.spawn(worker.worker_id, worker.gpu_index, worker.watch.successor(now))

    async def wait_ready(self, timeout: float) -> None:
        """Until every worker that runs has reported ready (or `timeout`, then TimeoutError)."""
        deadline = time.monotonic() + timeout
        while not self.all_ready():
            if time.monotonic() > deadline:
                states = {wid: worker.state.value for wid, worker in self.records.items()}
                raise TimeoutError(f"workers not ready after {timeout}s: {states}")
            await asyncio.sleep(0.02)

    def all_ready(self) -> bool:
        """Every worker that runs is ready (a parked slot of the elastic CPU pool starts on demand)."""
        return bool(self.records) and all(
            worker.state in (WorkerState.READY, WorkerState.STOPPED) for worker in self.records.values()
        )

    def any_ready(self) -> bool:
        """Some worker is ready, or every one is a parked slot that starts when a job comes."""
        states = [worker.state for worker in self.records.values()]
        return WorkerState.READY in states or (bool(states) and all(s is WorkerState.STOPPED for s in states))

    async def stop(self) -> None:
        """Ask every worker to stop; kill one that still holds jobs (the grace is over) or does not
        stop within `STOP_WAIT_S`. Their deaths are not their jobs' fault."""
        for worker in self.records.values():
            if worker.state in (WorkerState.DEAD, WorkerState.STOPPED):
                continue
            worker.watch.state = WorkerState.STOPPING
            worker.no_penalty = True
            if worker.in_flight and worker.channel is not None and worker.channel.killable:
                log.warning(
                    "worker %s still holds %d job(s) after the grace period; killing pid %s",
                    worker.worker_id,
                    len(worker.in_flight),
                    worker.pid,
                )
                worker.kill()
                continue
            worker.send(m.Shutdown())
        deadline = time.monotonic() + STOP_WAIT_S
        while any(worker.alive() for worker in self.records.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for worker in self.records.values():
            if worker.alive():
                log.warning("worker %s did not stop in time; killing pid %s", worker.worker_id, worker.pid)
                worker.kill()
            if worker.channel is not None:
                if (
                    worker.channel.killable
                ):  # a process, reaped at once once ended; a thread is not waited for
                    worker.channel.join(timeout=5)
                worker.channel.close()
