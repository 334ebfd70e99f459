"""Job events and queue positions (`scheduler.core.events`) over the core's real collaborators, wired
as the scheduler wires them, with fake worker channels and a fake journal: no process (but for a
pipeline's stages, on the ASYNC scheduler's worker threads). The stream over HTTP and through the
clients is tested in `tests/http/test_clients.py`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from scheduler import JobRequest, Scheduler
from scheduler.core.events import JobEvent, Listener, newer, parse_event_id
from scheduler.core.jobs import JobStatus
from scheduler.settings import ModelConfig, PipelineConfig, Settings
from tests.support.fakes import ECHO, SLEEP, fake, make_core, make_journaled_core, make_worker, results
from workers import protocol as m


def run(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, Any]) -> Any:
    return loop.run_until_complete(coroutine)


async def next_event(listener: Listener) -> JobEvent | None:
    return await listener.next(timeout=5)


async def nothing_within(listener: Listener, seconds: float = 0.2) -> bool:
    """No event comes within `seconds` (the refresh runs within one loop turn, positions within 50 ms)."""
    try:
        await listener.next(timeout=seconds)
    except TimeoutError:
        return True
    return False


def test_queue_positions_follow_the_dispatch_order() -> None:
    """Suspects first, then high, normal, low priority, first in first out; a cancelled job leaves
    its place; counted one job at a time and for many at once alike."""
    core = make_core([], [ECHO, SLEEP])  # no worker: nothing leaves the queue
    normal = core.submit(inputs="a")
    low = core.submit(inputs="b", priority="low")
    high = core.submit(inputs="c", priority="high")
    other_model = core.submit("sleep", 1)
    normal_too = core.submit(inputs="d")
    suspect = core.suspect("echo", "suspect-1")
    order = [suspect, high, normal, normal_too, low]
    assert [core.endings.view(job)["queue_position"] for job in order] == [0, 1, 2, 3, 4]
    assert [view["queue_position"] for view in core.endings.views(order)] == [0, 1, 2, 3, 4]
    assert core.endings.view(other_model)["queue_position"] == 0  # per model
    core.endings.finish(high, JobStatus.CANCELLED)
    assert core.endings.view(high)["queue_position"] is None
    assert [core.endings.view(job)["queue_position"] for job in (suspect, normal, normal_too, low)] == [
        0,
        1,
        2,
        3,
    ]


def test_a_listener_hears_its_place_move_up_then_the_run_then_the_end(
    loop: asyncio.AbstractEventLoop,
) -> None:
    worker = make_worker()
    core = make_core([worker], [{**ECHO, "max_batch_size": 1}], loop=loop)  # the worker holds two jobs
    jobs = [core.submit(inputs=n) for n in range(4)]
    core.turn()
    assert fake(worker).run_ids() == [[jobs[0].id, jobs[1].id]]

    async def listen() -> list[JobEvent]:
        listener = core.endings.events.listen(jobs[3])
        seen = [await next_event(listener)]
        core.say(worker, results("echo", jobs[0].id))  # jobs[2] goes to the worker: jobs[3] is next
        seen.append(await next_event(listener))
        core.say(worker, results("echo", jobs[1].id))
        seen.append(await next_event(listener))
        core.say(worker, results("echo", jobs[2].id, jobs[3].id))
        seen.append(await next_event(listener))
        assert await next_event(listener) is None  # the stream ended
        return [event for event in seen if event is not None]

    seen = run(loop, listen())
    assert [event.name for event in seen] == ["queued", "queued", "processing", "completed"]
    assert [event.data.get("queue_position") for event in seen[:2]] == [1, 0]
    assert seen[2].data["worker"] == "cpu-w0" and seen[2].data["device"] == "cpu"
    assert seen[3].data["result"] == jobs[3].id and seen[3].data["status"] == "completed"
    ids = [event.id for event in seen]
    assert ids == ["0.0.1", "0.0.0", "0.1.0", "1.3.0"]
    keys = [parse_event_id(event_id) for event_id in ids]
    assert all(key is not None for key in keys)
    assert all(newer(later, earlier) for earlier, later in zip(keys, keys[1:], strict=False))  # type: ignore[arg-type]
    assert core.endings.events.listening == 0


def test_the_end_is_told_once_it_is_durable(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    journal, core = make_journaled_core([worker], loop=loop)
    job = core.submit()
    core.turn()

    async def listen() -> list[JobEvent | None]:
        listener = core.endings.events.listen(job)
        seen = [await next_event(listener)]
        core.say(worker, results("echo", job.id))
        assert await nothing_within(listener)  # ended, not yet committed: no end shown
        journal.commit(core.endings)
        seen += [await next_event(listener), await next_event(listener)]
        return seen

    first, end, closed = run(loop, listen())
    assert first is not None and first.name == "processing"
    assert end is not None and end.name == "completed" and end.data["result"] == job.id
    assert closed is None


def test_last_event_id_resumes_after_what_the_client_saw(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    core = make_core([worker], [{**ECHO, "max_batch_size": 1}], loop=loop)
    jobs = [core.submit(inputs=n) for n in range(3)]
    core.turn()
    waiting = jobs[2]

    async def resume() -> None:
        events = core.endings.events
        same = events.listen(waiting, "0.0.0")  # saw it queued at position 0: nothing new
        assert await nothing_within(same)
        older = events.listen(waiting, "0.0.4")  # saw it further back: told where it is now
        event = await next_event(older)
        assert event is not None and event.data["queue_position"] == 0
        garbage = events.listen(waiting, "not-an-id")
        event = await next_event(garbage)
        assert event is not None and event.id == "0.0.0"
        core.say(worker, results("echo", jobs[0].id))  # waiting goes to the worker
        for listener in (same, older, garbage):
            event = await next_event(listener)
            assert event is not None and event.name == "processing"
        core.say(worker, results("echo", jobs[1].id, waiting.id))
        for listener in (same, older, garbage):
            event = await next_event(listener)
            assert event is not None and event.name == "completed"
            assert await next_event(listener) is None
        saw_the_end = events.listen(waiting, "1.3.0")
        assert saw_the_end.closed and await next_event(saw_the_end) is None
        missed_the_end = events.listen(waiting, "0.1.0")
        event = await next_event(missed_the_end)
        assert event is not None and event.name == "completed" and event.final

    run(loop, resume())


def test_progress_of_a_split_job_and_a_pipeline_stage(loop: asyncio.AbstractEventLoop) -> None:
    worker = make_worker()
    core = make_core([worker], loop=loop)
    job = core.submit()
    core.turn()

    async def listen() -> list[JobEvent | None]:
        listener = core.endings.events.listen(job)
        seen = [await next_event(listener)]
        core.say(worker, m.JobResults("echo", 2, 0.01, [], [m.JobProgress(job.id, 2, 5)]))
        seen.append(await next_event(listener))
        core.say(worker, m.JobResults("echo", 2, 0.01, [], [m.JobProgress(job.id, 2, 5)]))  # no news
        assert await nothing_within(listener)
        core.endings.events.progress(job, 3, 5, stage="postprocess")  # the hook a pipeline calls
        seen.append(await next_event(listener))
        return seen

    processing, items, stage = run(loop, listen())
    assert processing is not None and processing.name == "processing"
    assert (
        items is not None and items.name == "progress" and (items.data["done"], items.data["total"]) == (2, 5)
    )
    assert stage is not None and stage.data["stage"] == "postprocess" and stage.id == "0.2.3"


def test_nobody_listening_costs_nothing_and_shutdown_ends_every_stream(
    loop: asyncio.AbstractEventLoop,
) -> None:
    worker = make_worker()
    core = make_core([worker], loop=loop)
    events = core.endings.events
    job = core.submit()
    core.turn()
    core.say(worker, results("echo", job.id))
    events.progress(job, 1, 2)
    assert events.listening == 0 and not events._soon and events._later is None

    queued = core.submit()

    async def shutdown() -> list[JobEvent | None]:
        listener = events.listen(queued)
        gone = events.listen(queued)
        events.forget(gone)
        assert events.listening == 1
        first = await next_event(listener)
        events.close_all()
        late = events.listen(queued)  # after the shutdown: told so at once
        return [first, await next_event(listener), await next_event(listener), await next_event(late)]

    first, shutdown_event, closed, late = run(loop, shutdown())
    assert first is not None and first.name in ("queued", "processing")
    assert shutdown_event is not None and shutdown_event.name == "shutdown" and shutdown_event.id is None
    assert closed is None
    assert late is not None and late.name in ("queued", "processing")
    assert events.listening == 0


def test_a_pipeline_job_tells_its_stages(make_scheduler: Callable[..., Scheduler]) -> None:
    """The pipelines' hook (`Pipelines.stage_started`): a `progress` event per stage, in order, after
    the job's `processing`, then its end."""
    settings = Settings(
        journal_path="",
        models=[ModelConfig(name="sleep", adapter="sleep"), ModelConfig(name="echo", adapter="echo")],
        pipelines=[PipelineConfig(name="slow-echo", stages=["sleep", "echo"])],
    )

    async def scenario() -> list[JobEvent]:
        async with make_scheduler(settings, scheduler_type="async") as scheduler:
            await scheduler.wait_ready(30)
            job_id = await scheduler.schedule_job(JobRequest(pipeline="slow-echo", inputs={"ms": 300}))
            listener = scheduler.endings.events.listen(scheduler.get_job(job_id))
            seen: list[JobEvent] = []
            while (event := await next_event(listener)) is not None:
                seen.append(event)
            return seen

    seen = asyncio.run(scenario())
    names = [event.name for event in seen]
    assert names[-4:] == ["processing", "progress", "progress", "completed"], names
    stages = [
        (event.data["done"], event.data["total"], event.data["stage"])
        for event in seen
        if event.name == "progress"
    ]
    assert stages == [(0, 2, "sleep"), (1, 2, "echo")]
    assert seen[-1].data["result"] == {"slept_ms": 300.0}
