"""The core with real worker processes: CPU workers, simulated GPUs, batching, isolation, clean stop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import psutil
import pytest

from adapters.builtin import build_mlp
from scheduler import (
    JobRequest,
    NoFitError,
    Scheduler,
    SchedulerFactory,
    SchedulerType,
    create_development_scheduler,
)
from scheduler.errors import InvalidInputError, ModelNotFoundError, QueueFullError
from scheduler.settings import ModelConfig, Settings
from tests.support.polling import until, until_sync

CPU_ONLY = {"MODELSCHED_FORCE_CPU": "1"}
MLP_INPUT = [((i * 37) % 101) / 101.0 - 0.5 for i in range(256)]


def settings(**overrides) -> Settings:
    base = dict(
        journal_path="",
        cpu_workers=1,
        models=[
            ModelConfig(name="echo", adapter="echo"),
            ModelConfig(name="sleep", adapter="sleep"),
            ModelConfig(name="mlp", adapter="mlp"),
        ],
    )
    base.update(overrides)
    return Settings(**base)


def children() -> set[int]:
    """Child processes of this test process, less multiprocessing's own resource tracker: `spawn`
    starts that helper once per interpreter and it ends with the interpreter, not with a scheduler."""
    return {
        child.pid
        for child in psutil.Process().children(recursive=True)
        if "multiprocessing.resource_tracker" not in " ".join(_cmdline(child))
    }


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def test_jobs_complete_on_cpu_workers_and_models_load_lazily_and_stop_leaves_no_child(
    make_scheduler: Callable[..., Scheduler],
) -> None:
    before = children()

    async def scenario() -> None:
        scheduler = make_scheduler(settings(cpu_workers=2))
        async with scheduler:
            await scheduler.wait_ready(60)
            status = scheduler.system_status()
            assert [w["device"] for w in status["workers"]] == ["cpu", "cpu"]
            assert all(w["alive"] and w["loaded_models"] == [] for w in status["workers"])
            assert status["gpu"] == []
            # A heartbeat or two later, still nothing loaded: loading waits for the first job.
            first_beats = {w["worker_id"]: w["last_heartbeat"] for w in status["workers"]}
            await until(
                lambda: all(
                    w["last_heartbeat"] != first_beats[w["worker_id"]]
                    for w in scheduler.system_status()["workers"]
                ),
                message="a fresh heartbeat",
            )
            assert all(w["loaded_models"] == [] for w in scheduler.system_status()["workers"])

            job_id = await scheduler.schedule_job(
                JobRequest(feature="echo", inputs={"text": "hello", "n": 1})
            )
            done = await scheduler.wait_for(job_id, 30)
            assert done["status"] == "completed" and done["result"] == {"text": "hello", "n": 1}
            assert done["attempts"] == 1 and done["device"] == "cpu" and done["worker"].startswith("cpu-w")
            assert done["created_at"] <= done["started_at"] <= done["ended_at"]
            loaded = {m["model"] for w in scheduler.system_status()["workers"] for m in w["loaded_models"]}
            assert loaded == {"echo"}
            models = {m["name"]: m for m in scheduler.system_status()["models"]}
            assert models["mlp"]["loaded_on"] == [] and models["echo"]["loaded_on"]
            assert scheduler.system_status()["queue"]["completed"] == 1
            assert len(children() - before) >= 2

    asyncio.run(scenario())
    until_sync(lambda: not (children() - before), timeout=10, message="no child process after stop()")


def test_each_simulated_gpu_worker_sees_only_its_card(make_scheduler: Callable[..., Scheduler]) -> None:
    async def scenario() -> None:
        scheduler = make_scheduler(
            settings(max_workers_per_gpu=1), environ={"MODELSCHED_SIMULATED_GPUS": "2x24GiB"}
        )
        async with scheduler:
            await scheduler.wait_ready(60)
            status = scheduler.system_status()
            assert [(g["index"], g["total_mb"], g["simulated"]) for g in status["gpu"]] == [
                (0, 24576.0, True),
                (1, 24576.0, True),
            ]
            gpu_workers = {w["worker_id"]: w for w in status["workers"] if w["gpu_index"] is not None}
            assert set(gpu_workers) == {"gpu0-w0", "gpu1-w0"}
            uuids = {g["index"]: g["uuid"] for g in status["gpu"]}
            assert all(uuid.startswith("GPU-") for uuid in uuids.values()) and len(set(uuids.values())) == 2
            for worker in gpu_workers.values():
                expected = uuids[worker["gpu_index"]]  # pinned by its card's UUID
                assert worker["cuda_visible_devices"] == expected  # what the worker saw at start
                environment = psutil.Process(worker["pid"]).environ()
                assert environment["CUDA_VISIBLE_DEVICES"] == expected
                assert environment["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
            # mlp is an "auto" model: with GPUs present it runs on a (simulated) GPU worker.
            job_id = await scheduler.schedule_job(JobRequest(feature="mlp", inputs=MLP_INPUT))
            done = await scheduler.wait_for(job_id, 60)
            assert done["status"] == "completed" and done["device"].startswith("sim-gpu")
            ledger = {g["index"]: g["ledger_used_mb"] for g in scheduler.system_status()["gpu"]}
            assert sorted(ledger.values()) == [0.0, 64.0]

    asyncio.run(scenario())


def test_a_model_that_fits_no_card_is_refused_at_submission_with_no_fit_error(
    make_scheduler: Callable[..., Scheduler],
) -> None:
    async def scenario() -> None:
        big = ModelConfig(name="huge", adapter="echo", device="gpu", vram_mb=30 * 1024)
        fits = ModelConfig(name="fits", adapter="echo", device="gpu", vram_mb=20 * 1024)
        scheduler = make_scheduler(
            settings(models=[big, fits]), environ={"MODELSCHED_SIMULATED_GPUS": "2x24GiB"}
        )
        async with scheduler:
            await scheduler.wait_ready(60)
            with pytest.raises(
                NoFitError, match="'huge' cannot run here: No GPU has enough memory for this model"
            ):
                await scheduler.schedule_job(JobRequest(feature="huge", inputs="x"))
            with pytest.raises(NoFitError, match="No GPU has enough memory"):
                await scheduler.load_model("huge")
            assert scheduler.table.jobs == {}  # nothing was queued
            done = await scheduler.wait_for(
                await scheduler.schedule_job(JobRequest(feature="fits", inputs="y")), 30
            )
            assert done["status"] == "completed" and done["device"].startswith("sim-gpu")
            # A model registered later that fits nowhere is refused as well.
            scheduler.register_model(
                {"name": "later", "adapter": "echo", "device": "gpu", "vram_mb": 25 * 1024}
            )
            with pytest.raises(NoFitError):
                scheduler.submit(JobRequest(model="later", inputs=1))

    asyncio.run(scenario())


def test_64_concurrent_mlp_jobs_run_in_batches_equal_to_one_at_a_time(
    make_scheduler: Callable[..., Scheduler],
) -> None:
    import torch

    inputs = [[((i * 31 + j * 7) % 97) / 97.0 - 0.5 for j in range(256)] for i in range(64)]
    model = build_mlp()
    with torch.inference_mode():
        expected = [model(torch.tensor([row], dtype=torch.float32))[0].tolist() for row in inputs]

    async def scenario() -> None:
        batch_sizes: list[int] = []
        scheduler = make_scheduler(settings())
        scheduler.on_batch.append(lambda worker, model_name, size, run_s: batch_sizes.append(size))
        async with scheduler:
            await scheduler.wait_ready(60)
            job_ids = await asyncio.gather(
                *(scheduler.schedule_job(JobRequest(feature="mlp", inputs=row)) for row in inputs)
            )
            results = await asyncio.gather(*(scheduler.wait_for(job_id, 60) for job_id in job_ids))
        assert [r["status"] for r in results] == ["completed"] * 64
        for result, want in zip(results, expected, strict=True):
            assert result["result"] == pytest.approx(want, abs=1e-5)
        assert sum(batch_sizes) == 64
        assert max(batch_sizes) > 1, batch_sizes

    asyncio.run(scenario())


def test_a_failing_input_fails_alone(make_scheduler: Callable[..., Scheduler]) -> None:
    async def scenario() -> None:
        picky = ModelConfig(name="picky", adapter="tests.support.core_adapters:PickyAdapter")
        scheduler = make_scheduler(settings(models=[picky, ModelConfig(name="echo", adapter="echo")]))
        async with scheduler:
            await scheduler.wait_ready(60)
            values = [1, 2, -3, 4, 5]
            job_ids = [await scheduler.schedule_job(JobRequest(feature="picky", inputs=v)) for v in values]
            results = [await scheduler.wait_for(job_id, 30) for job_id in job_ids]
            assert [r["status"] for r in results] == [
                "completed",
                "completed",
                "error",
                "completed",
                "completed",
            ]
            assert [r["result"] for r in results if r["status"] == "completed"] == [2, 4, 8, 10]
            assert "negative input" in results[2]["error"]
            # the echo model's per-item error: an ItemError in the output list
            echo_ids = [
                await scheduler.schedule_job(JobRequest(feature="echo", inputs=v))
                for v in ({"a": 1}, {"fail": "broken item"}, {"b": 2})
            ]
            echo = [await scheduler.wait_for(job_id, 30) for job_id in echo_ids]
            assert [r["status"] for r in echo] == ["completed", "error", "completed"]
            assert echo[1]["error"] == "ItemError: broken item"

    asyncio.run(scenario())


def test_bad_requests_are_refused_at_submission(make_scheduler: Callable[..., Scheduler]) -> None:
    async def scenario() -> None:
        scheduler = make_scheduler(settings(max_queue=3))
        async with scheduler:
            await scheduler.wait_ready(60)
            with pytest.raises(ModelNotFoundError, match="unknown model 'nope'"):
                await scheduler.schedule_job(JobRequest(feature="nope", inputs=1))
            with pytest.raises(InvalidInputError, match="256"):
                await scheduler.schedule_job(JobRequest(feature="mlp", inputs=[1.0, 2.0]))
            with pytest.raises(InvalidInputError, match="priority"):
                await scheduler.schedule_job(JobRequest(feature="echo", inputs=1, priority="urgent"))
            with pytest.raises(InvalidInputError, match="timeout_s"):
                await scheduler.schedule_job(JobRequest(feature="echo", inputs=1, timeout_s=-1))
            # 2 sleep jobs fill the worker's pipeline, then 3 wait in the queue: the queue is full.
            blockers = [
                await scheduler.schedule_job(JobRequest(feature="sleep", inputs={"ms": 300}))
                for _ in range(2)
            ]
            await until(lambda: scheduler.system_status()["queue"]["processing"] == 2)
            blockers += [
                await scheduler.schedule_job(JobRequest(feature="sleep", inputs={"ms": 300}))
                for _ in range(3)
            ]
            assert scheduler.system_status()["queue"]["queued"] == 3
            with pytest.raises(QueueFullError):
                await scheduler.schedule_job(JobRequest(feature="echo", inputs=1))
            for job_id in blockers:
                await scheduler.cancel_job(job_id)

    asyncio.run(scenario())


def test_priorities_high_first_and_fifo_within_one(make_scheduler: Callable[..., Scheduler]) -> None:
    async def scenario() -> None:
        scheduler = make_scheduler(settings())
        async with scheduler:
            await scheduler.wait_ready(60)
            # Keep the only worker busy (it holds two sleep jobs: one running, one in its pipeline).
            blockers = [
                await scheduler.schedule_job(JobRequest(feature="sleep", inputs={"ms": 400}))
                for _ in range(2)
            ]
            await until(lambda: scheduler.system_status()["queue"]["processing"] == 2)
            order = [("low", 1), ("normal", 1), ("high", 1), ("normal", 2), ("high", 2), ("low", 2)]
            ids = {}
            for priority, n in order:
                ids[(priority, n)] = await scheduler.schedule_job(
                    JobRequest(feature="sleep", inputs={"ms": 1}, priority=priority)
                )
            results = {key: await scheduler.wait_for(job_id, 30) for key, job_id in ids.items()}
            for job_id in blockers:
                await scheduler.wait_for(job_id, 30)
        started = sorted(results, key=lambda key: results[key]["started_at"])
        assert started == [("high", 1), ("high", 2), ("normal", 1), ("normal", 2), ("low", 1), ("low", 2)]

    asyncio.run(scenario())


def test_wait_for_returns_the_current_status_when_time_is_up_and_cancel_works(
    make_scheduler: Callable[..., Scheduler],
) -> None:
    async def scenario() -> None:
        scheduler = make_scheduler(settings())
        async with scheduler:
            await scheduler.wait_ready(60)
            job_id = await scheduler.schedule_job(JobRequest(feature="sleep", inputs={"ms": 2000}))
            status = await scheduler.wait_for(job_id, 0.05)
            assert status["status"] in {"queued", "processing"}
            cancelled = await scheduler.cancel_job(job_id)
            assert cancelled["status"] == "cancelled"
            assert scheduler.job_status(job_id)["status"] == "cancelled"

    asyncio.run(scenario())


def test_register_model_at_run_time_and_the_async_type() -> None:
    async def scenario() -> None:
        scheduler = SchedulerFactory.create_scheduler(scheduler_type=SchedulerType.ASYNC, journal_path="")
        async with scheduler:
            await scheduler.wait_ready(30)
            assert all(w["pid"] == os.getpid() for w in scheduler.system_status()["workers"])
            scheduler.register_model(
                {"name": "recording", "adapter": "tests.support.core_adapters:RecordingAdapter"}
            )
            job_ids = [scheduler.submit(JobRequest(feature="recording", inputs=i)) for i in range(10)]
            results = [await scheduler.wait_for(job_id, 30) for job_id in job_ids]
            assert all(r["status"] == "completed" for r in results)
            mlp = await scheduler.schedule_job(JobRequest(feature="mlp", inputs=MLP_INPUT))
            assert (await scheduler.wait_for(mlp, 30))["status"] == "completed"

    asyncio.run(scenario())


def test_development_preset_with_a_model_subset() -> None:
    scheduler = create_development_scheduler(
        model_subset=["echo"], reduce_vram_requirements=True, journal_path=""
    )
    assert list(scheduler.registry.models) == ["echo"]
    with pytest.raises(ValueError, match="unknown models"):
        create_development_scheduler(model_subset=["nope"])


def test_many_items_in_one_job_are_batched_by_items_without_holding_up_small_jobs(
    make_scheduler: Callable[..., Scheduler],
) -> None:
    async def scenario() -> None:
        split = ModelConfig(name="split", adapter="tests.support.core_adapters:SplitAdapter")
        scheduler = make_scheduler(settings(models=[split]))
        batch_sizes: list[int] = []
        scheduler.on_batch.append(lambda worker, model_name, size, run_s: batch_sizes.append(size))
        async with scheduler:
            await scheduler.wait_ready(60)
            big = scheduler.submit(JobRequest(feature="split", inputs=list(range(40))))
            small = scheduler.submit(JobRequest(feature="split", inputs=[100, 101]))
            bad = scheduler.submit(JobRequest(feature="split", inputs=[1, "bad", 3]))
            big_done = await scheduler.wait_for(big, 30)
            small_done = await scheduler.wait_for(small, 30)
            bad_done = await scheduler.wait_for(bad, 30)
        assert big_done["status"] == "completed"
        assert big_done["result"]["doubled"] == [2 * i for i in range(40)]
        assert small_done["result"]["doubled"] == [200, 202]
        assert max(batch_sizes) == 8 and sum(batch_sizes) == 45
        # the small job ran before the large one's last batch: it did not wait behind all of it
        assert max(small_done["result"]["batches"]) < max(big_done["result"]["batches"])
        assert bad_done["status"] == "error" and "bad item" in bad_done["error"]

    asyncio.run(scenario())
