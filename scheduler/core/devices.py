"""The GPU inventory: NVML through nvidia-ml-py, torch as a fallback, simulated cards for tests.

`MODELSCHED_FORCE_CPU=1` ignores GPUs; `MODELSCHED_FORCE_GPU=1` makes start-up fail when there is
none; `MODELSCHED_SIMULATED_GPUS=2x24GiB` (or `1x80GiB,1x16GiB`) reports simulated cards whose
workers run on the CPU while the VRAM ledger behaves as on real ones.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import msgspec

from scheduler.core.placement import GpuCapacity
from scheduler.errors import NoGpuError

log = logging.getLogger("modelsched.devices")

MIB = 1024 * 1024
_UNITS = {"": 1, "b": 1, "kib": 1024, "kb": 1000, "mib": MIB, "mb": 1000**2, "gib": 1024**3, "gb": 1000**3}


class GpuInfo(msgspec.Struct, kw_only=True):
    index: int
    name: str
    total_bytes: int
    used_bytes: int = 0
    free_bytes: int = 0
    utilization_pct: float | None = None
    simulated: bool = False


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read a memory size from {text!r} (try 24GiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_simulated(spec: str) -> list[GpuInfo]:
    """`2x24GiB` or `1x80GiB,1x16GiB` -> simulated cards, indexed in order."""
    cards: list[GpuInfo] = []
    for part in filter(None, (piece.strip() for piece in spec.split(","))):
        count_text, sep, size_text = part.partition("x")
        if not sep or not count_text.strip().isdigit():
            raise ValueError(f"MODELSCHED_SIMULATED_GPUS: {part!r} is not COUNTxSIZE (e.g. 2x24GiB)")
        size = parse_size(size_text)
        for _ in range(int(count_text)):
            cards.append(
                GpuInfo(
                    index=len(cards),
                    name=f"Simulated GPU {size // MIB} MiB",
                    total_bytes=size,
                    free_bytes=size,
                    simulated=True,
                )
            )
    return cards


def _flag(environ: dict[str, str] | os._Environ[str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def discover_gpus(environ: dict[str, str] | os._Environ[str] | None = None) -> list[GpuInfo]:
    """The cards this daemon schedules onto, by the rules in the module docstring."""
    environ = os.environ if environ is None else environ
    simulated = environ.get("MODELSCHED_SIMULATED_GPUS", "").strip()
    if _flag(environ, "MODELSCHED_FORCE_CPU"):
        cards: list[GpuInfo] = []
    elif simulated:
        cards = parse_simulated(simulated)
    else:
        cards = nvml_gpus()
        if not cards:
            cards = torch_gpus()
    if _flag(environ, "MODELSCHED_FORCE_GPU") and not cards:
        raise NoGpuError(
            "MODELSCHED_FORCE_GPU=1 but no GPU is visible (NVML and torch.cuda found none); "
            "unset it to run on the CPU"
        )
    return cards


def nvml_gpus() -> list[GpuInfo]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no driver, no library: no GPU through NVML
        log.debug("NVML unavailable: %s", exc)
        return []
    try:
        return [_nvml_card(pynvml, index) for index in range(pynvml.nvmlDeviceGetCount())]
    except Exception as exc:
        log.warning("NVML failed while listing GPUs: %s", exc)
        return []


def _nvml_card(pynvml: Any, index: int) -> GpuInfo:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    name = pynvml.nvmlDeviceGetName(handle)
    try:
        utilization = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:
        utilization = None
    return GpuInfo(
        index=index,
        name=name.decode() if isinstance(name, bytes) else str(name),
        total_bytes=int(memory.total),
        used_bytes=int(memory.used),
        free_bytes=int(memory.free),
        utilization_pct=utilization,
    )


def torch_gpus() -> list[GpuInfo]:
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        cards = []
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            free, total = torch.cuda.mem_get_info(index)
            cards.append(
                GpuInfo(
                    index=index,
                    name=properties.name,
                    total_bytes=int(total),
                    used_bytes=int(total - free),
                    free_bytes=int(free),
                )
            )
        return cards
    except Exception as exc:
        log.debug("torch sees no GPU: %s", exc)
        return []


class Inventory:
    """The cards this daemon schedules onto (found at start) and what placement may use of each."""

    def __init__(self, reserve_mb: int) -> None:
        self.reserve_mb = reserve_mb
        self.gpus: list[GpuInfo] = []

    def discover(self, environ: dict[str, str] | os._Environ[str]) -> list[GpuInfo]:
        self.gpus = discover_gpus(environ)
        return self.gpus

    @property
    def simulated(self) -> bool:
        return any(gpu.simulated for gpu in self.gpus)

    def capacities(self) -> list[GpuCapacity]:
        return [GpuCapacity(gpu.index, gpu.total_bytes / MIB, self.reserve_mb) for gpu in self.gpus]

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
    """Current memory use and utilization of real cards (simulated ones are returned as they are)."""
    if not cards or all(card.simulated for card in cards):
        return cards
    fresh = {card.index: card for card in nvml_gpus()}
    return [fresh.get(card.index, card) if not card.simulated else card for card in cards]
