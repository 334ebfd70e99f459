"""Which cards the daemon uses, and the string each worker is pinned with (pure).

`select_cards(inventory, cuda_visible_devices, cuda_device_order, gpus)`:

- `inventory`: what NVML lists (or the simulated cards), in NVML's order, which is PCI bus order (the
  order of `nvidia-smi`). A GPU in MIG mode is listed as its MIG instances (`MIG-…`), each a card of
  its own; any other GPU as itself (`GPU-…`).
- `cuda_visible_devices`: the one the daemon inherited (None: unset, every card). Its entries are
  indices, `GPU-…` or `MIG-…` UUIDs (or a unique prefix of one, as CUDA takes). CUDA's own rules
  hold: an empty value hides every card, and an entry that names no card (or a negative index) hides
  itself and every entry after it. Indices are read in PCI bus order: the order CUDA uses with
  `CUDA_DEVICE_ORDER=PCI_BUS_ID`; CUDA's default (fastest first) may differ on a machine of mixed
  cards, which gives a note telling to use UUIDs.
- `gpus`: the `gpus` setting: indices into the cards left allowed (as a CUDA program that inherited
  the same `CUDA_VISIBLE_DEVICES` numbers them) or UUIDs (a GPU's UUID names all its MIG instances).
  One that names no allowed card is a `ConfigError`.

The result: the chosen cards numbered 0, 1, ... (the daemon's index: worker ids `gpu1-w0`, the
ledger, the status), each keeping its UUID, which is what its workers get as `CUDA_VISIBLE_DEVICES`
(with `CUDA_DEVICE_ORDER=PCI_BUS_ID`), so the card in the ledger is the card the worker uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from scheduler.errors import ConfigError


class Card(Protocol):
    """What selection needs of one card (`scheduler.core.devices.GpuInfo` is one)."""

    name: str
    uuid: str  # GPU-… or MIG-…: the worker's pin
    gpu_uuid: str  # the physical GPU's UUID (the card's own for a whole GPU)


CardT = TypeVar("CardT", bound=Card)


@dataclass
class Selection(Generic[CardT]):
    cards: list[CardT]  # the chosen cards, in order: the daemon's index is the position
    notes: list[str] = field(default_factory=list)  # what the operator should read in the log


def select_cards(
    inventory: Sequence[CardT],
    cuda_visible_devices: str | None,
    cuda_device_order: str | None,
    gpus: Sequence[int | str],
) -> Selection[CardT]:
    allowed, notes = _allowed(inventory, cuda_visible_devices, cuda_device_order)
    if not gpus:
        return Selection(allowed, notes)
    chosen: list[CardT] = []
    for entry in gpus:
        for card in _named_by_setting(entry, allowed, cuda_visible_devices):
            if card not in chosen:
                chosen.append(card)
    return Selection(chosen, notes)


def _physical_gpus(inventory: Sequence[CardT]) -> list[str]:
    """The GPUs' UUIDs in inventory order (a GPU in MIG mode once)."""
    seen: list[str] = []
    for card in inventory:
        if card.gpu_uuid not in seen:
            seen.append(card.gpu_uuid)
    return seen


def _allowed(
    inventory: Sequence[CardT], visible: str | None, order: str | None
) -> tuple[list[CardT], list[str]]:
    if visible is None:
        return list(inventory), []
    notes: list[str] = []
    if not visible.strip():
        return [], ["CUDA_VISIBLE_DEVICES is empty: no GPU is used"]
    gpus = _physical_gpus(inventory)
    allowed: list[CardT] = []
    used_index = False
    for raw in visible.split(","):
        entry = raw.strip()
        named = _named_by_env(entry, inventory, gpus)
        if named is None:
            notes.append(
                f"CUDA_VISIBLE_DEVICES={visible!r}: {entry!r} names no card here; as in CUDA, it and "
                "the entries after it are left out"
            )
            break
        used_index = used_index or entry.lstrip("-").isdigit()
        allowed += [card for card in named if card not in allowed]
    mixed = len({card.name for card in inventory}) > 1
    if used_index and mixed and (order or "").strip().upper() != "PCI_BUS_ID":
        notes.append(
            "CUDA_VISIBLE_DEVICES gives indices on a machine of different cards: they are read in PCI bus "
            "order (nvidia-smi's), which CUDA's default order may not follow; name the cards by UUID "
            "(nvidia-smi -L) or set CUDA_DEVICE_ORDER=PCI_BUS_ID"
        )
    return allowed, notes


def _named_by_env(entry: str, inventory: Sequence[CardT], gpus: list[str]) -> list[CardT] | None:
    """The cards a CUDA_VISIBLE_DEVICES entry names, or None when it names none."""
    if entry.lstrip("-").isdigit():
        index = int(entry)
        if not 0 <= index < len(gpus):
            return None
        return [card for card in inventory if card.gpu_uuid == gpus[index]]
    return _by_uuid(entry, inventory)


def _by_uuid(entry: str, cards: Sequence[CardT]) -> list[CardT] | None:
    """`MIG-…` names one instance; `GPU-…` a whole GPU (every MIG instance of it); a unique prefix works."""
    if entry.upper().startswith("MIG-"):
        matches = [card for card in cards if card.uuid.upper().startswith(entry.upper())]
        return matches if len(matches) == 1 else None
    if entry.upper().startswith("GPU-"):
        gpu_ids = {card.gpu_uuid for card in cards if card.gpu_uuid.upper().startswith(entry.upper())}
        if len(gpu_ids) != 1:
            return None
        return [card for card in cards if card.gpu_uuid in gpu_ids]
    return None


def _named_by_setting(entry: int | str, allowed: list[CardT], visible: str | None) -> list[CardT]:
    text = str(entry).strip()
    where = "the cards CUDA_VISIBLE_DEVICES allows" if visible is not None else "the cards found"
    if text.isdigit():
        if int(text) >= len(allowed):
            raise ConfigError(
                f"gpus: index {text} names no card: {where} are {_listing(allowed)} (indices from 0)"
            )
        return [allowed[int(text)]]
    named = _by_uuid(text, allowed)
    if not named:
        raise ConfigError(f"gpus: {text!r} names no card among {where}: {_listing(allowed)}")
    return named


def _listing(cards: Sequence[Card]) -> str:
    if not cards:
        return "none"
    return ", ".join(f"{index}: {card.uuid} ({card.name})" for index, card in enumerate(cards))
