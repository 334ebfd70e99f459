"""The supervision policy (`scheduler.pool.supervisor`), pure, and `WorkerSet` applying it to worker
records through a fake launcher whose channels are fakes (`tests.support.fakes`): no process, no
thread."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from scheduler.core.workers import Worker, WorkerSet
from scheduler.errors import WorkerState
from scheduler.pool.supervisor import (
    RESPAWN_BACKOFF,
    YOUNG_S,
    ChildWatch,
    Kill,
    Respawn,
    Timeouts,
    booted,
    is_poison,
    next_action,
)
from tests.support.fakes import FakeChannel, fake
from workers import protocol as m
from workers.backoff import Backoff
from workers.child import EXIT_BOOT_FAILED

TIMEOUTS = Timeouts(start_s=10.0, heartbeat_s=2.0)
EXACT = Backoff(first_s=1.0, cap_s=8.0)


# ---- the pure policy -------------------------------------------------------------------------


def test_a_starting_child_is_killed_once_past_its_start_timeout() -> None:
    watch = ChildWatch("w", started_at=100.0)
    assert next_action(watch, 110.0, TIMEOUTS) is None
    action = next_action(watch, 110.01, TIMEOUTS)
    assert isinstance(action, Kill) and "did not report ready within 10s" in action.reason


def test_a_ready_child_is_killed_once_silent_past_its_heartbeat_timeout() -> None:
    watch = ChildWatch("w", started_at=0.0)
    watch.ready(200.0)
    assert watch.state is WorkerState.READY
    assert (
        next_action(watch, 202.0, TIMEOUTS) is None
    )  # long past start_s: it is ready, that no longer counts
    watch.heartbeat(202.0)
    assert next_action(watch, 204.0, TIMEOUTS) is None
    action = next_action(watch, 204.5, TIMEOUTS)
    assert isinstance(action, Kill) and "no heartbeat for 2.5s" in action.reason


def test_a_dead_child_is_respawned_once_its_respawn_time_comes() -> None:
    watch = ChildWatch("w", started_at=0.0)
    assert (
        watch.exited(300.0, 1, backoff=EXACT) is WorkerState.STARTING
    )  # it never said ready: a boot failure
    assert watch.state is WorkerState.DEAD and watch.exit_code == 1
    assert watch.respawn_at == 301.0
    assert next_action(watch, 300.99, TIMEOUTS) is None
    assert next_action(watch, 301.0, TIMEOUTS) == Respawn()


@pytest.mark.parametrize("state", [WorkerState.STOPPING, WorkerState.STOPPED])
def test_a_stopping_or_stopped_child_is_left_alone(state: WorkerState) -> None:
    watch = ChildWatch("w", state=state, started_at=0.0)
    assert next_action(watch, 10_000.0, TIMEOUTS) is None


def test_boot_failures_grow_the_back_off_and_a_death_in_service_respawns_at_once() -> None:
    watch = ChildWatch("w", started_at=0.0)
    watch.exited(10.0, None, backoff=EXACT)
    assert (watch.boot_failures, watch.respawn_at) == (1, 11.0)
    watch = watch.successor(11.0)
    watch.exited(12.0, None, backoff=EXACT)  # still STARTING
    assert (watch.boot_failures, watch.respawn_at) == (2, 14.0)
    watch = watch.successor(14.0)
    watch.ready(14.5)
    watch.exited(15.0, EXIT_BOOT_FAILED, backoff=EXACT)  # said ready, then reported a failed boot
    assert (watch.boot_failures, watch.respawn_at) == (3, 19.0)
    watch = watch.successor(19.0)
    watch.ready(19.5)
    assert watch.exited(30.0, -9, backoff=EXACT) is WorkerState.READY
    assert (watch.boot_failures, watch.respawn_at) == (0, 30.0)
    assert next_action(watch, 30.0, TIMEOUTS) == Respawn()


def test_a_child_dying_idle_right_after_its_start_backs_off_one_holding_work_does_not() -> None:
    """A crash loop of the child's own (dead with no work in hand, young) grows the back-off; a death
    with jobs in hand is theirs (they go back as suspects), and an idle death after YOUNG_S is in service."""
    idle = ChildWatch("w", started_at=0.0)
    idle.ready(0.5)
    idle.exited(YOUNG_S - 1, -11, held_work=False, backoff=EXACT)
    assert (idle.boot_failures, idle.respawn_at) == (1, YOUNG_S)
    busy = ChildWatch("w", started_at=0.0)
    busy.ready(0.5)
    busy.exited(YOUNG_S - 1, -11, held_work=True, backoff=EXACT)
    assert (busy.boot_failures, busy.respawn_at) == (0, YOUNG_S - 1)
    old = ChildWatch("w", started_at=0.0, boot_failures=2)
    old.ready(0.5)
    old.exited(YOUNG_S + 1, -11, held_work=False, backoff=EXACT)
    assert (old.boot_failures, old.respawn_at) == (0, YOUNG_S + 1)


def test_booted_is_a_death_after_ready_without_the_boot_failure_code() -> None:
    assert booted(WorkerState.READY, 1) and booted(WorkerState.STOPPING, None)
    assert not booted(WorkerState.STARTING, 0) and not booted(WorkerState.READY, EXIT_BOOT_FAILED)


def test_the_successor_carries_restarts_and_boot_failures() -> None:
    watch = ChildWatch("gpu0-w1", restarts=4, boot_failures=2, started_at=0.0)
    watch.exited(50.0, None, backoff=EXACT)
    after = watch.successor(55.0)
    assert (after.name, after.state, after.started_at) == ("gpu0-w1", WorkerState.STARTING, 55.0)
    assert (after.restarts, after.boot_failures, after.exit_code) == (5, 3, None)


def test_is_poison_once_deaths_reach_max_attempts() -> None:
    assert [is_poison(deaths, 3) for deaths in range(5)] == [False, False, False, True, True]


def test_backoff_without_jitter_is_exact_and_capped() -> None:
    assert [EXACT.delay(failures) for failures in range(7)] == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert EXACT.delay(10_000) == 8.0
    for first_s, cap_s, jitter in [(-1.0, 1.0, 0.0), (2.0, 1.0, 0.0), (1.0, 2.0, 1.0), (1.0, 2.0, -0.1)]:
        with pytest.raises(ValueError, match="invalid back-off"):
            Backoff(first_s=first_s, cap_s=cap_s, jitter=jitter)


def test_backoff_with_jitter_stays_within_its_share_below_the_full_delay() -> None:
    jittered = Backoff(first_s=1.0, cap_s=8.0, jitter=0.2, rng=random.Random(7))
    for failures in range(1, 7):
        full = EXACT.delay(failures)
        delays = [jittered.delay(failures) for _ in range(200)]
        assert all(0.8 * full <= delay <= full for delay in delays)
        assert min(delays) < 0.9 * full  # it does spread them
    assert jittered.delay(0) == 0.0


def test_the_default_respawn_back_off_after_one_boot_failure() -> None:
    watch = ChildWatch("w", started_at=0.0)
    watch.exited(10.0, None)
    assert 10.0 + 0.8 * RESPAWN_BACKOFF.first_s <= watch.respawn_at <= 10.0 + RESPAWN_BACKOFF.first_s


# ---- WorkerSet -------------------------------------------------------------------------------


@dataclass
class Launch:
    worker_id: str
    gpu_index: int | None
    simulated: bool
    specs: list[m.ModelSpec]
    channel: FakeChannel
    on_message: Callable[[bytes], None]
    on_exit: Callable[[], None]


class FakeLauncher:
    def __init__(self) -> None:
        self.launches: list[Launch] = []
        self.failures = 0  # launches to fail (as a spawn does without memory or file descriptors)

    def label(self, gpu_index: int | None, simulated: bool) -> str:
        if gpu_index is None:
            return "cpu"
        return f"sim-gpu{gpu_index}" if simulated else f"cuda:{gpu_index}"

    def launch(
        self,
        worker_id: str,
        gpu_index: int | None,
        simulated: bool,
        specs: list[m.ModelSpec],
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[bytes], None],
        on_exit: Callable[[], None],
    ) -> FakeChannel:
        if self.failures:
            self.failures -= 1
            raise OSError(24, "Too many open files")
        channel = FakeChannel()
        self.launches.append(Launch(worker_id, gpu_index, simulated, specs, channel, on_message, on_exit))
        return channel


SPECS = [m.ModelSpec(name="echo", adapter="echo")]


@dataclass
class Pool:
    workers: dict[str, Worker]
    launcher: FakeLauncher
    worker_set: WorkerSet
    messages: list[tuple[Worker, bytes]]
    exits: list[Worker]


@pytest.fixture
def pool(loop: asyncio.AbstractEventLoop) -> Iterator[Pool]:  # the fake launcher never uses the loop
    workers: dict[str, Worker] = {}
    launcher = FakeLauncher()
    messages: list[tuple[Worker, bytes]] = []
    exits: list[Worker] = []
    worker_set = WorkerSet(
        workers,
        launcher,
        lambda: SPECS,
        lambda worker, data: messages.append((worker, data)),
        exits.append,
        TIMEOUTS,
    )
    worker_set.start(loop, [("gpu0-w0", 0), ("cpu-w0", None)], simulated=True)
    yield Pool(workers, launcher, worker_set, messages, exits)


def test_start_launches_one_worker_per_plan_entry(pool: Pool) -> None:
    assert [
        (launch.worker_id, launch.gpu_index, launch.simulated, launch.specs)
        for launch in pool.launcher.launches
    ] == [("gpu0-w0", 0, True, SPECS), ("cpu-w0", None, False, SPECS)]
    gpu, cpu = pool.workers["gpu0-w0"], pool.workers["cpu-w0"]
    assert (gpu.device_label, cpu.device_label) == ("sim-gpu0", "cpu")
    assert gpu.state is cpu.state is WorkerState.STARTING and gpu.channel is pool.launcher.launches[0].channel
    assert not pool.worker_set.any_ready()
    gpu.watch.ready(time.monotonic())
    assert pool.worker_set.any_ready() and not pool.worker_set.all_ready()
    pool.launcher.launches[1].on_message(b"hello")
    pool.launcher.launches[1].on_exit()
    assert pool.messages == [(cpu, b"hello")] and pool.exits == [cpu]


def test_supervise_kills_a_worker_silent_past_its_heartbeat_timeout_and_not_before(pool: Pool) -> None:
    now = time.monotonic()
    worker = pool.workers["cpu-w0"]
    worker.watch.ready(now)
    pool.worker_set.supervise(now + TIMEOUTS.heartbeat_s)
    assert fake(worker).kills == 0
    pool.worker_set.supervise(now + TIMEOUTS.heartbeat_s + 0.5)
    assert fake(worker).kills == 1


def test_supervise_kills_a_worker_that_never_said_ready(pool: Pool) -> None:
    worker = pool.workers["gpu0-w0"]
    pool.worker_set.supervise(worker.watch.started_at + TIMEOUTS.start_s)
    assert fake(worker).kills == 0
    pool.worker_set.supervise(worker.watch.started_at + TIMEOUTS.start_s + 0.1)
    assert fake(worker).kills == 1


def test_supervise_replaces_a_dead_worker_once_its_respawn_time_comes(pool: Pool) -> None:
    now = time.monotonic()
    old = pool.workers["cpu-w0"]
    old.watch.ready(now)
    old.watch.exited(now + 1.0, -9)  # what `WorkerEvents.on_exit` does: died in service
    pool.worker_set.supervise(now + 0.5)
    assert pool.workers["cpu-w0"] is old
    pool.worker_set.supervise(now + 1.0)
    new = pool.workers["cpu-w0"]
    assert new is not old and (new.restarts, new.state, new.gpu_index) == (1, WorkerState.STARTING, None)
    assert new.channel is pool.launcher.launches[-1].channel and len(pool.launcher.launches) == 3
    pool.launcher.launches[-1].on_message(b"ready")
    assert pool.messages == [(new, b"ready")]


def test_supervise_does_not_respawn_once_respawning_is_over(pool: Pool) -> None:
    now = time.monotonic()
    old = pool.workers["cpu-w0"]
    old.watch.ready(now)
    old.watch.exited(now, -9)
    pool.worker_set.respawning = False  # the shutdown has begun (`Scheduler.begin_shutdown`)
    pool.worker_set.supervise(now + 3600)
    assert pool.workers["cpu-w0"] is old and len(pool.launcher.launches) == 2


def test_a_worker_that_keeps_failing_to_boot_waits_its_back_off(pool: Pool) -> None:
    now = time.monotonic()
    old = pool.workers["gpu0-w0"]
    old.watch.exited(now, EXIT_BOOT_FAILED)
    pool.worker_set.supervise(now + 0.8 * RESPAWN_BACKOFF.first_s - 0.01)
    assert pool.workers["gpu0-w0"] is old
    pool.worker_set.supervise(now + RESPAWN_BACKOFF.first_s)
    new = pool.workers["gpu0-w0"]
    assert new is not old and (new.restarts, new.watch.boot_failures, new.device_label) == (1, 1, "sim-gpu0")


def test_stop_asks_idle_workers_to_stop_and_kills_one_that_still_holds_jobs(pool: Pool) -> None:
    busy, idle = pool.workers["gpu0-w0"], pool.workers["cpu-w0"]
    busy.in_flight["job-1"] = 1
    asyncio.run(pool.worker_set.stop())
    assert busy.state is idle.state is WorkerState.STOPPING and busy.no_penalty and idle.no_penalty
    assert (fake(busy).kills, fake(busy).messages()) == (1, [])
    assert (fake(idle).kills, fake(idle).messages()) == (0, [m.Shutdown()])
    assert all(fake(worker).joined and fake(worker).closed for worker in (busy, idle))


def test_a_worker_that_cannot_even_be_started_is_dead_and_tried_again_after_its_back_off(pool: Pool) -> None:
    now = time.monotonic()
    old = pool.workers["cpu-w0"]
    old.watch.ready(now)
    old.watch.exited(now, -9)  # died in service: respawned at the next tick
    pool.launcher.failures = 1
    pool.worker_set.supervise(now)
    failed = pool.workers["cpu-w0"]
    assert failed is not old and failed.channel is None and failed.state is WorkerState.DEAD
    assert failed.watch.boot_failures == 1 and failed.watch.respawn_at > now and failed.restarts == 1
    pool.worker_set.supervise(now)  # within its back-off: nothing
    assert pool.workers["cpu-w0"] is failed and len(pool.launcher.launches) == 2
    pool.worker_set.supervise(failed.watch.respawn_at)
    again = pool.workers["cpu-w0"]
    assert again is not failed and again.state is WorkerState.STARTING and again.restarts == 2
    assert again.channel is pool.launcher.launches[-1].channel
