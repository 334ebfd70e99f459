"""One card as the daemon knows it (`GpuInfo`), and the simulated cards of
`MODELSCHED_SIMULATED_GPUS=2x24GiB` (or `1x80GiB,1x16GiB`): workers on them run on the CPU while the
VRAM ledger behaves as on real ones; each has a made-up UUID, so pinning and selection work the same."""

from __future__ import annotations

import re
import uuid

import msgspec

MIB = 1024 * 1024
_UNITS = {"": 1, "b": 1, "kib": 1024, "kb": 1000, "mib": MIB, "mb": 1000**2, "gib": 1024**3, "gb": 1000**3}
_SIMULATED_NAMESPACE = uuid.UUID("6d6f6465-6c73-6368-6564-73696d677075")


class GpuInfo(msgspec.Struct, kw_only=True):
    """`index`: the daemon's number for the card (its place among the cards it uses); `uuid`: what
    its workers are pinned with (`GPU-…`, or `MIG-…` for a MIG instance); `gpu_uuid`: the physical
    GPU's; `nvml_index`: the GPU's index in NVML (nvidia-smi)."""

    index: int
    name: str
    total_bytes: int
    used_bytes: int = 0
    free_bytes: int = 0
    utilization_pct: float | None = None
    simulated: bool = False
    uuid: str = ""
    gpu_uuid: str = ""
    nvml_index: int | None = None
    pci_bus_id: str = ""


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read a memory size from {text!r} (try 24GiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def simulated_uuid(index: int) -> str:
    """A fixed, made-up UUID for simulated card `index`."""
    return f"GPU-{uuid.uuid5(_SIMULATED_NAMESPACE, str(index))}"


def parse_simulated(spec: str) -> list[GpuInfo]:
    """`2x24GiB` or `1x80GiB,1x16GiB` -> simulated cards, indexed in order."""
    cards: list[GpuInfo] = []
    for part in filter(None, (piece.strip() for piece in spec.split(","))):
        count_text, sep, size_text = part.partition("x")
        if not sep or not count_text.strip().isdigit():
            raise ValueError(f"MODELSCHED_SIMULATED_GPUS: {part!r} is not COUNTxSIZE (e.g. 2x24GiB)")
        size = parse_size(size_text)
        for _ in range(int(count_text)):
            index = len(cards)
            cards.append(
                GpuInfo(
                    index=index,
                    name=f"Simulated GPU {size // MIB} MiB",
                    total_bytes=size,
                    free_bytes=size,
                    simulated=True,
                    uuid=simulated_uuid(index),
                    gpu_uuid=simulated_uuid(index),
                    nvml_index=index,
                    pci_bus_id=f"00000000:{index + 1:02X}:00.0",
                )
            )
    return cards
