"""Knobs that used to be dead, wired: the batch policy per model (`adaptive` runs what waits at once;
`fixed` waits up to `max_delay_ms` for a full batch), and `reduce_vram_requirements`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from scheduler import JobRequest, Scheduler
from scheduler.core.models import resolve_spec
from scheduler.errors import ConfigError
from scheduler.settings import ModelConfig, Settings, load_settings
from tests.support.polling import until


def test_the_batch_policy_comes_from_the_config_else_the_adapter_and_is_checked() -> None:
    spec, _ = resolve_spec({"name": "e", "adapter": "echo"})
    assert spec.batch_policy == "adaptive"
    spec, _ = resolve_spec({"name": "e", "adapter": "echo", "batch_policy": "fixed", "max_delay_ms": 50})
    assert (spec.batch_policy, spec.max_delay_ms) == ("fixed", 50.0)
    with pytest.raises(ConfigError, match="models.e.batch_policy: must be adaptive or fixed"):
        resolve_spec({"name": "e", "adapter": "echo", "batch_policy": "greedy"})


def test_reduce_vram_requirements_halves_the_ledger_size_from_the_setting_or_the_environment() -> None:
    models = [ModelConfig(name="big", adapter="echo", device="gpu", vram_mb=1000)]
    full = Scheduler(Settings(journal_path="", models=models))
    half = Scheduler(Settings(journal_path="", models=models, reduce_vram_requirements=True))
    assert full.registry.get("big").spec.vram_mb == 1000 and half.registry.get("big").spec.vram_mb == 500
    from_env = load_settings("dev", environ={"MODELSCHED_REDUCE_VRAM_REQUIREMENTS": "1"})
    assert from_env.reduce_vram_requirements is True


@pytest.mark.parametrize("policy, first_batch", [("adaptive", 1), ("fixed", 4)])
def test_fixed_waits_for_a_full_batch_where_adaptive_runs_the_first_job_at_once(
    policy: str, first_batch: int, make_scheduler: Callable[..., Scheduler]
) -> None:
    """The recording model answers each job with the size of the batch it ran in. One job is sent,
    three follow: adaptive runs the first alone; fixed (4 items, up to 10 s) waits and runs all four."""
    recording = ModelConfig(
        name="recording",
        adapter="tests.support.core_adapters:RecordingAdapter",
        max_batch_size=4,
        batch_policy=policy,
        max_delay_ms=10_000,
    )

    async def scenario() -> list[int]:
        scheduler = make_scheduler(Settings(journal_path="", cpu_workers=1, models=[recording]))
        async with scheduler:
            await scheduler.wait_ready(60)
            first = scheduler.submit(JobRequest(model="recording", inputs=1))
            await until(lambda: scheduler.job_status(first)["status"] != "queued", message="first sent")
            rest = [scheduler.submit(JobRequest(model="recording", inputs=n)) for n in (2, 3, 4)]
            return [(await scheduler.wait_for(job_id, 60))["result"] for job_id in [first, *rest]]

    sizes = asyncio.run(scenario())
    assert sizes[0] == first_batch
    if policy == "fixed":
        assert sizes == [4, 4, 4, 4]
    else:
        assert all(size <= 3 for size in sizes[1:])
