"""On a machine with an NVIDIA GPU: `pytest -m gpu`. Deselected by default (see pyproject's addopts)
and skipped where torch sees no CUDA device."""

from __future__ import annotations

import asyncio

import pytest

from scheduler import JobRequest, Scheduler
from scheduler.core.devices import discover_gpus, nvml_gpus
from scheduler.settings import ModelConfig, Settings

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible"),
]

MLP_INPUT = [0.01 * i for i in range(256)]


def test_inventory_reads_real_cards_through_nvml() -> None:
    cards = discover_gpus({})
    assert len(cards) == torch.cuda.device_count()
    assert all(card.total_bytes > 0 and not card.simulated for card in cards)
    assert nvml_gpus(), "NVML (nvidia-ml-py) should see the cards torch sees"


def test_a_gpu_worker_runs_on_its_card_and_reports_cuda_memory() -> None:
    async def scenario() -> None:
        settings = Settings(journal_path="", models=[ModelConfig(name="mlp", adapter="mlp")])
        async with Scheduler(settings, environ={}) as scheduler:
            await scheduler.wait_ready(120)
            workers = scheduler.system_status()["workers"]
            gpu_workers = [w for w in workers if w["gpu_index"] is not None]
            uuids = {gpu["index"]: gpu["uuid"] for gpu in scheduler.system_status()["gpu"]}
            assert all(uuid.startswith(("GPU-", "MIG-")) for uuid in uuids.values())
            assert gpu_workers and all(
                w["cuda_visible_devices"] == uuids[w["gpu_index"]] for w in gpu_workers
            )
            job_ids = [
                await scheduler.schedule_job(JobRequest(feature="mlp", inputs=MLP_INPUT)) for _ in range(64)
            ]
            results = [await scheduler.wait_for(job_id, 120) for job_id in job_ids]
            assert all(r["status"] == "completed" and r["device"].startswith("cuda:") for r in results)
            status = scheduler.system_status()
            loaded = [m for w in status["workers"] for m in w["loaded_models"] if m["model"] == "mlp"]
            assert loaded and loaded[0]["measured_mb"] > 0  # the CUDA allocation delta of the weights
            assert any(gpu["used_mb"] > 0 for gpu in status["gpu"])

    asyncio.run(scenario())


def test_a_card_named_by_uuid_is_the_card_cuda_gives_the_worker() -> None:
    """NVML's UUID of the last card, inherited as CUDA_VISIBLE_DEVICES: the daemon uses that card
    alone, pins its worker with the UUID, and CUDA in a process so pinned sees that very card."""
    import os
    import subprocess
    import sys

    target = nvml_gpus()[-1]
    probe = "import torch; print(torch.cuda.device_count(), torch.cuda.get_device_properties(0).uuid)"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": target.uuid, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    seen = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    count, uuid = seen.stdout.split()
    assert count == "1" and target.uuid.endswith(uuid)

    async def scenario() -> None:
        settings = Settings(journal_path="", models=[ModelConfig(name="mlp", adapter="mlp")])
        async with Scheduler(settings, environ={"CUDA_VISIBLE_DEVICES": target.uuid}) as scheduler:
            await scheduler.wait_ready(120)
            status = scheduler.system_status()
            assert [(gpu["index"], gpu["uuid"]) for gpu in status["gpu"]] == [(0, target.uuid)]
            gpu_workers = [w for w in status["workers"] if w["gpu_index"] is not None]
            assert gpu_workers and all(w["cuda_visible_devices"] == target.uuid for w in gpu_workers)
            job_id = await scheduler.schedule_job(JobRequest(feature="mlp", inputs=MLP_INPUT))
            assert (await scheduler.wait_for(job_id, 120))["status"] == "completed"
            assert scheduler.system_status()["gpu"][0]["used_mb"] > 0  # read back by UUID

    asyncio.run(scenario())
