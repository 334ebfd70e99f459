"""Inputs a front validates (`BaseAdapter.validate_in_fronts`): the front runs the model's adapter
`validate` on its own copy of the adapter and refuses bad inputs as the main process does; the main
process takes validated inputs as the front encoded them (`msgspec.Raw`, sent to the worker as they
came) only for the adapter object the front was configured with, and decodes and validates any
other. Over a real scheduler with a real worker process; the front's side in its own app object."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest

from scheduler import Scheduler
from scheduler.errors import InvalidInputError
from scheduler.http.answers import error_answer
from scheduler.http.fronts import protocol as wire
from scheduler.http.fronts.front_app import FrontApp
from scheduler.http.fronts.link import FrontLink
from scheduler.http.fronts.serving import FrontRequests
from scheduler.http.fronts.supervision import FrontSet
from scheduler.pool.supervisor import ChildWatch
from scheduler.settings import ModelConfig
from tests.support.faults import fault_settings

MLP = "adapters.builtin:MLPAdapter"


def front_config(checks: list[wire.InputCheck]) -> wire.FrontConfig:
    return wire.FrontConfig(
        name="front0",
        parent_pid=0,
        token="",
        max_body_bytes=1 << 20,
        log_level="warning",
        log_format="text",
        access_log=False,
        heartbeat_interval_s=1.0,
        graceful_close_s=1,
        checks=checks,
    )


def test_a_front_validates_with_its_copy_of_the_adapter_and_refuses_as_the_main_process_does() -> None:
    app = FrontApp(
        front_config([wire.InputCheck("mlp", MLP, {}), wire.InputCheck("broken", "adapters.nowhere:X", {})]),
        lambda message: None,
    )
    assert set(app.validators) == {"mlp"}  # an adapter the front cannot build: the main process checks
    assert app.check("mlp", [0.5] * 256) is True
    assert app.check("echo", {"anything": 1}) is False  # not configured here: the main process checks
    with pytest.raises(InvalidInputError) as refused:
        app.check("mlp", [0.5] * 255)
    with pytest.raises(ValueError) as by_the_adapter:
        app.validators["mlp"]([0.5] * 255)
    main_answer = error_answer(InvalidInputError(str(by_the_adapter.value)))  # as `ModelRegistry.validate`
    front_answer = error_answer(refused.value)
    assert (front_answer.status_code, bytes(front_answer.body)) == (422, bytes(main_answer.body))


def test_the_main_process_keeps_validated_inputs_as_msgpack_only_for_the_adapter_the_front_has(
    tmp_path: Path,
) -> None:
    settings = fault_settings(
        journal_path=str(tmp_path / "journal.db"),
        models=[ModelConfig(name="echo", adapter="echo"), ModelConfig(name="mlp", adapter="mlp")],
    )

    async def scenario() -> None:
        async with Scheduler(settings) as scheduler:
            await scheduler.wait_ready(60)
            loop = asyncio.get_running_loop()
            requests = FrontRequests(scheduler, app=None, server=("127.0.0.1", 0))  # type: ignore[arg-type]
            fronts = FrontSet(settings, 1, listener=None, requests=requests)  # type: ignore[arg-type]
            link = FrontLink(ChildWatch("front0"), loop, scheduler.endings)
            checks = fronts.input_checks(link)
            assert {check.model: check.adapter for check in checks} == {
                "echo": "adapters.builtin:EchoAdapter",
                "mlp": MLP,
            }

            def sent(model: str, inputs: Any, checked: bool = True, **fields: Any) -> wire.FrontJob:
                encoded = wire.encode(wire.FrontJob(model=model, inputs=inputs, checked=checked, **fields))
                return msgspec.msgpack.decode(encoded, type=wire.FrontJob)  # as the main process reads it

            job, validated = requests.request_of(link, sent("echo", {"n": 1}))
            assert validated and isinstance(job.inputs, msgspec.Raw)
            assert msgspec.msgpack.decode(job.inputs) == {"n": 1}
            outcomes: asyncio.Queue[tuple[str | None, BaseException | None]] = asyncio.Queue()
            scheduler.submissions.schedule_then(
                job, lambda *outcome: outcomes.put_nowait(outcome), waited=True, validated=True
            )
            job_id, failure = await asyncio.wait_for(outcomes.get(), 30)
            assert failure is None and job_id is not None
            view = await scheduler.wait_for(job_id, 30)
            assert (view["status"], view["result"]) == ("completed", {"n": 1})  # through the worker intact

            for unvalidated in (
                sent("echo", {"n": 2}, checked=False),  # the front did not validate it
                sent("echo", {"n": 2}, callback_url="http://127.0.0.1:9/hook"),  # goes through `schedule`
            ):
                job, validated = requests.request_of(link, unvalidated)
                assert not validated and job.inputs == {"n": 2}

            scheduler.register_model(ModelConfig(name="mlp", adapter="mlp"))  # a new adapter object
            job, validated = requests.request_of(link, sent("mlp", [0.5] * 255))
            assert not validated and job.inputs == [0.5] * 255
            with pytest.raises(InvalidInputError):  # validated by the main process, as before the fronts
                scheduler.submissions.schedule_then(job, lambda *_: None, waited=True, validated=validated)

    asyncio.run(scenario())
