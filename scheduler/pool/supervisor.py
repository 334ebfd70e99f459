"""The one supervision policy for every child process, model workers and the render process alike,
as pure decisions over a `ChildWatch` (gunicorn's arbiter, in small): a child that has not said ready
within `start_s`, or has sent no heartbeat for `heartbeat_s`, is killed; a dead child is respawned,
at once if it had booted, after a growing back-off while it keeps failing to boot (so a broken
child does not become a restart storm); a job that was in flight on `max_attempts` dead children
is poison. A child that dies holding no work within `YOUNG_S` of its start also counts as a failed
boot, so a child that crashes right after saying ready does not restart in a tight loop. Also the
worker plan: which model workers the pool should hold.

The owners apply the decisions: `WorkerSet.supervise` to the model workers, `RenderService.supervise`
to the render process; the scheduler's one supervision tick runs both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from scheduler.errors import WorkerState
from workers.backoff import Backoff
from workers.child import EXIT_BOOT_FAILED

RESPAWN_BACKOFF = Backoff(first_s=0.25, cap_s=30.0, jitter=0.2)
YOUNG_S = 5.0  # a child that dies holding no work this soon after its start has not proven itself


@dataclass(frozen=True)
class Timeouts:
    start_s: float  # from spawn to "ready"
    heartbeat_s: float  # between heartbeats once ready


@dataclass
class ChildWatch:
    """What supervision knows of one child process. One per incarnation; `restarts` and
    `boot_failures` carry over to the next one (`successor`)."""

    name: str
    state: WorkerState = WorkerState.STARTING
    started_at: float = field(default_factory=time.monotonic)
    last_heartbeat: float = 0.0
    restarts: int = 0
    boot_failures: int = 0  # consecutive deaths before proving itself: they grow the back-off
    respawn_at: float = 0.0
    exit_code: int | None = None

    def ready(self, now: float) -> None:
        if self.state is WorkerState.STARTING:
            self.state = WorkerState.READY
        self.last_heartbeat = now

    def heartbeat(self, now: float) -> None:
        self.last_heartbeat = now

    def exited(
        self, now: float, exit_code: int | None, held_work: bool = True, backoff: Backoff = RESPAWN_BACKOFF
    ) -> WorkerState:
        """The child is gone: it is dead, with its respawn time set. Returns the state it was in. A
        death that is not one in service (see `in_service`) grows the back-off before the respawn."""
        was = self.state
        self.state = WorkerState.DEAD
        self.exit_code = exit_code
        served = in_service(was, exit_code, held_work, lived_s=now - self.started_at)
        self.boot_failures = 0 if served else self.boot_failures + 1
        self.respawn_at = now + backoff.delay(self.boot_failures)
        return was

    def successor(self, now: float) -> ChildWatch:
        """The watch of the child that replaces this one."""
        return ChildWatch(
            self.name, started_at=now, restarts=self.restarts + 1, boot_failures=self.boot_failures
        )


def booted(state_before_exit: WorkerState, exit_code: int | None) -> bool:
    """It had said ready, and did not report a failed boot."""
    return state_before_exit not in (WorkerState.STARTING,) and exit_code != EXIT_BOOT_FAILED


def in_service(
    state_before_exit: WorkerState, exit_code: int | None, held_work: bool, lived_s: float
) -> bool:
    """A death in service respawns at once: the child had booted, and either held work (its jobs
    answer for it: they go back as suspects, and a poison job fails) or lived `YOUNG_S`. One that
    dies idle right after its start (a crash loop of its own) waits out the back-off."""
    return booted(state_before_exit, exit_code) and (held_work or lived_s >= YOUNG_S)


@dataclass(frozen=True)
class Kill:
    reason: str


@dataclass(frozen=True)
class Respawn:
    pass


Action = Kill | Respawn | None


def next_action(watch: ChildWatch, now: float, timeouts: Timeouts) -> Action:
    """What the supervisor does about this child now."""
    if watch.state is WorkerState.STARTING and now - watch.started_at > timeouts.start_s:
        return Kill(f"did not report ready within {timeouts.start_s:g}s")
    if watch.state is WorkerState.READY and now - watch.last_heartbeat > timeouts.heartbeat_s:
        return Kill(f"sent no heartbeat for {now - watch.last_heartbeat:.1f}s; killing it as hung")
    if watch.state is WorkerState.DEAD and now >= watch.respawn_at:
        return Respawn()
    return None


def is_poison(deaths: int, max_attempts: int) -> bool:
    """A job in flight on `max_attempts` dead children (the last time alone) is not tried again."""
    return deaths >= max_attempts


def worker_plan(
    gpu_indices: list[int], workers_per_gpu: int, cpu_bounds: tuple[int, int], needs_cpu_workers: bool
) -> tuple[list[tuple[str, int | None]], list[str]]:
    """(worker id, GPU index or None) for every worker the pool starts with, and the CPU slots left
    parked for an elastic pool (`cpu_bounds`: its fewest and most workers) to start when needed. A
    fixed pool that needs CPU workers has at least one."""
    low, high = cpu_bounds
    plan: list[tuple[str, int | None]] = [
        (f"gpu{index}-w{slot}", index) for index in gpu_indices for slot in range(workers_per_gpu)
    ]
    if low != high:
        plan += [(cpu_worker_id(slot), None) for slot in range(low)]
        return plan, [cpu_worker_id(slot) for slot in range(low, high)]
    if needs_cpu_workers:
        plan += [(cpu_worker_id(slot), None) for slot in range(max(1, low))]
    return plan, []


def cpu_worker_id(slot: int) -> str:
    return f"cpu-w{slot}"
