"""The cards as NVML (nvidia-ml-py) lists them: each GPU with its UUID and PCI bus id, and a GPU in
MIG mode as its MIG instances (`nvmlDeviceGetMigDeviceHandleByIndex`, each with its `MIG-…` UUID and
its own memory); their current use read back by UUID, so a figure always belongs to the card it
names."""

from __future__ import annotations

import logging
from typing import Any

from scheduler.core.cards import GpuInfo

log = logging.getLogger("modelsched.devices")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _init() -> Any:
    """pynvml, initialised; None without a driver or the library."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception as exc:  # no driver, no library: no GPU through NVML
        log.debug("NVML unavailable: %s", exc)
        return None


def nvml_gpus() -> list[GpuInfo]:
    """Every card NVML sees, in its order (PCI bus order); MIG instances in place of their GPU."""
    pynvml = _init()
    if pynvml is None:
        return []
    try:
        cards: list[GpuInfo] = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpu_uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
            try:
                pci_bus_id = _text(pynvml.nvmlDeviceGetPciInfo(handle).busId)
            except Exception:
                pci_bus_id = ""
            migs = _mig_handles(pynvml, handle)
            for mig in migs or [handle]:
                cards.append(_card(pynvml, mig, len(cards), index, gpu_uuid, pci_bus_id, mig is not handle))
        return cards
    except Exception as exc:
        log.warning("NVML failed while listing GPUs: %s", exc)
        return []


def _mig_handles(pynvml: Any, handle: Any) -> list[Any]:
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except Exception:  # not a MIG-capable card
        return []
    if current != pynvml.NVML_DEVICE_MIG_ENABLE:
        return []
    handles = []
    for slot in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            handles.append(pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot))
        except Exception:  # an empty slot
            continue
    return handles


def _card(
    pynvml: Any, handle: Any, index: int, nvml_index: int, gpu_uuid: str, pci_bus_id: str, is_mig: bool
) -> GpuInfo:
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    return GpuInfo(
        index=index,
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        total_bytes=int(memory.total),
        used_bytes=int(memory.used),
        free_bytes=int(memory.free),
        utilization_pct=_utilization(pynvml, handle),
        uuid=_text(pynvml.nvmlDeviceGetUUID(handle)) if is_mig else gpu_uuid,
        gpu_uuid=gpu_uuid,
        nvml_index=nvml_index,
        pci_bus_id=pci_bus_id,
    )


def _utilization(pynvml: Any, handle: Any) -> float | None:
    try:
        return float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:  # not reported for MIG instances
        return None


def nvml_usage(uuids: list[str]) -> dict[str, tuple[int, int, float | None]]:
    """(used, free, utilization) of each card now, by UUID; a card NVML cannot read is left out."""
    pynvml = _init()
    if pynvml is None:
        return {}
    usage: dict[str, tuple[int, int, float | None]] = {}
    for uuid in uuids:
        try:
            handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        except Exception as exc:
            log.debug("NVML cannot read %s: %s", uuid, exc)
            continue
        usage[uuid] = (int(memory.used), int(memory.free), _utilization(pynvml, handle))
    return usage
