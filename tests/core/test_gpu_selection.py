"""GPU selection: (NVML inventory, inherited CUDA_VISIBLE_DEVICES, `gpus`) -> the cards used and the
UUID each worker is pinned with (pure), and a worker process's environment on simulated cards."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psutil
import pytest

from scheduler import Scheduler
from scheduler.core.cards import GpuInfo, simulated_uuid
from scheduler.core.devices import discover_gpus
from scheduler.core.gpu_selection import select_cards
from scheduler.errors import ConfigError
from scheduler.settings import ModelConfig, Settings, load_settings

GIB = 1024**3


def card(nvml_index: int, name: str, uuid: str, gpu_uuid: str | None = None) -> GpuInfo:
    return GpuInfo(
        index=nvml_index,
        name=name,
        total_bytes=24 * GIB,
        uuid=uuid,
        gpu_uuid=gpu_uuid or uuid,
        nvml_index=nvml_index,
    )


# NVML's order (PCI bus order): an A100 in MIG mode (two instances), an L4, another L4.
A100 = "GPU-aaaaaaaa-0000-0000-0000-000000000000"
MIG_1 = "MIG-11111111-0000-0000-0000-000000000000"
MIG_2 = "MIG-22222222-0000-0000-0000-000000000000"
L4_A = "GPU-bbbbbbbb-0000-0000-0000-000000000000"
L4_B = "GPU-cccccccc-0000-0000-0000-000000000000"
INVENTORY = [
    card(0, "A100 MIG 3g.40gb", MIG_1, A100),
    card(0, "A100 MIG 3g.40gb", MIG_2, A100),
    card(1, "L4", L4_A),
    card(2, "L4", L4_B),
]


def pins(visible: str | None, gpus: list[int | str] | None = None, order: str | None = None) -> list[str]:
    return [chosen.uuid for chosen in select_cards(INVENTORY, visible, order, gpus or []).cards]


def test_without_cuda_visible_devices_or_gpus_every_card_is_used_each_pinned_by_uuid() -> None:
    assert pins(None) == [MIG_1, MIG_2, L4_A, L4_B]


def test_an_inherited_cuda_visible_devices_is_the_set_of_cards_the_daemon_may_use() -> None:
    assert pins("2,1") == [L4_B, L4_A]  # indices in PCI bus order; their order kept
    assert pins("0") == [MIG_1, MIG_2]  # a GPU in MIG mode: all its instances
    assert pins(L4_B) == [L4_B]
    assert pins("GPU-bbbb") == [L4_A]  # a unique prefix, as CUDA takes it
    assert pins(MIG_2) == [MIG_2]
    assert pins(f"{MIG_2}, {L4_A}") == [MIG_2, L4_A]
    assert pins("") == []  # CUDA: an empty value hides every card
    assert pins("1,7,2") == [L4_A]  # CUDA: an entry naming no card hides itself and the rest
    assert pins("-1") == []
    assert pins("GPU-") == []  # ambiguous prefix: names no one card


def test_notes_say_what_was_left_out_and_when_indices_may_not_mean_what_cuda_means() -> None:
    left_out = select_cards(INVENTORY, "1,7,2", None, []).notes
    assert any("'7' names no card here" in note for note in left_out)
    mixed = select_cards(INVENTORY, "1", None, []).notes
    assert any("PCI bus order" in note and "UUID" in note for note in mixed)
    assert not select_cards(INVENTORY, "1", "PCI_BUS_ID", []).notes  # CUDA uses PCI order too then
    assert not select_cards(INVENTORY, L4_A, None, []).notes  # a UUID is never ambiguous
    assert select_cards(INVENTORY, "", None, []).notes == ["CUDA_VISIBLE_DEVICES is empty: no GPU is used"]


def test_the_gpus_setting_picks_among_the_allowed_cards_by_index_or_uuid() -> None:
    assert pins(None, [2, 3]) == [L4_A, L4_B]
    assert pins(None, ["3", L4_A]) == [L4_B, L4_A]
    assert pins(None, [A100]) == [MIG_1, MIG_2]  # a GPU's UUID names its MIG instances
    assert pins(None, [MIG_2]) == [MIG_2]
    # Indices count the allowed cards, as CUDA numbers them in a process that inherited the variable.
    assert pins("2,1", [0]) == [L4_B]
    assert pins("2,1", [L4_A, L4_A]) == [L4_A]  # named twice: used once


def test_a_gpus_entry_that_names_no_allowed_card_is_a_one_line_config_error() -> None:
    with pytest.raises(
        ConfigError, match=r"gpus: index 2 names no card: the cards CUDA_VISIBLE_DEVICES allows"
    ):
        pins("2,1", [2])
    with pytest.raises(
        ConfigError, match="gpus: 'GPU-cccc' names no card among the cards CUDA_VISIBLE_DEVICES"
    ):
        pins("1", ["GPU-cccc"])
    with pytest.raises(ConfigError, match=r"names no card among the cards found: 0: MIG-1111.*3: GPU-cccc"):
        pins(None, ["GPU-x"])


def test_discovery_numbers_the_chosen_cards_from_0_and_simulated_cards_have_fixed_fake_uuids() -> None:
    cards = discover_gpus({"MODELSCHED_SIMULATED_GPUS": "3x24GiB", "CUDA_VISIBLE_DEVICES": "2,0"})
    assert [(c.index, c.nvml_index, c.uuid) for c in cards] == [
        (0, 2, simulated_uuid(2)),
        (1, 0, simulated_uuid(0)),
    ]
    assert all(c.uuid.startswith("GPU-") for c in cards) and simulated_uuid(0) != simulated_uuid(1)
    chosen = discover_gpus({"MODELSCHED_SIMULATED_GPUS": "3x24GiB"}, [simulated_uuid(1)])
    assert [c.uuid for c in chosen] == [simulated_uuid(1)]
    assert discover_gpus({"MODELSCHED_SIMULATED_GPUS": "2x24GiB", "CUDA_VISIBLE_DEVICES": ""}) == []


def test_the_gpus_setting_reads_from_toml_and_the_environment() -> None:
    assert load_settings("dev", environ={"MODELSCHED_GPUS": "1, GPU-abc"}).gpus == ["1", "GPU-abc"]
    assert load_settings("dev", environ={}, overrides={"gpus": [0, "GPU-x"]}).gpus == [0, "GPU-x"]


def test_a_worker_is_pinned_by_its_cards_uuid_in_pci_bus_order(
    make_scheduler: Callable[..., Scheduler],
) -> None:
    """Three simulated cards, the daemon allowed cards 2 and 1 (in that order) by an inherited
    CUDA_VISIBLE_DEVICES, `gpus` choosing the second of them: one card, the one with nvidia-smi
    index 1, whose worker has its UUID in its environment."""

    async def scenario() -> None:
        settings = Settings(
            journal_path="",
            cpu_workers=0,
            gpus=[1],
            models=[
                ModelConfig(name="environment", adapter="tests.support.core_adapters:EnvironmentAdapter")
            ],
        )
        environ = {"MODELSCHED_SIMULATED_GPUS": "3x24GiB", "CUDA_VISIBLE_DEVICES": "2,1"}
        async with make_scheduler(settings, environ=environ) as scheduler:
            await scheduler.wait_ready(60)
            status = scheduler.system_status()
            assert [(g["index"], g["nvml_index"], g["uuid"]) for g in status["gpu"]] == [
                (0, 1, simulated_uuid(1))
            ]
            (worker,) = status["workers"]
            assert worker["worker_id"] == "gpu0-w0" and worker["cuda_visible_devices"] == simulated_uuid(1)
            environment = psutil.Process(worker["pid"]).environ()
            assert environment["CUDA_VISIBLE_DEVICES"] == simulated_uuid(1)
            assert environment["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
            result = await scheduler.infer("environment", "what do you see", timeout=60)
            assert result == {"CUDA_VISIBLE_DEVICES": simulated_uuid(1), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}

    asyncio.run(scenario())
