"""A batch submission resolves each distinct `callback_url` once, not once per item (1,000 items
naming one receiver would otherwise make 1,000 DNS lookups on the default executor)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from scheduler import JobRequest, Scheduler
from scheduler.settings import ModelConfig, Settings


def test_a_batch_checks_each_callback_url_once(
    make_scheduler: Callable[..., Scheduler], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(journal_path="", models=[ModelConfig(name="echo", adapter="echo")])

    async def scenario() -> None:
        async with make_scheduler(settings) as scheduler:
            checked: list[str] = []

            async def precheck(url: str) -> None:
                checked.append(url)
                await asyncio.sleep(0)

            monkeypatch.setattr(scheduler.submissions.webhooks, "precheck", precheck)
            urls = ["http://hooks.example/a", "http://hooks.example/b"]
            requests = [JobRequest(model="echo", inputs=n, callback_url=urls[n % 2]) for n in range(100)]
            outcomes = await scheduler.schedule_jobs(requests)
            assert all(isinstance(outcome, str) for outcome in outcomes)
            assert sorted(checked) == urls

    asyncio.run(scenario())
