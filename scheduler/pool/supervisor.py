"""The one supervision policy for every child process, model workers and the render process alike,
as pure decisions over a `ChildWatch` (gunicorn's arbiter, in small): a child that has not said ready
within `start_s`, or has sent no heartbeat for `heartbeat_s`, is killed; a dead child is respawned,
at once if it had booted, after a growing back-off while it keeps failing to boot (so a broken
child does not become a restart storm); a job that was in flight on `max_attempts` dead children
is poison. Also the worker plan: which model workers the pool should hold.

The owners apply the decisions: `Scheduler` to its workers (`supervise_workers`), `RenderService`
to the render process; both run them from the scheduler's one supervision tick.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from scheduler.errors import WorkerState
from workers.backoff import Backoff
from workers.child import EXIT_BOOT_FAILED

RESPAWN_BACKOFF = Backoff(first_s=0.25, cap_s=30.0, jitter=0.2)


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

    def exited(self, now: float, exit_code: int | None, backoff: Backoff = RESPAWN_BACKOFF) -> WorkerState:
        """The child is gone: it is dead, with its respawn time set. Returns the state it was in."""
        was = self.state
        self.state = WorkerState.DEAD
        self.exit_code = exit_code
        self.boot_failures = 0 if booted(was, exit_code) else self.boot_failures + 1
        self.respawn_at = now + backoff.delay(self.boot_failures)
        return was

    def successor(self, now: float) -> ChildWatch:
        """The watch of the child that replaces this one."""
        return ChildWatch(
            self.name, started_at=now, restarts=self.restarts + 1, boot_failures=self.boot_failures
        )


def booted(state_before_exit: WorkerState, exit_code: int | None) -> bool:
    """A death in service (it had said ready, and did not report a failed boot) respawns at once."""
    return state_before_exit not in (WorkerState.STARTING,) and exit_code != EXIT_BOOT_FAILED


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
    gpu_indices: list[int], workers_per_gpu: int, cpu_workers: int, needs_cpu_workers: bool
) -> list[tuple[str, int | None]]:
    """(worker id, GPU index or None) for every worker the pool should hold."""
    plan: list[tuple[str, int | None]] = [
        (f"gpu{index}-w{slot}", index) for index in gpu_indices for slot in range(workers_per_gpu)
    ]
    if needs_cpu_workers:
        plan += [(f"cpu-w{slot}", None) for slot in range(max(1, cpu_workers))]
    return plan
