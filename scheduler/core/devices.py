"""The GPU inventory: the cards found (NVML through nvidia-ml-py, torch as a fallback, simulated cards
for tests), narrowed to those the daemon may use (`scheduler.core.gpu_selection`: an inherited
`CUDA_VISIBLE_DEVICES`, the `gpus` setting), each with the UUID its workers are pinned with.

`MODELSCHED_FORCE_CPU=1` ignores GPUs; `MODELSCHED_FORCE_GPU=1` makes start-up fail when no card is
left; `MODELSCHED_SIMULATED_GPUS=2x24GiB` (or `1x80GiB,1x16GiB`) reports simulated cards whose
workers run on the CPU while the VRAM ledger behaves as on real ones.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import msgspec

from scheduler.core.cards import MIB, GpuInfo, parse_simulated, parse_size
from scheduler.core.gpu_selection import select_cards
from scheduler.core.nvml import nvml_gpus, nvml_usage
from scheduler.core.placement import GpuCapacity
from scheduler.errors import NoGpuError

__all__ = [
    "MIB",
    "GpuInfo",
    "Inventory",
    "NoGpuError",
    "discover_gpus",
    "nvml_gpus",
    "parse_simulated",
    "parse_size",
]

log = logging.getLogger("modelsched.devices")


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def discover_gpus(environ: Mapping[str, str] | None = None, gpus: Sequence[int | str] = ()) -> list[GpuInfo]:
    """The cards this daemon schedules onto, by the rules in the module docstring; a `gpus` entry
    that names no usable card is a ConfigError."""
    environ = os.environ if environ is None else environ
    simulated = environ.get("MODELSCHED_SIMULATED_GPUS", "").strip()
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if _flag(environ, "MODELSCHED_FORCE_CPU"):
        found: list[GpuInfo] = []
    elif simulated:
        found = parse_simulated(simulated)
    else:
        found = nvml_gpus()
        if not found:
            found = torch_gpus()
            visible = None  # torch lists the cards CUDA_VISIBLE_DEVICES left it
    selection = select_cards(found, visible, environ.get("CUDA_DEVICE_ORDER"), gpus)
    for note in selection.notes:
        log.warning("%s", note)
    cards = [msgspec.structs.replace(card, index=index) for index, card in enumerate(selection.cards)]
    if _flag(environ, "MODELSCHED_FORCE_GPU") and not cards:
        raise NoGpuError(
            "MODELSCHED_FORCE_GPU=1 but no GPU is visible (NVML and torch.cuda found none, or "
            "CUDA_VISIBLE_DEVICES and gpus left none); unset it to run on the CPU"
        )
    return cards


def torch_gpus() -> list[GpuInfo]:
    """The cards torch sees (when NVML cannot be read), with their UUIDs where torch gives them."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        cards = []
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            free, total = torch.cuda.mem_get_info(index)
            uuid = getattr(properties, "uuid", None)
            pin = f"GPU-{uuid}" if uuid is not None else str(index)
            cards.append(
                GpuInfo(
                    index=index,
                    name=properties.name,
                    total_bytes=int(total),
                    used_bytes=int(total - free),
                    free_bytes=int(free),
                    uuid=pin,
                    gpu_uuid=pin,
                )
            )
        return cards
    except Exception as exc:
        log.debug("torch sees no GPU: %s", exc)
        return []


class Inventory:
    """The cards this daemon schedules onto (found at start) and what placement may use of each.
    reserve_mb: per card, never given to models; gpus: the `gpus` setting."""

    def __init__(self, reserve_mb: int, gpus: Sequence[int | str] = ()) -> None:
        self.reserve_mb = reserve_mb
        self.wanted = list(gpus)
        self.gpus: list[GpuInfo] = []

    def discover(self, environ: Mapping[str, str]) -> list[GpuInfo]:
        found = discover_gpus(environ, self.wanted)
        said = [gpu.uuid for gpu in self.gpus]
        self.gpus = found
        if [gpu.uuid for gpu in found] == said:
            return found  # found again (the serve command's early check, then the start): said once
        for gpu in found:
            log.info(
                "GPU %d: %s %s (%.0f MiB)%s",
                gpu.index,
                gpu.name,
                gpu.uuid,
                gpu.total_bytes / MIB,
                "" if gpu.nvml_index is None else f", nvidia-smi index {gpu.nvml_index}",
            )
        return self.gpus

    @property
    def simulated(self) -> bool:
        return any(gpu.simulated for gpu in self.gpus)

    def capacities(self) -> list[GpuCapacity]:
        return [GpuCapacity(gpu.index, gpu.total_bytes / MIB, self.reserve_mb) for gpu in self.gpus]

    def pin_of(self, gpu_index: int) -> str | None:
        """What the workers of card `gpu_index` get as CUDA_VISIBLE_DEVICES: its UUID."""
        for gpu in self.gpus:
            if gpu.index == gpu_index:
                return gpu.uuid or None
        return None

    def is_real(self, gpu_index: int | None) -> bool:
        """A real card (its measured memory counts in the ledger), not the CPU nor a simulated card."""
        return any(gpu.index == gpu_index and not gpu.simulated for gpu in self.gpus)

    def name_of(self, gpu_index: int | None) -> str | None:
        """The card's name (what a cost rate may be given for); None for the CPU."""
        if gpu_index is None:
            return None
        for gpu in self.gpus:
            if gpu.index == gpu_index:
                return gpu.name
        return f"GPU {gpu_index}"

    def current(self) -> list[GpuInfo]:
        """The cards with their memory use and utilization now."""
        return refresh_usage(self.gpus)


def refresh_usage(cards: list[GpuInfo]) -> list[GpuInfo]:
    """Current memory use and utilization of real cards, read by UUID (simulated ones as they are)."""
    real = [card.uuid for card in cards if not card.simulated and card.uuid.startswith(("GPU-", "MIG-"))]
    if not real:
        return cards
    usage = nvml_usage(real)
    fresh = []
    for card in cards:
        now = usage.get(card.uuid)
        if now is None:
            fresh.append(card)
        else:
            used, free, utilization = now
            fresh.append(
                msgspec.structs.replace(card, used_bytes=used, free_bytes=free, utilization_pct=utilization)
            )
    return fresh
